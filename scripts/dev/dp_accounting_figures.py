"""Prints Google dp-accounting's epsilons for the federation accountant's cases (tests/fl/data/
dp_accounting_figures.json). dp-accounting cannot share the project's pins (attrs < 24), so run this in an
environment of its own:

    python3.10 -m venv /tmp/dpacc && /tmp/dpacc/bin/pip install dp-accounting==0.6.0
    /tmp/dpacc/bin/python scripts/dev/dp_accounting_figures.py > tests/fl/data/dp_accounting_figures.json

Each case: m of n participants sampled without replacement per round (replace-one neighbours), Flower's noise
multiplier z (noise over the clipping norm, so z / 2 over the replace-one sensitivity), `rounds` rounds.
"""

from __future__ import annotations

import json
from importlib.metadata import version

import dp_accounting
from dp_accounting.rdp import RdpAccountant

ORDERS = list(range(2, 257))
CASES = [(m, n, z, rounds, delta) for m, n in ((3, 3), (2, 3), (5, 10), (10, 100))
         for z in (1.0, 2.0) for rounds, delta in ((1, 1e-3), (50, 1e-5))]


def figure(m: int, n: int, z: float, rounds: int, delta: float) -> float:
    accountant = RdpAccountant(ORDERS, dp_accounting.NeighboringRelation.REPLACE_ONE)
    gaussian = dp_accounting.GaussianDpEvent(z / 2)
    event = gaussian if m == n else dp_accounting.SampledWithoutReplacementDpEvent(n, m, gaussian)
    accountant.compose(dp_accounting.SelfComposedDpEvent(event, rounds))
    return float(accountant.get_epsilon(delta))


if __name__ == "__main__":
    print(json.dumps({"library": f"dp-accounting {version('dp-accounting')}", "orders": "2..256",
                      "cases": [{"sample": m, "population": n, "noise_multiplier": z, "rounds": r, "delta": d,
                                 "epsilon": figure(m, n, z, r, d)} for m, n, z, r, d in CASES]}, indent=1))
