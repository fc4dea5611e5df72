"""Privacy losses and how they compose in the ledger.

The ledger uses additive (basic sequential) composition in the dataset's own units: PURE_DP adds epsilons,
APPROXIMATE_DP adds epsilons and deltas, ZCDP adds rhos (and the deltas of private partition selection).
This is exactly what OpenDP's fully adaptive compositor does for these measures, and a query's cost is its
measurement's privacy map at the dataset's d_in, so the ledger's sum is an upper bound on the true loss.

Binary floats cannot hold most sums exactly, so the arithmetic is directed: a sum (what was spent) is the
exact sum rounded UP, a difference (what remains) is rounded DOWN, and comparisons with a cap are exact
(fractions.Fraction holds every float exactly). A spend that would pass a cap by one ulp is refused, and
rounding never makes the ledger report less spent than was.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

from privmesh.dpgateway.schema import Accounting


@dataclass(frozen=True)
class Loss:
    epsilon: float = 0.0
    delta: float = 0.0
    rho: float = 0.0

    def __add__(self, other: Loss) -> Loss:
        """The component-wise sum, rounded up."""
        return total((self, other))

    def minus(self, other: Loss) -> Loss:
        """Component-wise difference rounded down, never below 0 (what remains of a cap)."""
        return Loss(*(max(0.0, _down(Fraction(a) - Fraction(b))) for a, b in zip(_parts(self), _parts(other),
                                                                                   strict=True)))

    def within(self, cap: Loss) -> bool:
        """Whether every component is at most the cap's, compared exactly (a cap is never exceeded)."""
        return all(Fraction(a) <= Fraction(b) for a, b in zip(_parts(self), _parts(cap), strict=True))

    def smaller(self, other: Loss) -> Loss:
        return Loss(min(self.epsilon, other.epsilon), min(self.delta, other.delta), min(self.rho, other.rho))

    def primary(self, accounting: Accounting) -> float:
        """The component the noise scales are solved for (epsilon, or rho for zCDP)."""
        return self.rho if accounting is Accounting.ZCDP else self.epsilon


def _parts(loss: Loss) -> tuple[float, float, float]:
    return loss.epsilon, loss.delta, loss.rho


def _up(exact: Fraction) -> float:
    """The smallest float >= exact."""
    nearest = float(exact)
    return math.nextafter(nearest, math.inf) if Fraction(nearest) < exact else nearest


def _down(exact: Fraction) -> float:
    """The largest float <= exact."""
    nearest = float(exact)
    return math.nextafter(nearest, -math.inf) if Fraction(nearest) > exact else nearest


Exact = tuple[Fraction, Fraction, Fraction]  # (epsilon, delta, rho) without rounding


def exact(losses: Iterable[Loss]) -> Exact:
    """The exact component-wise sum of `losses`."""
    sums = (Fraction(0), Fraction(0), Fraction(0))
    for loss in losses:
        sums = (sums[0] + Fraction(loss.epsilon), sums[1] + Fraction(loss.delta), sums[2] + Fraction(loss.rho))
    return sums


def rounded_up(value: Exact) -> Loss:
    return Loss(*(_up(v) for v in value))


def total(losses: Iterable[Loss]) -> Loss:
    """The exact component-wise sum of `losses`, each component rounded up."""
    return rounded_up(exact(losses))


def fits(used: Exact, cost: Loss, cap: Loss) -> bool:
    """Whether used + cost is at most the cap in every component, exactly."""
    return all(u + Fraction(c) <= Fraction(k) for u, c, k in zip(used, _parts(cost), _parts(cap), strict=True))


def left(cap: Loss, used: Exact) -> Loss:
    """What remains of `cap` once `used` is spent, rounded down, never below 0."""
    return Loss(*(max(0.0, _down(Fraction(k) - u)) for k, u in zip(_parts(cap), used, strict=True)))


def unit_problems(loss: Loss, accounting: Accounting, *, for_cap: bool) -> list[tuple[str, str]]:
    """(field, why) for each component that does not fit the accounting's units.

    A request must have its primary component > 0; a cap may be 0 (nothing to spend).
    """
    problems: list[tuple[str, str]] = []
    values = {"epsilon": loss.epsilon, "delta": loss.delta, "rho": loss.rho}
    for name, value in values.items():
        if not math.isfinite(value) or value < 0:
            problems.append((name, "must be finite and not negative"))
    if problems:
        return problems
    primary, other = ("rho", "epsilon") if accounting is Accounting.ZCDP else ("epsilon", "rho")
    if values[other] != 0:
        problems.append((other, f"must be 0: the dataset's accounting is {accounting.value}"))
    if not for_cap and values[primary] <= 0:
        problems.append((primary, "must be > 0"))
    if accounting is Accounting.PURE_DP and loss.delta != 0:
        problems.append(("delta", "must be 0 under PURE_DP"))
    if loss.delta >= 1 and not for_cap:
        problems.append(("delta", "must be < 1"))
    return problems
