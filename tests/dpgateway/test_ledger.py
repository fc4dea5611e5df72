"""The ledger's arithmetic at the boundary: spends are summed exactly and rounded up, what remains is rounded
down, so no binary-float rounding lets a spend pass a cap (not even by one ulp) or lets the books drift low."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import pytest

from privmesh.dpgateway.ledger import BudgetExceeded, Ledger
from privmesh.dpgateway.loss import Loss
from privmesh.runtime.db import Database


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(Database(f"sqlite:///{tmp_path / 'ledger.db'}"))


def spend(ledger: Ledger, epsilon: float, name: str) -> Loss:
    reservation = ledger.reserve("ds", "ana", Loss(epsilon=epsilon), name, "ana")
    return ledger.commit(reservation, f"releases/{name}", "uid", None)


def test_a_spend_over_the_cap_by_one_ulp_is_refused(ledger: Ledger) -> None:
    ledger.set_budget("ds", "ana", Loss(epsilon=1.0), "", "owner")
    spend(ledger, 0.1, "first")
    # In binary floats 0.1 + 0.9 == 1.0, but the exact sum of these two floats is 1 + 2.8e-17: over the cap.
    assert 0.1 + 0.9 == 1.0 and Fraction(0.1) + Fraction(0.9) > 1
    with pytest.raises(BudgetExceeded):
        ledger.reserve("ds", "ana", Loss(epsilon=0.9), "second", "ana")
    assert ledger.get_budget("ds", "ana").spent == Loss(epsilon=0.1)  # type: ignore[union-attr]
    # What remains is rounded down (below the exact 1 - 0.1), and spending exactly that fits.
    left = ledger.remaining("ds", "ana").epsilon
    assert Fraction(left) <= 1 - Fraction(0.1) and left == math.nextafter(0.9, 0)
    last = spend(ledger, left, "rest").epsilon  # what is left now is the exact leftover, rounded down
    assert Fraction(last) <= 1 - Fraction(0.1) - Fraction(left) < Fraction(math.nextafter(last, 1))
    with pytest.raises(BudgetExceeded):  # one ulp more than what remains does not fit
        ledger.reserve("ds", "ana", Loss(epsilon=math.nextafter(last, 1)), "more", "ana")
    spend(ledger, last, "all")
    assert ledger.get_budget("ds", "ana").spent.epsilon == 1.0  # type: ignore[union-attr]  # never above the cap


def test_spending_never_drifts_below_the_exact_sum(ledger: Ledger) -> None:
    ledger.set_budget("ds", "ana", Loss(epsilon=2.0), "", "owner")
    for i in range(10):
        spend(ledger, 0.1, f"q{i}")
    spent = ledger.get_budget("ds", "ana").spent.epsilon  # type: ignore[union-attr]
    assert Fraction(spent) >= 10 * Fraction(0.1) and sum([0.1] * 10) < 10 * Fraction(0.1)
