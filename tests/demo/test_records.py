"""The scenario's synthetic records: deterministic, well-formed, and labelled by the declared model."""

from __future__ import annotations

import math
import re

from privmesh.demo.records import FEATURES, TRUE_BIAS, TRUE_WEIGHTS, patients, scaled_features


def _luhn_ok(number: str) -> bool:
    digits = [int(d) for d in reversed(number)]
    total = sum(digits[0::2]) + sum(sum(divmod(2 * d, 10)) for d in digits[1::2])
    return total % 10 == 0


def test_same_seed_same_records_and_another_seed_differs() -> None:
    assert patients(50, seed=7) == patients(50, seed=7)
    assert patients(50, seed=7) != patients(50, seed=8)


def test_identifiers_have_their_real_shapes() -> None:
    for p in patients(200):
        assert re.fullmatch(r"\d{3}-\d{2}-\d{4}", p.ssn)
        assert re.fullmatch(r"\d{16}", p.card_number) and _luhn_ok(p.card_number)
        assert re.fullmatch(r"[a-z.]+\d+@[a-z.]+", p.email)
        assert all(-1.0 <= x <= 1.0 for x in scaled_features(p))
        assert len(scaled_features(p)) == len(FEATURES)


def test_labels_follow_the_declared_model() -> None:
    rows = patients(4000)
    def probability(p: object) -> float:
        logit = TRUE_BIAS + sum(w * x for w, x in zip(TRUE_WEIGHTS, scaled_features(p), strict=True))  # type: ignore[arg-type]
        return 1 / (1 + math.exp(-logit))

    expected = sum(probability(p) for p in rows)
    observed = sum(p.high_risk for p in rows)
    assert abs(observed - expected) < 4 * math.sqrt(len(rows) * 0.25)
