"""The query plan: what a structured query and the SQL subset both become, checked against the declared
schema before anything is spent. Every refusal names the request field to change and says nothing that
is derived from the data (only the request and the public declaration are consulted)."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import asdict, dataclass, replace
from enum import Enum

from privmesh.dpgateway.schema import COLUMN_NAME, Column, ColumnType, DatasetSpec, Scalar, scalar_fits
from privmesh.runtime.errors import InvalidArgument

MAX_FILTERS = 32
MAX_GROUP_BY = 8
MAX_AGGREGATES = 32
MAX_IN_VALUES = 1000
MAX_PUBLIC_KEYS = 10_000
MAX_QUANTILES = 10
MAX_CANDIDATES = 10_000
DEFAULT_CANDIDATES = 1001
MAX_ESTIMATES = 10_000


class Function(Enum):
    COUNT = "COUNT"
    SUM = "SUM"
    MEAN = "MEAN"
    VARIANCE = "VARIANCE"
    HISTOGRAM = "HISTOGRAM"
    QUANTILE = "QUANTILE"


class Operator(Enum):
    EQUAL = "EQUAL"
    NOT_EQUAL = "NOT_EQUAL"
    LESS = "LESS"
    LESS_OR_EQUAL = "LESS_OR_EQUAL"
    GREATER = "GREATER"
    GREATER_OR_EQUAL = "GREATER_OR_EQUAL"
    IN = "IN"
    NOT_IN = "NOT_IN"
    IS_NULL = "IS_NULL"
    IS_NOT_NULL = "IS_NOT_NULL"


ORDERING = (Operator.LESS, Operator.LESS_OR_EQUAL, Operator.GREATER, Operator.GREATER_OR_EQUAL)


class KeysMode(Enum):
    DECLARED = "DECLARED"
    PUBLIC = "PUBLIC"
    PRIVATE = "PRIVATE"


@dataclass(frozen=True)
class Filter:
    column: str
    operator: Operator
    values: tuple[Scalar, ...] = ()


@dataclass(frozen=True)
class Aggregate:
    function: Function
    column: str = ""
    alias: str = ""
    quantiles: tuple[float, ...] = ()
    candidates: tuple[float, ...] = ()
    weight: float = 0.0


@dataclass(frozen=True)
class Plan:
    dataset_id: str
    aggregates: tuple[Aggregate, ...]
    filters: tuple[Filter, ...] = ()
    group_by: tuple[str, ...] = ()
    keys_mode: KeysMode = KeysMode.DECLARED
    keys: tuple[tuple[Scalar, ...], ...] = ()

    def canonical(self) -> dict[str, object]:
        """A JSON-able form with a stable order; equal plans (structured or SQL) give equal forms."""
        data = asdict(self)
        data["keys_mode"] = self.keys_mode.value
        data["aggregates"] = [{**a, "function": a["function"].value} for a in data["aggregates"]]
        data["filters"] = [{**f, "operator": f["operator"].value} for f in data["filters"]]
        if not self.group_by:
            data["keys_mode"], data["keys"] = "", []
        return data


def digest(plan: Plan, privacy: dict[str, float]) -> str:
    """SHA-256 of the canonical plan and the privacy parameters: the ledger's and the cache's query key."""
    body = json.dumps({"plan": plan.canonical(), "privacy": privacy}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def _refuse(field_path: str, message: str, reason: str) -> InvalidArgument:
    return InvalidArgument.single(field_path, message, reason)


def _column(spec: DatasetSpec, name: str, field_path: str) -> Column:
    column = spec.column(name)
    if column is None:
        raise _refuse(field_path, f"the dataset declares no column {name!r}", "COLUMN_NOT_FOUND")
    return column


def _check_filter(spec: DatasetSpec, f: Filter, path: str) -> Filter:
    column = _column(spec, f.column, f"{path}.column")
    if f.operator in (Operator.IS_NULL, Operator.IS_NOT_NULL):
        if f.values:
            raise _refuse(f"{path}.values", "IS_NULL and IS_NOT_NULL take no values", "QUERY_INVALID")
        return f
    if f.operator in (Operator.IN, Operator.NOT_IN):
        if not 1 <= len(f.values) <= MAX_IN_VALUES:
            raise _refuse(f"{path}.values", f"IN and NOT_IN take 1..{MAX_IN_VALUES} values", "QUERY_INVALID")
    elif len(f.values) != 1:
        raise _refuse(f"{path}.values", "a comparison takes exactly one value", "QUERY_INVALID")
    if f.operator in ORDERING and column.type in (ColumnType.BOOL, ColumnType.STRING):
        raise _refuse(f"{path}.operator", f"{column.type.value} columns are only compared for equality",
                      "COLUMN_TYPE_MISMATCH")
    values = []
    for i, value in enumerate(f.values):
        if not scalar_fits(value, column.type):
            raise _refuse(f"{path}.values[{i}]", f"not a {column.type.value} value", "COLUMN_TYPE_MISMATCH")
        values.append(float(value) if column.type is ColumnType.FLOAT64 else value)  # type: ignore[arg-type]
    return replace(f, values=tuple(values))


def _numeric_column(spec: DatasetSpec, a: Aggregate, path: str) -> Column:
    column = _column(spec, a.column, f"{path}.column")
    if not column.type.numeric:
        raise _refuse(f"{path}.column", f"{a.function.value} needs an INT64 or FLOAT64 column",
                      "COLUMN_TYPE_MISMATCH")
    if column.bounds is None:
        raise _refuse(f"{path}.column", f"{a.function.value} needs the column's declared bounds", "BOUNDS_MISSING")
    if column.nullable and column.fill_value is None:
        raise _refuse(f"{path}.column", f"{a.function.value} of a nullable column needs its declared fill_value",
                      "BOUNDS_MISSING")
    return column


def _default_candidates(column: Column) -> tuple[float, ...]:
    assert column.bounds is not None
    lower, upper = column.bounds
    if column.type is ColumnType.INT64:
        count = int(upper - lower) + 1
        if count <= DEFAULT_CANDIDATES:
            return tuple(float(x) for x in range(int(lower), int(upper) + 1))
        return tuple(sorted({float(round(lower + (upper - lower) * i / (DEFAULT_CANDIDATES - 1)))
                             for i in range(DEFAULT_CANDIDATES)}))
    return tuple(lower + (upper - lower) * i / (DEFAULT_CANDIDATES - 1) for i in range(DEFAULT_CANDIDATES))


def _check_aggregate(spec: DatasetSpec, a: Aggregate, path: str, grouped: bool) -> Aggregate:
    if not math.isfinite(a.weight) or a.weight < 0:
        raise _refuse(f"{path}.weight", "must be finite and not negative", "QUERY_INVALID")
    weight = a.weight or 1.0
    if a.function is Function.COUNT:
        if a.column:
            _column(spec, a.column, f"{path}.column")
        alias = a.alias or ("count" if not a.column else f"count_{a.column}".lower())
        return replace(a, alias=alias, weight=weight, quantiles=(), candidates=())
    if not a.column:
        raise _refuse(f"{path}.column", f"{a.function.value} needs a column", "QUERY_INVALID")
    alias = a.alias or f"{a.function.value}_{a.column}".lower()
    if a.function is Function.HISTOGRAM:
        column = _column(spec, a.column, f"{path}.column")
        if not column.categories:
            raise _refuse(f"{path}.column", "HISTOGRAM needs the column's declared categories",
                          "CATEGORIES_MISSING")
        if grouped:
            raise _refuse(f"{path}.function", "HISTOGRAM cannot be combined with group_by; group by the column",
                          "QUERY_INVALID")
        return replace(a, alias=alias, weight=weight, quantiles=(), candidates=())
    column = _numeric_column(spec, a, path)
    if a.function is not Function.QUANTILE:
        return replace(a, alias=alias, weight=weight, quantiles=(), candidates=())
    if not 1 <= len(a.quantiles) <= MAX_QUANTILES:
        raise _refuse(f"{path}.quantiles", f"1..{MAX_QUANTILES} probabilities", "QUERY_INVALID")
    for i, q in enumerate(a.quantiles):
        if not (math.isfinite(q) and 0 < q < 1):
            raise _refuse(f"{path}.quantiles[{i}]", "must be in (0, 1)", "QUERY_INVALID")
    assert column.bounds is not None
    candidates = a.candidates or _default_candidates(column)
    if len(candidates) > MAX_CANDIDATES:
        raise _refuse(f"{path}.candidates", f"at most {MAX_CANDIDATES}", "QUERY_INVALID")
    for i, c in enumerate(candidates):
        if not (math.isfinite(c) and column.bounds[0] <= c <= column.bounds[1]):
            raise _refuse(f"{path}.candidates[{i}]", "must lie within the column's bounds", "QUERY_INVALID")
        if column.type is ColumnType.INT64 and not float(c).is_integer():
            raise _refuse(f"{path}.candidates[{i}]", "must be an integer for an INT64 column", "QUERY_INVALID")
    ordered = tuple(sorted({float(c) for c in candidates}))
    return replace(a, alias=alias, weight=weight, quantiles=tuple(a.quantiles), candidates=ordered)


def estimates_per_group(a: Aggregate, spec: DatasetSpec) -> int:
    if a.function is Function.HISTOGRAM:
        column = spec.column(a.column)
        return len(column.categories) if column else 0
    if a.function is Function.QUANTILE:
        return len(a.quantiles)
    return 1


def _group_keys(spec: DatasetSpec, plan: Plan, prefix: str) -> tuple[tuple[Scalar, ...], ...]:
    columns = [_column(spec, name, f"{prefix}.group_by[{i}]") for i, name in enumerate(plan.group_by)]
    if plan.keys_mode is KeysMode.DECLARED:
        for i, column in enumerate(columns):
            if not column.categories:
                raise _refuse(f"{prefix}.group_by[{i}]", "DECLARED group keys need the column's declared categories",
                              "CATEGORIES_MISSING")
        total = math.prod(len(c.categories) for c in columns)
        if total > MAX_ESTIMATES:
            raise _refuse(f"{prefix}.group_by", "the declared categories give more groups than a release may hold",
                          "RESULT_TOO_LARGE")
        return tuple(itertools.product(*[c.categories for c in columns]))
    if plan.keys_mode is KeysMode.PRIVATE:
        if plan.keys:
            raise _refuse(f"{prefix}.group_keys.keys", "PRIVATE keys come from the data; list none", "QUERY_INVALID")
        return ()
    if not 1 <= len(plan.keys) <= MAX_PUBLIC_KEYS:
        raise _refuse(f"{prefix}.group_keys.keys", f"PUBLIC keys: 1..{MAX_PUBLIC_KEYS} of them", "QUERY_INVALID")
    for k, key in enumerate(plan.keys):
        if len(key) != len(columns):
            raise _refuse(f"{prefix}.group_keys.keys[{k}].values", "one value per group_by column", "QUERY_INVALID")
        for i, (value, column) in enumerate(zip(key, columns, strict=True)):
            if value is None and column.nullable:
                continue
            if not scalar_fits(value, column.type):
                raise _refuse(f"{prefix}.group_keys.keys[{k}].values[{i}]", f"not a {column.type.value} value",
                              "COLUMN_TYPE_MISMATCH")
    if len(set(plan.keys)) != len(plan.keys):
        raise _refuse(f"{prefix}.group_keys.keys", "must be distinct", "QUERY_INVALID")
    return plan.keys


def validate_plan(spec: DatasetSpec, plan: Plan, prefix: str = "query") -> Plan:
    """The plan with defaults filled in (aliases, weights, candidates, keys), or INVALID_ARGUMENT."""
    if not 1 <= len(plan.aggregates) <= MAX_AGGREGATES:
        raise _refuse(f"{prefix}.aggregates", f"1..{MAX_AGGREGATES} aggregates", "QUERY_INVALID")
    if len(plan.filters) > MAX_FILTERS:
        raise _refuse(f"{prefix}.filters", f"at most {MAX_FILTERS}", "QUERY_INVALID")
    if len(plan.group_by) > MAX_GROUP_BY:
        raise _refuse(f"{prefix}.group_by", f"at most {MAX_GROUP_BY} columns", "QUERY_INVALID")
    if len(set(plan.group_by)) != len(plan.group_by):
        raise _refuse(f"{prefix}.group_by", "a column is listed twice", "QUERY_INVALID")
    filters = tuple(_check_filter(spec, f, f"{prefix}.filters[{i}]") for i, f in enumerate(plan.filters))
    grouped = bool(plan.group_by)
    aggregates = tuple(_check_aggregate(spec, a, f"{prefix}.aggregates[{i}]", grouped)
                       for i, a in enumerate(plan.aggregates))
    aliases = [a.alias for a in aggregates]
    for i, alias in enumerate(aliases):
        if not COLUMN_NAME.match(alias):
            raise _refuse(f"{prefix}.aggregates[{i}].alias", "must match [A-Za-z_][A-Za-z0-9_]*", "QUERY_INVALID")
        if aliases.index(alias) != i:
            raise _refuse(f"{prefix}.aggregates[{i}].alias", f"{alias!r} is used twice", "QUERY_INVALID")
    keys = _group_keys(spec, plan, prefix) if grouped else ()
    normalized = replace(plan, filters=filters, aggregates=aggregates, keys=keys,
                         keys_mode=plan.keys_mode if grouped else KeysMode.DECLARED)
    per_group = sum(estimates_per_group(a, spec) for a in aggregates)
    groups = len(keys) if grouped and plan.keys_mode is not KeysMode.PRIVATE else 1
    if per_group * groups > MAX_ESTIMATES:
        raise _refuse(f"{prefix}.aggregates", f"the release would hold more than {MAX_ESTIMATES} estimates",
                      "RESULT_TOO_LARGE")
    return normalized


def plan_from_canonical(data: dict[str, object]) -> Plan:
    """The inverse of Plan.canonical (stored releases keep their plan this way)."""
    aggregates = tuple(Aggregate(Function(a["function"]), a["column"], a["alias"], tuple(a["quantiles"]),
                                 tuple(a["candidates"]), a["weight"]) for a in data["aggregates"])  # type: ignore[attr-defined]
    filters = tuple(Filter(f["column"], Operator(f["operator"]), tuple(f["values"]))
                    for f in data["filters"])  # type: ignore[attr-defined]
    keys = tuple(tuple(k) for k in data["keys"])  # type: ignore[attr-defined]
    return Plan(str(data["dataset_id"]), aggregates, filters, tuple(data["group_by"]),  # type: ignore[arg-type]
                KeysMode(data["keys_mode"] or "DECLARED"), keys)
