"""Synthetic patient records for the scenario: the same seed always gives the same hospitals' data.

Every step draws from here so that the records tokenized in step 1 are the ones queried in step 2 and
trained on in step 3. The risk label follows a known logistic model of the features, so a trained model
can be checked against it. Synthetic test data only: `random.Random` is the right tool, not a secret source.
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

HOSPITALS = ("st-mary", "general", "riverside")
DIAGNOSES = ("healthy", "hypertension", "diabetes", "asthma", "cardiac")
FIRST_NAMES = ("Ada", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hugo", "Iris", "Jonas", "Kemi", "Liam",
               "Maya", "Noor", "Omar", "Priya", "Quinn", "Rosa", "Sami", "Tara")
LAST_NAMES = ("Okafor", "Schmidt", "Tanaka", "Garcia", "Novak", "Haddad", "Kim", "Rossi", "Silva", "Dubois",
              "Larsen", "Mehta", "O'Brien", "Ivanova", "Nguyen", "Cohen")
MAIL_DOMAINS = ("example.org", "mail.example.com", "clinic.example.net")

# The features a risk model uses, each scaled into [-1, 1] by its declared range (never by the data).
FEATURE_RANGES: dict[str, tuple[float, float]] = {
    "age": (18.0, 90.0),
    "bmi": (15.0, 45.0),
    "systolic_bp": (90.0, 200.0),
    "cholesterol": (120.0, 320.0),
    "glucose": (60.0, 250.0),
    "smoker": (0.0, 1.0),
}
FEATURES = tuple(FEATURE_RANGES)
# The true model behind the synthetic label (on the scaled features).
TRUE_WEIGHTS = (1.2, 0.6, 0.9, 0.5, 1.1, 0.8)
TRUE_BIAS = -0.4


@dataclass(frozen=True)
class Patient:
    patient_id: str
    hospital: str
    name: str
    ssn: str
    email: str
    phone: str
    card_number: str
    age: int
    sex: str
    zip3: str
    diagnosis: str
    bmi: float
    systolic_bp: float
    cholesterol: float
    glucose: float
    smoker: int
    high_risk: int


def _luhn_complete(prefix: str) -> str:
    """Appends the Luhn check digit, so synthetic card numbers look like real ones to validators."""
    total = 0
    for index, digit in enumerate(reversed(prefix)):
        value = int(digit)
        if index % 2 == 0:
            value *= 2
            value -= 9 if value > 9 else 0
        total += value
    return prefix + str((10 - total % 10) % 10)


def scaled_features(patient: Patient) -> list[float]:
    """The model's input for one patient: each feature mapped from its declared range onto [-1, 1]."""
    out = []
    for name, (low, high) in FEATURE_RANGES.items():
        value = min(max(float(getattr(patient, name)), low), high)
        out.append(2.0 * (value - low) / (high - low) - 1.0)
    return out


def _draw(rng: random.Random, index: int) -> Patient:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    age = rng.randint(18, 90)
    smoker = int(rng.random() < 0.22)
    bmi = round(min(max(rng.gauss(27 + (age - 50) * 0.03, 4.5), 15.0), 45.0), 1)
    systolic = round(min(max(rng.gauss(118 + (age - 18) * 0.45 + smoker * 6, 14), 90.0), 200.0), 0)
    cholesterol = round(min(max(rng.gauss(190 + (age - 18) * 0.5, 30), 120.0), 320.0), 0)
    glucose = round(min(max(rng.gauss(95 + max(bmi - 25, 0) * 2.2, 22), 60.0), 250.0), 0)
    draft = Patient(
        patient_id=f"P{index:06d}", hospital=HOSPITALS[index % len(HOSPITALS)], name=f"{first} {last}",
        ssn=f"{rng.randint(100, 899):03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}",
        email=f"{first.lower()}.{last.lower().replace(chr(39), '')}{index}@{rng.choice(MAIL_DOMAINS)}",
        phone=f"+1-{rng.randint(201, 989)}-{rng.randint(200, 999)}-{rng.randint(0, 9999):04d}",
        card_number=_luhn_complete("4" + "".join(str(rng.randint(0, 9)) for _ in range(14))),
        age=age, sex=rng.choice(("F", "M")), zip3=f"{rng.randint(100, 999)}",
        diagnosis=rng.choice(DIAGNOSES), bmi=bmi, systolic_bp=systolic, cholesterol=cholesterol,
        glucose=glucose, smoker=smoker, high_risk=0)
    logit = TRUE_BIAS + sum(w * x for w, x in zip(TRUE_WEIGHTS, scaled_features(draft), strict=True))
    label = int(rng.random() < 1.0 / (1.0 + math.exp(-logit)))
    return Patient(**{**asdict(draft), "high_risk": label})


def patients(count: int, seed: int = 2026) -> list[Patient]:
    """`count` synthetic patients, spread round-robin over HOSPITALS; deterministic for a seed."""
    rng = random.Random(seed)  # noqa: S311 - synthetic data, not a secret
    return [_draw(rng, index) for index in range(count)]


def columns() -> tuple[str, ...]:
    return tuple(f.name for f in fields(Patient))


def write_csv(path: Path, rows: Iterable[Patient], selected: Sequence[str] | None = None) -> Path:
    """Writes the chosen columns (all by default) with a header row."""
    names = list(selected or columns())
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(names)
        for row in rows:
            writer.writerow([getattr(row, name) for name in names])
    return path
