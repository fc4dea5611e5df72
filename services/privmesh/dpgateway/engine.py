"""Differential privacy with OpenDP's Context API over Polars (`contrib` features only; never idealized
numerics: float sums are bounded by the declared max_rows, noise is OpenDP's own sampler).

Per dataset, one long-lived `dp.Context.compositor` holds a lazy scan of the source under a fully adaptive
compositor (an odometer), so the data plan crosses into OpenDP once, and each release is one call on that
context. Queries are compiled into OpenDP measurements once and cached: each noise-adding component is
probed at relative scale 1 to read its privacy map (loss = c / scale**p, p = 1 for epsilon, 2 for rho),
scales are then solved in closed form for the component's share of the requested loss (or from a target
accuracy), and the composed measurement's map is what the ledger charges. Nothing searches for scales on
the hot path; private partition selection searches its threshold once per compiled plan.
"""

from __future__ import annotations

import functools
import operator
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Protocol

import opendp.prelude as dp
import polars as pl
from opendp.extras.polars import Margin, dp_len
from opendp.mod import OdometerQueryable

from privmesh.dpgateway import source as sources
from privmesh.dpgateway.loss import Loss
from privmesh.dpgateway.plan import Aggregate, Filter, Function, KeysMode, Operator, Plan
from privmesh.dpgateway.schema import Accounting, Column, ColumnType, DatasetSpec, Scalar, parse_date

dp.enable_features("contrib")
# OpenDP collects a release in the Polars it bundles, whose engine only the environment chooses: the streaming
# engine (with fallback to in-memory where a plan needs it) reads and aggregates these scans 2-4x faster. The
# guarantee does not depend on it: OpenDP's float-sum sensitivity takes the sequential-summation rounding
# bound, which holds for any order of summation. An operator may still set the variable to "0".
os.environ.setdefault("POLARS_AUTO_NEW_STREAMING", "1")

EPOCH = date(1970, 1, 1)
MEASUREMENT_CACHE = 256
HIDDEN_COUNT = "__partition_count"
ACCURACY_STEPS = 200  # 0.99^200 ~ 0.13: far more narrowing than rounding to integer accuracies ever needs
PROBE_SILENT = 1e6  # relative scale of the partition count while another component is probed


class CompileError(Exception):
    """The query cannot be built into a measurement (a field and a reason, never data)."""

    def __init__(self, field_path: str, message: str, reason: str = "QUERY_INVALID") -> None:
        super().__init__(message)
        self.field_path = field_path
        self.message = message
        self.reason = reason


class _DPExpr(Protocol):
    """The part of OpenDP's `.dp` expression namespace used here (polars' types cannot see a namespace that
    OpenDP registers at import)."""

    def len(self, scale: float | None = None, signed: bool | None = None) -> pl.Expr: ...
    def count(self, scale: float | None = None, signed: bool | None = None) -> pl.Expr: ...
    def sum(self, bounds: tuple[float, float], scale: float | None = None) -> pl.Expr: ...
    def quantile(self, alpha: float, candidates: list[Any], scale: float | None = None) -> pl.Expr: ...


def _dp(expr: pl.Expr) -> _DPExpr:
    namespace: _DPExpr = expr.dp  # type: ignore[attr-defined]  # registered by opendp.extras.polars at import
    return namespace


def _frame_len(scale: float) -> pl.Expr:
    """OpenDP's noisy frame length (dp.len()), which partition selection thresholds."""
    length: pl.Expr = dp_len(scale=scale, signed=True)  # dp_len leaves its return type unannotated
    return length


class SourceUnavailable(Exception):
    """The source could not be opened before any value was read (the reservation is refunded)."""


class ReleaseFailed(Exception):
    """OpenDP failed after the data was handed to the measurement (the cost stays charged)."""


@dataclass(frozen=True)
class Component:
    """One noise-adding release inside a measurement."""

    name: str  # the column OpenDP writes
    aggregate: int  # index in plan.aggregates; -1 for the hidden partition-selection count
    role: str  # "count", "sum", "sum_of_squares", "value", "quantile"
    integer: bool  # discrete noise (integer outputs) or continuous
    quantile: float = 0.0
    build: Callable[[float], pl.Expr] = field(compare=False, repr=False, default=lambda s: pl.lit(0))


@dataclass
class Part:
    """One OpenDP measurement: the main select/group-by, or one histogram."""

    by: tuple[str, ...]
    keys: pl.DataFrame | None  # public keys joined in (None: no grouping, or private keys)
    components: list[Component]
    private_keys: bool = False
    histogram_of: int = -1  # the HISTOGRAM aggregate this part answers; -1 for the main part
    measurement: Any = None
    scales: dict[str, float] = field(default_factory=dict)
    threshold: int | None = None
    cost: Loss = field(default_factory=Loss)


@dataclass
class Compiled:
    parts: list[Part]
    cost: Loss
    mechanism: str  # "LAPLACE" or "GAUSSIAN"
    #: What selects a quantile among its candidates: OpenDP's report-noisy-max on Polars.
    selection: str = "REPORT_NOISY_MAX"

    @property
    def threshold(self) -> int | None:
        return next((p.threshold for p in self.parts if p.threshold is not None), None)


@dataclass(frozen=True)
class Budgeting:
    """How scales are chosen: a loss to spend, or an accuracy to reach at alpha."""

    loss: Loss | None
    accuracy: float = 0.0
    alpha: float = 0.05


def to_engine_value(value: Scalar, column: Column) -> Any:
    if value is not None and column.type is ColumnType.DATE:
        parsed = parse_date(str(value))
        assert parsed is not None
        return (parsed - EPOCH).days
    if value is not None and column.type is ColumnType.FLOAT64:
        return float(value)
    return value


def from_engine_value(value: Any, column: Column) -> Scalar:
    if value is not None and column.type is ColumnType.DATE:
        return date.fromordinal(EPOCH.toordinal() + int(value)).isoformat()
    scalar: Scalar = value  # polars returns the column's Python type: bool, int, float or str
    return scalar


def _domain(spec: DatasetSpec) -> Any:
    kinds = {ColumnType.BOOL: bool, ColumnType.INT64: dp.i64, ColumnType.FLOAT64: dp.f64,
             ColumnType.STRING: dp.String, ColumnType.DATE: dp.i32}
    series = []
    for column in spec.columns:
        atom = (dp.atom_domain(T=dp.f64, nan=False) if column.type is ColumnType.FLOAT64
                else dp.atom_domain(T=kinds[column.type]))
        series.append(dp.series_domain(column.name, dp.option_domain(atom) if column.nullable else atom))
    return dp.with_margin(dp.lazyframe_domain(series), Margin(max_length=spec.max_rows))


def output_measure(accounting: Accounting) -> Any:
    if accounting is Accounting.PURE_DP:
        return dp.max_divergence()
    if accounting is Accounting.APPROXIMATE_DP:
        return dp.approximate(dp.max_divergence())
    return dp.approximate(dp.zero_concentrated_divergence())


def _as_loss(accounting: Accounting, mapped: Any) -> Loss:
    if accounting is Accounting.PURE_DP:
        return Loss(epsilon=float(mapped))
    primary, delta = float(mapped[0]), float(mapped[1])
    return Loss(rho=primary, delta=delta) if accounting is Accounting.ZCDP else Loss(epsilon=primary, delta=delta)


def _filter_expr(spec: DatasetSpec, f: Filter) -> pl.Expr:
    column = spec.column(f.column)
    assert column is not None
    col = pl.col(f.column)
    values = [to_engine_value(v, column) for v in f.values]
    op = f.operator
    if op is Operator.IS_NULL:
        return col.is_null()
    if op is Operator.IS_NOT_NULL:
        return col.is_not_null()
    if op in (Operator.IN, Operator.NOT_IN):  # OpenDP has no is_in: a disjunction of equalities
        anyof: pl.Expr = functools.reduce(operator.or_, [col == v for v in values])
        return ~anyof if op is Operator.NOT_IN else anyof
    value = values[0]
    comparisons: dict[Operator, pl.Expr] = {  # Any-typed values make each comparison Any to mypy
        Operator.EQUAL: col == value, Operator.NOT_EQUAL: col != value, Operator.LESS: col < value,
        Operator.LESS_OR_EQUAL: col <= value, Operator.GREATER: col > value, Operator.GREATER_OR_EQUAL: col >= value}
    return comparisons[op]


def _rows(spec: DatasetSpec, scale: float) -> pl.Expr:
    """A noisy row count. Counting one non-nullable column's length equals the frame's length but lets the
    scan read that column only (OpenDP's frame length reads every column)."""
    anchor = next((c for c in spec.columns if not c.nullable and c.type is not ColumnType.STRING), None)
    if anchor is None:
        return _frame_len(scale)
    return _dp(pl.col(anchor.name)).len(scale=scale, signed=True)


def _typed_bounds(column: Column) -> tuple[Any, Any]:
    assert column.bounds is not None
    lower, upper = column.bounds
    return (int(lower), int(upper)) if column.type is ColumnType.INT64 else (float(lower), float(upper))


def _value(column: Column) -> pl.Expr:
    expr = pl.col(column.name)
    if column.nullable:
        expr = expr.fill_null(to_engine_value(column.fill_value, column))
    return expr


def _components(spec: DatasetSpec, index: int, a: Aggregate) -> list[Component]:
    """The noise-adding releases an aggregate needs (MEAN and VARIANCE are post-processed from several)."""
    prefix = f"c{index}"
    if a.function is Function.COUNT or a.function is Function.HISTOGRAM:
        if a.column and a.function is Function.COUNT:
            counted = pl.col(a.column)
            return [Component(f"{prefix}_count", index, "value", True,
                              build=lambda s: _dp(counted).count(scale=s, signed=True))]
        return [Component(f"{prefix}_count", index, "value", True, build=lambda s: _rows(spec, s))]
    column = spec.column(a.column)
    assert column is not None
    integer = column.type is ColumnType.INT64
    bounds = _typed_bounds(column)
    value = _value(column)

    def count(s: float) -> pl.Expr:  # rows, read from the aggregated column alone
        return _dp(pl.col(column.name)).len(scale=s, signed=True)

    def total(s: float) -> pl.Expr:
        return _dp(value).sum(bounds, scale=s)

    if a.function is Function.SUM:
        return [Component(f"{prefix}_sum", index, "value", integer, build=total)]
    if a.function is Function.MEAN:
        return [Component(f"{prefix}_count", index, "count", True, build=count),
                Component(f"{prefix}_sum", index, "sum", integer, build=total)]
    if a.function is Function.VARIANCE:
        lower, upper = float(bounds[0]), float(bounds[1])
        clipped = value.cast(pl.Float64).clip(lower, upper)

        def squares(s: float) -> pl.Expr:
            return _dp(clipped * clipped).sum(square_bounds(lower, upper), scale=s)

        return [Component(f"{prefix}_count", index, "count", True, build=count),
                Component(f"{prefix}_sum", index, "sum", integer, build=total),
                Component(f"{prefix}_sq", index, "sum_of_squares", False, build=squares)]
    candidates: list[Any] = [int(c) for c in a.candidates] if integer else list(a.candidates)

    def quantile(q: float) -> Callable[[float], pl.Expr]:
        return lambda s: _dp(value).quantile(q, candidates, scale=s)

    return [Component(f"{prefix}_q{j}", index, "quantile", integer, quantile=q, build=quantile(q))
            for j, q in enumerate(a.quantiles)]


def square_bounds(lower: float, upper: float) -> tuple[float, float]:
    """The bounds of x * x for x clamped to [lower, upper] (VARIANCE's sum of squares, on both engines)."""
    return (0.0 if lower < 0 < upper else min(lower * lower, upper * upper), max(lower * lower, upper * upper))


def _keys_frame(spec: DatasetSpec, by: Sequence[str], keys: Sequence[Sequence[Scalar]]) -> pl.DataFrame:
    columns = [spec.column(name) for name in by]
    data: dict[str, list[Any]] = {name: [] for name in by}
    for key in keys:
        for name, column, value in zip(by, columns, key, strict=True):
            assert column is not None
            data[name].append(to_engine_value(value, column))
    schema = {name: (pl.Int32 if c.type is ColumnType.DATE else sources.POLARS_TYPES[c.type])
              for name, c in zip(by, columns, strict=True) if c is not None}
    return pl.DataFrame(data, schema=schema)


def plan_parts(spec: DatasetSpec, plan: Plan) -> list[Part]:
    """The measurements a plan needs (the main select/group-by and one per histogram) and their components."""
    main = Part(plan.group_by, None, [], private_keys=plan.keys_mode is KeysMode.PRIVATE and bool(plan.group_by))
    if plan.group_by and not main.private_keys:
        main.keys = _keys_frame(spec, plan.group_by, plan.keys)
    parts = [main]
    for index, aggregate in enumerate(plan.aggregates):
        components = _components(spec, index, aggregate)
        if aggregate.function is Function.HISTOGRAM:
            column = spec.column(aggregate.column)
            assert column is not None
            keys = _keys_frame(spec, [aggregate.column], [(c,) for c in column.categories])
            parts.append(Part((aggregate.column,), keys, components, histogram_of=index))
        else:
            main.components.extend(components)
    if main.private_keys:
        # OpenDP's partition selection thresholds a frame-length count (dp.len()) specifically
        main.components.insert(0, Component(HIDDEN_COUNT, -1, "count", True,
                                            build=_frame_len))
    return [p for p in parts if p.components]


def component_shares(plan: Plan, parts: list[Part]) -> dict[str, float]:
    """Each component's share of the loss: the aggregate's weight, split evenly among its components."""
    shares: dict[str, float] = {}
    counts: dict[int, int] = {}
    for part in parts:
        for c in part.components:
            counts[c.aggregate] = counts.get(c.aggregate, 0) + 1
    total = sum(a.weight for a in plan.aggregates) + (1.0 if -1 in counts else 0.0)
    for part in parts:
        for c in part.components:
            weight = 1.0 if c.aggregate < 0 else plan.aggregates[c.aggregate].weight
            shares[c.name] = weight / total / counts[c.aggregate]
    return shares


def noise_accuracy(mechanism: str, integer: bool, scale: float, alpha: float) -> float:
    """The distance from the exact value that the noise stays within with probability 1 - alpha."""
    if scale <= 0:
        return 0.0
    if mechanism == "LAPLACE":
        return float(dp.discrete_laplacian_scale_to_accuracy(scale, alpha) if integer
                     else dp.laplacian_scale_to_accuracy(scale, alpha))
    return float(dp.discrete_gaussian_scale_to_accuracy(scale, alpha) if integer
                 else dp.gaussian_scale_to_accuracy(scale, alpha))


def _accuracy_scale(mechanism: str, integer: bool, accuracy: float, alpha: float) -> float:
    if mechanism == "LAPLACE":
        return float(dp.accuracy_to_discrete_laplacian_scale(accuracy, alpha) if integer
                     else dp.accuracy_to_laplacian_scale(accuracy, alpha))
    return float(dp.accuracy_to_discrete_gaussian_scale(accuracy, alpha) if integer
                 else dp.accuracy_to_gaussian_scale(accuracy, alpha))


def scale_for_accuracy(mechanism: str, integer: bool, budgeting: Budgeting) -> float:
    """The closed-form scale for the target accuracy, narrowed by 1% steps while discrete noise (whose accuracy
    is an integer, rounded up) misses it: at most ACCURACY_STEPS steps (a scale 7x smaller), since a target
    that discrete noise cannot reach would otherwise shrink the scale into a denormal that 0.99x leaves fixed."""
    scale = _accuracy_scale(mechanism, integer, budgeting.accuracy, budgeting.alpha)
    for _ in range(ACCURACY_STEPS):
        if noise_accuracy(mechanism, integer, scale, budgeting.alpha) <= budgeting.accuracy:
            return scale
        scale *= 0.99
    raise CompileError("privacy.target_accuracy", "no noise scale reaches this accuracy for an integer "
                       "aggregate; ask for a larger target_accuracy", "ACCURACY_UNREACHABLE")


class DatasetEngine:
    """The OpenDP context of one dataset (one source version) and its compiled measurements."""

    def __init__(self, spec: DatasetSpec, opened: sources.OpenedSource) -> None:
        self.spec = spec
        self.fingerprint = opened.fingerprint
        self.accounting = spec.accounting
        self.mechanism = "GAUSSIAN" if spec.accounting is Accounting.ZCDP else "LAPLACE"
        self.power = 2 if spec.accounting is Accounting.ZCDP else 1
        measure = output_measure(spec.accounting)
        unit = (dp.unit_of(contributions=1, identifier=spec.privacy_unit_column)  # a column name, as pl.col()
                if spec.privacy_unit_column else dp.unit_of(contributions=1))
        infinite = float("inf") if spec.accounting is Accounting.PURE_DP else (float("inf"), float("inf"))
        self.context = dp.Context.compositor(data=sources.scan(spec, opened), privacy_unit=unit,
                                             privacy_loss=(measure, infinite), domain=_domain(spec))
        queryable = self.context.queryable
        if not isinstance(queryable, OdometerQueryable):  # an unsplit, unbounded compositor is an odometer
            raise TypeError("the dataset context must be an OpenDP odometer")
        self._odometer = queryable
        self._lock = threading.Lock()
        self._probes: OrderedDict[str, dict[str, float]] = OrderedDict()
        self._compiled: OrderedDict[str, Compiled] = OrderedDict()

    # --- building ------------------------------------------------------------------------------------------

    def _query(self, part: Part, filters: Sequence[Filter], scales: dict[str, float]) -> Any:
        spec = self.spec
        query = self.context.query()
        if filters:
            condition = _filter_expr(spec, filters[0])
            for f in filters[1:]:
                condition = condition & _filter_expr(spec, f)
            query = query.filter(condition)
        if spec.privacy_unit_column:
            if part.by and spec.groups_per_unit < spec.max_contributions:
                query = query.truncate_num_groups(spec.groups_per_unit, by=list(part.by), keep="first")
            query = query.truncate_per_group(spec.max_contributions, keep="first")
        exprs = [c.build(scales[c.name]).alias(c.name) for c in part.components if c.name in scales]
        if not part.by:
            return query.select(exprs)
        grouped = query.group_by(list(part.by)).agg(exprs)
        return grouped.with_keys(part.keys) if part.keys is not None else grouped

    def _measure(self, part: Part, filters: Sequence[Filter], scales: dict[str, float],
                 threshold: int | None) -> Any:
        query = self._query(part, filters, scales)
        accountant = self.context.accountant
        return dp.m.make_private_lazyframe(accountant.input_domain, accountant.input_metric,
                                           accountant.output_measure, query.polars_plan, global_scale=1.0,
                                           threshold=threshold)

    def _probe(self, plan_key: str, plan: Plan, parts: list[Part]) -> dict[str, float]:
        """Each component's privacy-map constant c (its loss at relative scale 1), cached per plan."""
        with self._lock:
            cached = self._probes.get(plan_key)
            if cached is not None:
                self._probes.move_to_end(plan_key)
                return cached
        constants: dict[str, float] = {}
        for part in parts:
            threshold = 2**32 - 1 if part.private_keys else None
            for component in part.components:  # (the partition-selection count comes first in its part)
                scales = {component.name: 1.0}
                if part.private_keys and component.name != HIDDEN_COUNT:  # OpenDP needs it present: make it
                    scales[HIDDEN_COUNT] = PROBE_SILENT  # negligible, then take its share back out
                mapped = self._measure(part, plan.filters, scales, threshold).map(1)
                constant = _as_loss(self.accounting, mapped).primary(self.accounting)
                if HIDDEN_COUNT in scales and component.name != HIDDEN_COUNT:
                    constant -= constants[HIDDEN_COUNT] / PROBE_SILENT**self.power
                constants[component.name] = constant
        with self._lock:
            self._probes[plan_key] = constants
            while len(self._probes) > MEASUREMENT_CACHE:
                self._probes.popitem(last=False)
        return constants

    def compile(self, plan_key: str, plan: Plan, budgeting: Budgeting) -> Compiled:
        """The measurements for `plan` spending at most `budgeting.loss` (or reaching its accuracy)."""
        key = f"{plan_key}|{budgeting}"
        with self._lock:
            cached = self._compiled.get(key)
            if cached is not None:
                self._compiled.move_to_end(key)
                return cached
        try:
            compiled = self._compile(plan_key, plan, budgeting)
        except dp.OpenDPException as exc:
            raise CompileError("query", f"OpenDP cannot build this query: {_opendp_reason(exc)}") from None
        with self._lock:
            self._compiled[key] = compiled
            while len(self._compiled) > MEASUREMENT_CACHE:
                self._compiled.popitem(last=False)
        return compiled

    def _compile(self, plan_key: str, plan: Plan, budgeting: Budgeting) -> Compiled:
        parts = plan_parts(self.spec, plan)
        constants = self._probe(plan_key, plan, parts)
        scales: dict[str, float] = {}
        if budgeting.loss is not None:
            target = budgeting.loss.primary(self.accounting)
            for name, share in component_shares(plan, parts).items():
                scales[name] = (constants[name] / (target * share)) ** (1 / self.power) if constants[name] else 0.0
        else:
            for part in parts:
                for c in part.components:
                    if c.role == "quantile":
                        raise CompileError("privacy.target_accuracy", "QUANTILE has no accuracy in the column's "
                                           "units; give a privacy_loss", "ACCURACY_UNREACHABLE")
                    scales[c.name] = scale_for_accuracy(self.mechanism, c.integer, budgeting)
        delta = budgeting.loss.delta if budgeting.loss is not None else 0.0
        for _ in range(4):  # closed-form scales can overshoot the share by a rounding error; widen and rebuild
            compiled = self._assemble(plan, parts, scales, delta)
            if budgeting.loss is None:
                return compiled
            spent = compiled.cost.primary(self.accounting)
            target = budgeting.loss.primary(self.accounting)
            if spent <= target:
                return compiled
            factor = (spent / target) ** (1 / self.power) * (1 + 1e-9)
            scales = {name: s * factor for name, s in scales.items()}
        raise CompileError("privacy", "the requested loss cannot be met")

    def _assemble(self, plan: Plan, parts: list[Part], scales: dict[str, float], delta: float) -> Compiled:
        cost = Loss()
        built: list[Part] = []
        for part in parts:
            own = {c.name: scales[c.name] for c in part.components}
            threshold = self._threshold(part, plan.filters, own, delta) if part.private_keys else None
            measurement = self._measure(part, plan.filters, own, threshold)
            part_cost = _as_loss(self.accounting, measurement.map(1))
            built.append(Part(part.by, part.keys, part.components, part.private_keys, part.histogram_of, measurement,
                              own, threshold, part_cost))
            cost = cost + part_cost
        return Compiled(built, cost, self.mechanism)

    def _threshold(self, part: Part, filters: Sequence[Filter], scales: dict[str, float], delta: float) -> int:
        """The smallest noisy-count threshold whose partition-selection delta fits `delta`."""
        if delta <= 0:
            raise CompileError("privacy.privacy_loss.delta", "grouping by private keys needs delta > 0",
                               "DELTA_REQUIRED")
        def fits(threshold: float) -> bool:  # T=int: OpenDP searches integers, its signature says float
            return _as_loss(self.accounting, self._measure(part, filters, scales, int(threshold)).map(1)).delta <= delta

        try:
            return int(dp.binary_search(fits, bounds=(2, 2**31 - 1), T=int))
        except (ValueError, dp.OpenDPException):
            raise CompileError("privacy.privacy_loss.delta", "delta is too small for private keys",
                               "DELTA_REQUIRED") from None

    # --- releasing -----------------------------------------------------------------------------------------

    def release(self, compiled: Compiled) -> list[pl.DataFrame]:
        """Runs every measurement of `compiled` through the context (the data is read here)."""
        frames = []
        with self._lock:
            for part in compiled.parts:
                try:
                    frames.append(self.context(part.measurement).collect())
                except Exception:  # its text may quote source values (e.g. a CSV cell): never passed on
                    raise ReleaseFailed from None
        return frames

    def privacy_loss(self) -> Loss:
        """What this context's odometer has composed so far (this process only)."""
        with self._lock:
            return _as_loss(self.accounting, self._odometer.privacy_loss(1))  # type: ignore[no-untyped-call]  # unannotated in opendp


def _opendp_reason(exc: Exception) -> str:
    """OpenDP's message without its backtrace; it describes the plan, never data values."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]

