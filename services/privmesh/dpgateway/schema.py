"""What a data owner declares about a dataset: its source, columns (types, bounds, categories), privacy unit
and contribution bounds, and the accounting of its ledger. Everything here is public by construction: none
of it is ever derived from the data, so the gateway may use it freely to plan queries and word refusals."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import date
from enum import Enum

from privmesh.runtime.errors import Violations

DATASET_ID = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
COLUMN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
MAX_COLUMNS = 1000
MAX_CATEGORIES = 10_000
MAX_STRING_BYTES = 256
DEFAULT_MAX_ROWS = 10_000_000
MAX_ROWS_LIMIT = 2**32 - 1  # OpenDP's max_length margin is a u32
MAX_CONTRIBUTIONS = 10_000

Scalar = bool | int | float | str | None  # DATE values travel as "YYYY-MM-DD" strings


class ColumnType(Enum):
    BOOL = "BOOL"
    INT64 = "INT64"
    FLOAT64 = "FLOAT64"
    STRING = "STRING"
    DATE = "DATE"

    @property
    def numeric(self) -> bool:
        return self in (ColumnType.INT64, ColumnType.FLOAT64)


class Accounting(Enum):
    PURE_DP = "PURE_DP"
    APPROXIMATE_DP = "APPROXIMATE_DP"
    ZCDP = "ZCDP"


class Engine(Enum):
    """What executes a dataset's queries: OpenDP on Polars in the gateway, or Tumult Analytics on Spark."""

    POLARS = "POLARS"
    SPARK = "SPARK"


class DataFormat(Enum):
    CSV = "CSV"
    PARQUET = "PARQUET"


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType
    nullable: bool = False
    bounds: tuple[float, float] | None = None
    categories: tuple[Scalar, ...] = ()
    fill_value: Scalar = None  # None: no fill value declared
    description: str = ""


@dataclass(frozen=True)
class Source:
    uri: str
    format: DataFormat
    delimiter: str = ","
    headerless: bool = False


@dataclass(frozen=True)
class DatasetSpec:
    dataset_id: str
    source: Source
    columns: tuple[Column, ...]
    privacy_unit_column: str = ""
    max_contributions: int = 1
    max_groups: int = 0  # 0: max_contributions
    accounting: Accounting = Accounting.ZCDP
    max_rows: int = DEFAULT_MAX_ROWS
    description: str = ""
    engine: Engine = Engine.POLARS
    column_index: dict[str, Column] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.column_index.update({c.name: c for c in self.columns})

    def column(self, name: str) -> Column | None:
        return self.column_index.get(name)

    @property
    def groups_per_unit(self) -> int:
        return self.max_groups or self.max_contributions


def scalar_fits(value: Scalar, kind: ColumnType) -> bool:
    """Whether `value` is a valid, non-null value of a column of type `kind`."""
    if kind is ColumnType.BOOL:
        return isinstance(value, bool)
    if kind is ColumnType.INT64:
        return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63
    if kind is ColumnType.FLOAT64:
        return isinstance(value, float | int) and not isinstance(value, bool) and math.isfinite(value)
    if kind is ColumnType.STRING:
        return isinstance(value, str) and len(value.encode()) <= MAX_STRING_BYTES
    return isinstance(value, str) and parse_date(value) is not None  # ColumnType.DATE, the last member


def parse_date(text: str) -> date | None:
    try:
        return date.fromisoformat(text) if len(text) == 10 else None
    except ValueError:
        return None


def infer_format(uri: str) -> DataFormat | None:
    lowered = uri.lower().rstrip("/")
    if lowered.endswith(".csv"):
        return DataFormat.CSV
    if lowered.endswith((".parquet", ".pq")) or uri.endswith("/"):
        return DataFormat.PARQUET
    return None


def _check_column(v: Violations, path: str, column: Column, seen: set[str]) -> None:
    if not COLUMN_NAME.match(column.name):
        v.add(f"{path}.name", "must match [A-Za-z_][A-Za-z0-9_]* (at most 63 characters)")
    elif column.name in seen:
        v.add(f"{path}.name", "declared twice")
    seen.add(column.name)
    if column.bounds is not None:
        lower, upper = column.bounds
        if not column.type.numeric:
            v.add(f"{path}.bounds", "only INT64 and FLOAT64 columns have bounds")
        elif not (math.isfinite(lower) and math.isfinite(upper) and lower < upper):
            v.add(f"{path}.bounds", "must be finite with lower < upper")
        elif column.type is ColumnType.INT64 and not (lower.is_integer() and upper.is_integer()
                                                      and abs(lower) < 2**53 and abs(upper) < 2**53):
            v.add(f"{path}.bounds", "must be integers (below 2^53 in magnitude) for an INT64 column")
    if len(column.categories) > MAX_CATEGORIES:
        v.add(f"{path}.categories", f"at most {MAX_CATEGORIES}")
    elif column.categories:
        if column.type is ColumnType.FLOAT64:
            v.add(f"{path}.categories", "FLOAT64 columns cannot have categories")
        for i, value in enumerate(column.categories):
            if not scalar_fits(value, column.type):
                v.add(f"{path}.categories[{i}]", f"not a {column.type.value} value")
        if len(set(column.categories)) != len(column.categories):
            v.add(f"{path}.categories", "must be distinct")
    if column.fill_value is not None:
        if not scalar_fits(column.fill_value, column.type):
            v.add(f"{path}.fill_value", f"not a {column.type.value} value")
        elif column.bounds is not None and not column.bounds[0] <= float(column.fill_value) <= column.bounds[1]:
            v.add(f"{path}.fill_value", "must lie within bounds")


def validate_dataset(spec: DatasetSpec) -> None:
    """Raises INVALID_ARGUMENT (SCHEMA_INVALID) naming every bad field of the declaration."""
    v = Violations()
    v.check(bool(DATASET_ID.match(spec.dataset_id)), "dataset_id",
            "a lower-case letter, then lower-case letters, digits and '_' (1..63 characters)")
    uri = spec.source.uri
    v.check(bool(uri) and (uri.startswith(("/", "file:///")) or (uri.startswith("s3://") and "/" in uri[5:])),
            "dataset.source.uri", "an absolute path, a file:// URI or s3://bucket/key")
    if spec.source.format is DataFormat.CSV:
        v.check(len(spec.source.delimiter) == 1, "dataset.source.csv.delimiter", "one character")
    if not spec.columns:
        v.add("dataset.columns", "declare at least one column")
    v.check(len(spec.columns) <= MAX_COLUMNS, "dataset.columns", f"at most {MAX_COLUMNS}")
    seen: set[str] = set()
    for i, column in enumerate(spec.columns):
        _check_column(v, f"dataset.columns[{i}]", column, seen)
    if spec.privacy_unit_column:
        v.check(spec.privacy_unit_column in seen, "dataset.privacy_unit_column", "not a declared column")
        v.check(1 <= spec.max_contributions <= MAX_CONTRIBUTIONS, "dataset.max_contributions_per_unit",
                f"between 1 and {MAX_CONTRIBUTIONS}")
    else:
        v.check(spec.max_contributions == 1, "dataset.max_contributions_per_unit",
                "must be 1 when each row is its own privacy unit (no privacy_unit_column)")
    v.check(0 <= spec.max_groups <= max(spec.max_contributions, 1), "dataset.max_groups_per_unit",
            "at most max_contributions_per_unit")
    v.check(1 <= spec.max_rows <= MAX_ROWS_LIMIT, "dataset.max_rows", f"between 1 and {MAX_ROWS_LIMIT}")
    v.raise_if_any("SCHEMA_INVALID")

