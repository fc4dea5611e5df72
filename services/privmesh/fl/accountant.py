"""The Rényi-DP accountant for the (sub)sampled Gaussian mechanism, converted to (epsilon, delta).

Each round releases the noised mean of the sampled participants' clipped updates: a Gaussian mechanism with
noise multiplier sigma, applied to a fraction q of the participants. Its RDP at integer order a is
log(A_a) / (a - 1) with A_a = sum_k C(a, k) (1 - q)^(a - k) q^k exp((k^2 - k) / (2 sigma^2)) (Mironov, Talwar,
Zhang 2019), which is a / (2 sigma^2) for q = 1; rounds compose by adding RDP, and the conversion to
(epsilon, delta) is Balle et al. 2020's. Written by hand (about 30 lines) because Google's dp-accounting pins
attrs < 24, which conflicts with the project's lock, and Flower ships no accountant.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import gammaln, logsumexp

ORDERS = tuple(range(2, 257))


def _log_a(q: float, sigma: float, order: int) -> float:
    if q >= 1.0:
        return order * (order - 1) / (2 * sigma**2)
    k = np.arange(order + 1)
    log_binom = gammaln(order + 1) - gammaln(k + 1) - gammaln(order - k + 1)
    terms = log_binom + (order - k) * math.log1p(-q) + k * math.log(q) + (k * k - k) / (2 * sigma**2)
    return float(logsumexp(terms))


def rdp(q: float, sigma: float, steps: int) -> list[float]:
    """The RDP of `steps` rounds at each of ORDERS."""
    if steps == 0:
        return [0.0 for _ in ORDERS]
    return [steps * _log_a(q, sigma, a) / (a - 1) for a in ORDERS]


def epsilon(q: float, sigma: float, steps: int, delta: float) -> float:
    """The smallest epsilon over ORDERS for which `steps` rounds are (epsilon, delta)-DP."""
    if steps == 0:
        return 0.0
    best = math.inf
    for a, r in zip(ORDERS, rdp(q, sigma, steps), strict=True):
        eps = r + math.log1p(-1 / a) - (math.log(delta) + math.log(a)) / (a - 1)
        best = min(best, eps)
    return max(best, 0.0)
