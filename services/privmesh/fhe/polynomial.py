"""Polynomial approximations of activations (sigmoid, ReLU, tanh) on a declared interval.

numpy's Chebyshev module does the fitting (interpolation at Chebyshev nodes, near-minimax); this module only
adds the two conventions the service needs: OpenFHE's Chebyshev-series convention for publishing (c0 halved,
as EvalChebyshevSeries takes it) and power-basis coefficients in t = the interval mapped onto [-1, 1], which
the circuit evaluates with the evaluator's primitive operations.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.polynomial import chebyshev
from numpy.typing import NDArray

FUNCTIONS: dict[str, Callable[[NDArray[np.float64]], NDArray[np.float64]]] = {
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "relu": lambda x: np.maximum(x, 0.0),
    "tanh": np.tanh,
}
SUPPORTED_DEGREES = (2, 3, 4, 5, 6, 7)


@dataclass(frozen=True)
class Approximation:
    """p(x) ~ function(x) for x in [low, high]; `chebyshev` holds OpenFHE-convention coefficients."""

    function: str
    degree: int
    low: float
    high: float
    chebyshev: tuple[float, ...]
    max_abs_error: float

    @property
    def center(self) -> float:
        return (self.low + self.high) / 2

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def power_coefficients(self) -> tuple[float, ...]:
        """Coefficients of p in t = (x - center) / half_width, lowest order first (what the circuit evaluates)."""
        standard = np.array(self.chebyshev, dtype=float)
        standard[0] /= 2.0  # OpenFHE's c0/2 convention back to numpy's
        return tuple(float(c) for c in chebyshev.cheb2poly(standard))

    def __call__(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        """The polynomial (not the function it approximates): the model's declared activation."""
        t = (np.asarray(x, dtype=np.float64) - self.center) / self.half_width
        return np.asarray(np.polynomial.polynomial.polyval(t, self.power_coefficients()), dtype=np.float64)


def fit(function: str, degree: int, low: float, high: float) -> Approximation:
    """Chebyshev interpolation of `function` on [low, high]."""
    if function not in FUNCTIONS:
        raise ValueError(f"unknown function {function!r} (one of {', '.join(FUNCTIONS)})")
    if degree not in SUPPORTED_DEGREES:
        raise ValueError(f"degree must be one of {SUPPORTED_DEGREES}")
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError("the interval must be finite with low < high")
    f = FUNCTIONS[function]
    center, half = (low + high) / 2, (high - low) / 2
    # numpy's stub types func as returning a scalar; it is called once with the array of nodes, as here
    standard = chebyshev.chebinterpolate(lambda t: f(center + half * t), degree)  # type: ignore[type-var]
    published = standard.copy()
    published[0] *= 2.0
    grid = np.linspace(low, high, 4001, dtype=np.float64)
    approx = Approximation(function, degree, low, high, tuple(float(c) for c in published), 0.0)
    error = float(np.max(np.abs(approx(grid) - f(grid))))
    return Approximation(function, degree, low, high, approx.chebyshev, error)


def depth_of_degree(degree: int) -> int:
    """Multiplicative depth of evaluating a degree-`degree` polynomial in t (scalar products included)."""
    return 0 if degree == 0 else math.ceil(math.log2(degree + 1))
