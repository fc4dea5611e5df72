"""The typed request/response protocol between the gateway and its Spark engine process: one JSON object
per line on the worker's stdin and stdout (stdlib only: both the gateway's venv and the Tumult venv import
it). Budgets travel as exact rationals "p/q" so that no float rounding sits between the ledger's charge and
what Tumult spends."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Any

VERSION = 1
MAX_LINE = 64 * 1024 * 1024  # a response holds at most 10,000 estimates; refuse anything far beyond


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    type: str  # schema.ColumnType value
    nullable: bool
    fill: Any = None  # the declared fill_value (None: none)


@dataclass(frozen=True)
class FilterSpec:
    column: str
    operator: str  # plan.Operator value
    values: list[Any] = field(default_factory=list)  # DATE values as "YYYY-MM-DD"


@dataclass(frozen=True)
class ComponentSpec:
    """One noisy value per group: a Tumult query with its own share of the budget."""

    name: str  # the output column (the gateway's component name)
    role: str  # "count", "sum", "sum_of_squares", "quantile" or "keys" (private group keys, ApproxDP only)
    column: str  # "" counts rows
    lower: float = 0.0  # the bounds a sum clamps to (of the squares, for a sum_of_squares)
    upper: float = 0.0
    integer: bool = True
    quantile: float = 0.0  # the probability of a "quantile" component
    square_of: list[float] = field(default_factory=list)  # sum_of_squares: the column's bounds, clamped first
    epsilon: str = "0"  # exact rationals "p/q"
    delta: str = "0"
    rho: str = "0"


@dataclass(frozen=True)
class ReleaseRequest:
    """Run (or, with evaluate false, only describe the noise of) the components of one query."""

    uri: str
    format: str  # "PARQUET" or "CSV"
    columns: list[ColumnSpec]
    unit_column: str
    max_contributions: int
    accounting: str  # schema.Accounting value
    filters: list[FilterSpec]
    group_by: list[str]
    keys: list[list[Any]]  # DECLARED / PUBLIC keys; empty with private keys (a "keys" component finds them)
    components: list[ComponentSpec]
    evaluate: bool = True
    delimiter: str = ","
    max_groups: int = 0  # groups one unit may touch (0: max_contributions)


@dataclass(frozen=True)
class ComponentResult:
    name: str
    mechanism: str  # Tumult's: LAPLACE, GEOMETRIC, GAUSSIAN, DISCRETE_GAUSSIAN
    scale: float  # standard deviation for Gaussian noise, Laplace scale b otherwise


@dataclass(frozen=True)
class ReleaseResponse:
    """The released rows (group keys then component values), or an error class that never quotes data."""

    ok: bool
    rows: list[dict[str, Any]] = field(default_factory=list)
    components: list[ComponentResult] = field(default_factory=list)
    error: str = ""  # "SOURCE_UNAVAILABLE" (nothing read), "RELEASE_FAILED" or "INVALID"
    data_read: bool = False


def rational(value: float | Fraction) -> str:
    """The exact value as "p/q" (every finite float is a dyadic rational, so nothing is rounded)."""
    exact = Fraction(value)
    return f"{exact.numerator}/{exact.denominator}"


def encode(message: ReleaseRequest | ReleaseResponse) -> bytes:
    return (json.dumps({"v": VERSION, **asdict(message)}, separators=(",", ":")) + "\n").encode()


def decode_request(line: bytes) -> ReleaseRequest:
    data = json.loads(line)
    if data.pop("v", None) != VERSION:
        raise ValueError("protocol version mismatch")
    data["columns"] = [ColumnSpec(**c) for c in data["columns"]]
    data["filters"] = [FilterSpec(**f) for f in data["filters"]]
    data["components"] = [ComponentSpec(**c) for c in data["components"]]
    return ReleaseRequest(**data)


def decode_response(line: bytes) -> ReleaseResponse:
    data = json.loads(line)
    if data.pop("v", None) != VERSION:
        raise ValueError("protocol version mismatch")
    data["components"] = [ComponentResult(**c) for c in data["components"]]
    return ReleaseResponse(**data)
