"""From OpenDP's released frames to estimates: values, noise scales, accuracy and confidence intervals at
alpha. MEAN and VARIANCE are post-processed from their noisy components, with intervals derived from the
components' intervals at alpha / k (union bound) and clipped to what the declared bounds allow."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from privmesh.dpgateway.engine import HIDDEN_COUNT, Compiled, Component, Part, from_engine_value, noise_accuracy
from privmesh.dpgateway.engine import to_engine_value as engine_value
from privmesh.dpgateway.plan import MAX_ESTIMATES, Function, KeysMode, Plan, estimates_per_group
from privmesh.dpgateway.schema import Column, DatasetSpec, Scalar


@dataclass(frozen=True)
class NoisyComponent:
    name: str
    value: float
    mechanism: str
    noise_scale: float
    accuracy: float


@dataclass(frozen=True)
class Estimate:
    aggregate: str
    value: float
    mechanism: str
    noise_scale: float = 0.0
    accuracy: float = 0.0
    bin: str = ""
    interval: tuple[float, float] | None = None
    components: tuple[NoisyComponent, ...] = ()


@dataclass(frozen=True)
class Row:
    key: tuple[Scalar, ...]
    estimates: tuple[Estimate, ...]


@dataclass
class Answer:
    rows: list[Row] = field(default_factory=list)
    truncated: bool = False


def _number(value: Any) -> float:
    number = float(value) if value is not None else 0.0
    return number if math.isfinite(number) else 0.0


def bin_text(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


class _Noisy:
    """One component's released value and its accuracy at a given alpha."""

    def __init__(self, compiled: Compiled, part: Part, component: Component, row: dict[str, Any] | None,
                 alpha: float) -> None:
        self.value = _number(row.get(component.name)) if row is not None else 0.0
        self.scale = part.scales[component.name]
        self.mechanism = compiled.mechanism
        self.accuracy = noise_accuracy(compiled.mechanism, component.integer, self.scale, alpha)
        self.role = component.role

    def out(self) -> NoisyComponent:
        name = {"count": "count", "sum": "sum", "sum_of_squares": "sum_of_squares"}[self.role]
        return NoisyComponent(name, self.value, self.mechanism, self.scale, self.accuracy)


def _ratio_range(top: tuple[float, float], bottom: tuple[float, float]) -> tuple[float, float] | None:
    if bottom[0] < 1:
        return None
    corners = [t / b for t in top for b in bottom]
    return min(corners), max(corners)


def _mean(alias: str, column: Column, n: _Noisy, s: _Noisy) -> Estimate:
    assert column.bounds is not None
    lower, upper = column.bounds
    value = min(max(s.value / max(n.value, 1.0), lower), upper)
    found = _ratio_range((s.value - s.accuracy, s.value + s.accuracy), (n.value - n.accuracy, n.value + n.accuracy))
    low, high = (lower, upper) if found is None else (max(lower, found[0]), min(upper, found[1]))
    return Estimate(alias, value, "POST_PROCESSING", interval=(min(low, value), max(high, value)),
                    components=(n.out(), s.out()))


def _variance(alias: str, column: Column, n: _Noisy, s: _Noisy, ss: _Noisy) -> Estimate:
    assert column.bounds is not None
    lower, upper = column.bounds
    most = ((upper - lower) / 2) ** 2
    count = max(n.value, 1.0)
    mean = min(max(s.value / count, lower), upper)
    value = min(max(ss.value / count - mean * mean, 0.0), most)
    counts = (n.value - n.accuracy, n.value + n.accuracy)
    means = _ratio_range((s.value - s.accuracy, s.value + s.accuracy), counts)
    squares = _ratio_range((max(ss.value - ss.accuracy, 0.0), max(ss.value + ss.accuracy, 0.0)), counts)
    if means is None or squares is None:
        low, high = 0.0, most
    else:
        m_low, m_high = max(lower, means[0]), min(upper, means[1])
        m2_low = 0.0 if m_low <= 0 <= m_high else min(m_low * m_low, m_high * m_high)
        m2_high = max(m_low * m_low, m_high * m_high)
        low, high = max(0.0, squares[0] - m2_high), min(most, squares[1] - m2_low)
    return Estimate(alias, value, "POST_PROCESSING", interval=(min(low, value), max(high, value)),
                    components=(n.out(), s.out(), ss.out()))


def _direct(alias: str, noisy: _Noisy, bin_label: str = "") -> Estimate:
    return Estimate(alias, noisy.value, noisy.mechanism, noisy.scale, noisy.accuracy, bin_label,
                    (noisy.value - noisy.accuracy, noisy.value + noisy.accuracy))


def _group_keys(spec: DatasetSpec, plan: Plan, main: Part | None, frame: pl.DataFrame | None,
                per_group: int) -> tuple[list[tuple[Any, ...]], bool]:
    """Keys in engine values, in release order, and whether private keys were cut to fit a release."""
    columns = [spec.column(name) for name in plan.group_by]
    if not plan.group_by:
        return [()], False
    if plan.keys_mode is not KeysMode.PRIVATE:
        return [tuple(engine_value(v, c) for v, c in zip(key, columns, strict=True) if c is not None)
                for key in plan.keys], False
    if frame is None or main is None:
        return [], False
    rows = [(tuple(r[name] for name in plan.group_by), _number(r.get(HIDDEN_COUNT)))
            for r in frame.iter_rows(named=True)]
    limit = max(1, MAX_ESTIMATES // max(per_group, 1))
    truncated = len(rows) > limit
    if truncated:  # keep the largest noisy counts (post-processing of released values)
        rows = sorted(rows, key=lambda r: r[1], reverse=True)[:limit]
    keys = [key for key, _ in rows]
    return sorted(keys, key=lambda k: tuple((v is not None, v) for v in k)), truncated


def build_answer(spec: DatasetSpec, plan: Plan, compiled: Compiled, frames: list[pl.DataFrame] | None,
                 alpha: float) -> Answer:
    """The release's rows; with `frames` None (validate_only), values are 0 and only known groups appear."""
    main = next((p for p in compiled.parts if p.histogram_of < 0), None)
    index = {id(p): i for i, p in enumerate(compiled.parts)}
    main_frame = frames[index[id(main)]] if frames is not None and main is not None else None
    per_group = sum(estimates_per_group(a, spec) for a in plan.aggregates)
    keys, truncated = _group_keys(spec, plan, main, main_frame, per_group)
    if frames is None and plan.keys_mode is KeysMode.PRIVATE and plan.group_by:
        keys = []
    main_rows = _rows_by_key(main_frame, plan.group_by) if main_frame is not None else {}
    histograms = {p.histogram_of: (p, _rows_by_key(frames[index[id(p)]], p.by) if frames is not None else {})
                  for p in compiled.parts if p.histogram_of >= 0}
    by_aggregate: dict[int, list[Component]] = {}
    for part in compiled.parts:
        for c in part.components:
            by_aggregate.setdefault(c.aggregate, []).append(c)
    group_columns = [spec.column(name) for name in plan.group_by]
    answer = Answer(truncated=truncated)
    for key in keys:
        row = main_rows.get(key) if frames is not None else None
        estimates: list[Estimate] = []
        for i, aggregate in enumerate(plan.aggregates):
            components = by_aggregate.get(i, [])
            if aggregate.function is Function.HISTOGRAM:
                estimates.extend(_histogram(spec, compiled, aggregate.alias, aggregate.column, histograms[i], alpha,
                                            frames is not None))
                continue
            assert main is not None
            k = len(components)
            noisy = [_Noisy(compiled, main, c, row, alpha / k if k > 1 and aggregate.function in (
                Function.MEAN, Function.VARIANCE) else alpha) for c in components]
            column = spec.column(aggregate.column)
            if aggregate.function is Function.MEAN:
                assert column is not None
                estimates.append(_mean(aggregate.alias, column, *noisy))
            elif aggregate.function is Function.VARIANCE:
                assert column is not None
                estimates.append(_variance(aggregate.alias, column, *noisy))
            elif aggregate.function is Function.QUANTILE:
                for c, n in zip(components, noisy, strict=True):
                    estimates.append(Estimate(aggregate.alias, n.value, compiled.selection, n.scale, 0.0,
                                              f"{c.quantile:g}"))
            else:
                estimates.append(_direct(aggregate.alias, noisy[0]))
        released_key = tuple(from_engine_value(v, c) for v, c in zip(key, group_columns, strict=True)
                             if c is not None)
        answer.rows.append(Row(released_key, tuple(estimates)))
    return answer


def _histogram(spec: DatasetSpec, compiled: Compiled, alias: str, column_name: str,
               found: tuple[Part, dict[tuple[Any, ...], dict[str, Any]]], alpha: float,
               released: bool) -> list[Estimate]:
    part, rows = found
    column = spec.column(column_name)
    assert column is not None
    component = part.components[0]
    out = []
    for category in column.categories:
        row = rows.get((engine_value(category, column),)) if released else None
        out.append(_direct(alias, _Noisy(compiled, part, component, row, alpha), bin_text(category)))
    return out


def _rows_by_key(frame: pl.DataFrame, by: tuple[str, ...]) -> dict[tuple[Any, ...], dict[str, Any]]:
    return {tuple(r[name] for name in by): r for r in frame.iter_rows(named=True)}
