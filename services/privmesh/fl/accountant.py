"""The privacy accountant of a federation's rounds: Rényi DP of the Gaussian mechanism on a sample drawn WITHOUT
replacement, as Flower samples (a fixed number m of the n participants each round), converted to (epsilon, delta).

Neighbouring federations differ in one participant's data (replace-one: the participants are known, their data
is what is protected). Flower's central-DP wrappers add Gaussian noise of standard deviation
noise_multiplier * clipping_norm / m to the mean of m updates clipped to clipping_norm; replacing one participant
moves that mean by up to 2 * clipping_norm / m, so the mechanism's noise multiplier (noise over sensitivity) is
noise_multiplier / 2. Each round is the subsampled Gaussian with q = m / n, bounded by Wang, Balle and
Kasiviswanathan 2019 (Subsampled Rényi DP, Theorem 9 with the Gaussian's RDP eps(j) = j / (2 sigma^2)):

    A_a = 1 + q^2 C(a, 2) min(4 (e^eps(2) - 1), 2 e^eps(2)) + sum_{j=3..a} q^j C(a, j) 2 e^((j - 1) eps(j))

and RDP log(A_a) / (a - 1) at integer order a (at most the unsampled Gaussian's a / (2 sigma^2)); rounds add;
the conversion to (epsilon, delta) is Balle et al. 2020's. Google's dp-accounting implements the same theorem's
tighter form (Theorem 27; equal figures on the tested cases) but cannot be installed beside the project's pins
(it requires attrs < 24), so this bound is written here (about 20 lines) and tested against that library's
figures (tests/fl/data/dp_accounting_figures.json, made by scripts/dev/dp_accounting_figures.py in an
environment of its own).

Poisson sampling (which the earlier Poisson-subsampled bound assumed) is not what Flower does: that figure was
no guarantee. SecAgg+ hides single updates from the coordinator, not the aggregate. With central noise the
coordinator adds it; with distributed noise (app/noise.py) each participant adds its share before masking, and a
round where only k of the m sampled participants completed carries noise multiplier z * sqrt(k / m): each round
is accounted with the noise that was actually added (`epsilon_of_rounds`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.special import gammaln, logsumexp

ORDERS = tuple(range(2, 257))


def _log_a(q: float, sigma: float, order: int) -> float:
    """log A_order of one round (sigma: noise over the replace-one sensitivity)."""
    if q >= 1.0:
        return (order - 1) * order / (2 * sigma**2)
    eps2 = 1 / sigma**2
    second = 2 * math.log(q) + math.log(order * (order - 1) / 2) + \
        min(math.log(4) + math.log(math.expm1(eps2)), eps2 + math.log(2))
    j = np.arange(3, order + 1)
    log_binom = gammaln(order + 1) - gammaln(j + 1) - gammaln(order - j + 1)
    rest = j * math.log(q) + log_binom + math.log(2) + (j - 1) * j / (2 * sigma**2)
    # Never above the unsampled Gaussian's (a sample is a post-processing choice): the bound is loose for large q.
    return min(float(logsumexp(np.concatenate(([0.0, second], rest)), axis=0)), (order - 1) * order / (2 * sigma**2))


def rdp(q: float, noise_multiplier: float, steps: int) -> list[float]:
    """The RDP of `steps` rounds at each of ORDERS, for Flower's `noise_multiplier` and sampling fraction q."""
    if steps == 0:
        return [0.0 for _ in ORDERS]
    sigma = noise_multiplier / 2  # replace-one sensitivity: two clipping norms
    return [steps * _log_a(q, sigma, a) / (a - 1) for a in ORDERS]


def epsilon(q: float, noise_multiplier: float, steps: int, delta: float) -> float:
    """The smallest epsilon over ORDERS for which `steps` rounds, each sampling a fraction q of the participants
    without replacement, are (epsilon, delta)-DP."""
    return epsilon_of_rounds(q, [noise_multiplier] * steps, delta)


def epsilon_of_rounds(q: float, noise_multipliers: Sequence[float], delta: float) -> float:
    """The same for rounds of different noise (distributed noise: the shares that reached each round's sum)."""
    if not noise_multipliers:
        return 0.0
    total = np.sum([rdp(q, z, 1) for z in noise_multipliers], axis=0)
    best = math.inf
    for a, r in zip(ORDERS, total, strict=True):
        eps = float(r) + math.log1p(-1 / a) - (math.log(delta) + math.log(a)) / (a - 1)
        best = min(best, eps)
    return max(best, 0.0)
