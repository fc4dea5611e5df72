"""The gateway's side of the Spark engine: the same plans, priced and charged by the gateway, executed by
Tumult Analytics on Spark in a separate process (spark/worker.py, its own venv).

The gateway keeps the ledger's arithmetic: a query's cost is exactly the requested loss (epsilon, or rho
under zCDP; delta only with private keys), or the loss that reaches a target accuracy, split over the noisy
components as exact rationals that sum to the cost; Tumult spends each share on its component (sequential
composition, as the ledger adds). Scales and mechanisms are Tumult's, read back from its noise description,
so accuracies and intervals come from results.py as for Polars. A worker that dies or fails after reading
is RELEASE_FAILED (charged, the ledger's rule); one that could not open the source is SOURCE_UNAVAILABLE
(refunded)."""

from __future__ import annotations

import atexit
import functools
import json
import os
import subprocess
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import IO, Any

import polars as pl

from privmesh.dpgateway import source as sources
from privmesh.dpgateway.engine import (
    HIDDEN_COUNT,
    MEASUREMENT_CACHE,
    Budgeting,
    Compiled,
    CompileError,
    Component,
    Part,
    ReleaseFailed,
    SourceUnavailable,
    component_shares,
    plan_parts,
    scale_for_accuracy,
    square_bounds,
    to_engine_value,
)
from privmesh.dpgateway.loss import Loss, rounded_up
from privmesh.dpgateway.plan import Function, KeysMode, Plan
from privmesh.dpgateway.schema import Accounting, DatasetSpec, Scalar
from privmesh.dpgateway.spark import protocol as p

SAFETY = Fraction(1) + Fraction(1, 2**30)  # a target accuracy's shares, widened past Tumult's float rounding
SERVICES_DIR = Path(__file__).resolve().parents[2]  # holds the privmesh package the worker imports


class EngineProcess:
    """One Spark engine process (a Spark driver, local[N] or a cluster's), started on first use and again
    after it died; requests are serialized (Spark parallelizes inside each)."""

    def __init__(self, python: str, master: str = "local[2]", conf: dict[str, str] | None = None) -> None:
        self.python = python
        self.master = master
        self.conf = conf or {}  # Spark settings of the driver, over the worker's defaults and spark-defaults.conf
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def _start(self) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONPATH": str(SERVICES_DIR), "PYSPARK_PYTHON": self.python,
               "PYSPARK_DRIVER_PYTHON": self.python, "PRIVMESH_SPARK_MASTER": self.master,
               "PRIVMESH_SPARK_CONF": json.dumps(self.conf)}
        proc = subprocess.Popen([self.python, "-m", "privmesh.dpgateway.spark.worker"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
        assert proc.stdout is not None
        if proc.stdout.readline() != b'{"ready":true}\n':
            proc.kill()
            proc.wait()
            raise SourceUnavailable
        return proc

    def start(self) -> None:
        """Starts the engine (a Spark driver: seconds) unless it runs; queries otherwise start it first."""
        with self._lock:
            self._running()

    def _running(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = self._start()
        return self._proc

    def call(self, request: p.ReleaseRequest) -> p.ReleaseResponse:
        """One request and its reply; SourceUnavailable if the engine cannot start (nothing was sent),
        ReleaseFailed if it dies after the request was sent."""
        with self._lock:
            proc = self._running()
            stdin, stdout = proc.stdin, proc.stdout
            assert stdin is not None and stdout is not None
            try:
                stdin.write(p.encode(request))
                stdin.flush()
                line = _read_line(stdout)
                return p.decode_response(line)
            except (OSError, ValueError, TypeError, KeyError):
                self._stop(proc)
                raise ReleaseFailed from None

    def _stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        self._proc = None

    def close(self) -> None:
        with self._lock:
            if self._proc is not None:
                if self._proc.stdin is not None:
                    self._proc.stdin.close()
                try:
                    self._proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self._stop(self._proc)
                self._proc = None


@functools.cache
def shared_process(python: str, master: str, conf: tuple[tuple[str, str], ...] = ()) -> EngineProcess:
    """The process-wide engine for a Python, master and Spark settings: gateways in one process (tests, a dev
    mesh) share one Spark driver; it stops when the process exits (or, if the gateway is killed, when its stdin
    closes)."""
    process = EngineProcess(python, master, dict(conf))
    atexit.register(process.close)
    return process


def _read_line(stdout: IO[bytes]) -> bytes:
    line = stdout.readline(p.MAX_LINE + 1)
    if not line.endswith(b"\n"):  # EOF: the process died (or a reply past the limit)
        raise OSError("the Spark engine ended")
    return line


def _split(cost: Fraction, shares: dict[str, float] | dict[str, Fraction]) -> dict[str, Fraction]:
    """Exact shares of `cost` in the weights' proportions; they sum to `cost` exactly."""
    weights = {name: Fraction(share) for name, share in shares.items()}
    whole = sum(weights.values(), Fraction(0))
    return {name: cost * w / whole for name, w in weights.items()}


@dataclass
class SparkCompiled(Compiled):
    """A priced plan for the Spark engine: the plan and each component's exact share of the cost."""

    plan: Plan | None = None
    shares: dict[str, Fraction] = field(default_factory=dict)
    #: Tumult's quantile is the exponential mechanism (its noise description: EXPONENTIAL, with its epsilon).
    selection: str = "EXPONENTIAL"


class SparkDatasetEngine:
    """A dataset on the Spark engine: plans priced here, executed by the engine process."""

    def __init__(self, spec: DatasetSpec, opened: sources.OpenedSource, process: EngineProcess) -> None:
        self.spec = spec
        self.fingerprint = opened.fingerprint
        self.process = process
        self.mechanism = "GAUSSIAN" if spec.accounting is Accounting.ZCDP else "LAPLACE"
        self._probes: OrderedDict[str, dict[str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def compile(self, plan_key: str, plan: Plan, budgeting: Budgeting) -> Compiled:
        spec = self.spec
        private = plan.keys_mode is KeysMode.PRIVATE and bool(plan.group_by)
        if private and spec.accounting is not Accounting.APPROXIMATE_DP:
            raise CompileError("query.group_keys.mode", "private keys on the Spark engine need an APPROXIMATE_DP "
                               "dataset: Tumult selects groups only under (epsilon, delta)-DP, which no rho "
                               "bounds; use DECLARED or PUBLIC keys", "ENGINE_UNSUPPORTED")
        parts = plan_parts(spec, plan)
        if budgeting.loss is None:
            return self._for_accuracy(plan_key, plan, parts, budgeting, private)
        loss = budgeting.loss
        primary = Fraction(loss.primary(spec.accounting))
        shares = _split(primary, component_shares(plan, parts))
        cost = (Loss(rho=loss.rho) if spec.accounting is Accounting.ZCDP
                else Loss(epsilon=loss.epsilon, delta=loss.delta if private else 0.0))
        return SparkCompiled(parts, cost, self.mechanism, plan=plan, shares=shares)

    def _for_accuracy(self, plan_key: str, plan: Plan, parts: list[Part], budgeting: Budgeting,
                      private: bool) -> Compiled:
        """The budget whose Tumult noise reaches the target accuracy, solved as on Polars: each component's
        scale for the accuracy at alpha (engine.scale_for_accuracy), and the share giving it from Tumult's own
        scale at a unit share (scale ~ 1/epsilon, or 1/sqrt(rho)). Shares are rounded up, never down, and the
        cost is their exact sum rounded up to a float: Tumult spends exactly the cost, no scale exceeds its
        target."""
        if private:
            raise CompileError("privacy.privacy_loss.delta", "grouping by private keys needs delta > 0",
                               "DELTA_REQUIRED")
        needed: dict[str, Fraction] = {}
        unit = self._probe(plan_key, plan, parts)
        for part in parts:
            for c in part.components:
                if c.role == "quantile":
                    raise CompileError("privacy.target_accuracy", "QUANTILE has no accuracy in the column's "
                                       "units; give a privacy_loss", "ACCURACY_UNREACHABLE")
                ratio = Fraction(unit[c.name]) / Fraction(scale_for_accuracy(self.mechanism, c.integer, budgeting))
                needed[c.name] = (ratio * ratio if self.spec.accounting is Accounting.ZCDP else ratio) * SAFETY
        total = sum(needed.values(), Fraction(0))
        zcdp = self.spec.accounting is Accounting.ZCDP
        cost = rounded_up((Fraction(0), Fraction(0), total) if zcdp else (total, Fraction(0), Fraction(0)))
        shares = _split(Fraction(cost.primary(self.spec.accounting)), needed)
        return SparkCompiled(parts, cost, self.mechanism, plan=plan, shares=shares)

    def _probe(self, plan_key: str, plan: Plan, parts: list[Part]) -> dict[str, float]:
        """Tumult's noise scale of each component at a unit share (cached per plan; nothing is read)."""
        with self._lock:
            cached = self._probes.get(plan_key)
        if cached is None:  # SourceUnavailable or ReleaseFailed if the engine cannot answer: nothing is spent yet
            unit = {c.name: Fraction(1) for part in parts for c in part.components}
            described, _ = self._run(SparkCompiled(parts, Loss(), self.mechanism, plan=plan, shares=unit),
                                     evaluate=False)
            cached = {name: scale for part in described for name, scale in part.scales.items()}
            with self._lock:
                self._probes[plan_key] = cached
                while len(self._probes) > MEASUREMENT_CACHE:
                    self._probes.popitem(last=False)
        return cached

    def _request(self, plan: Plan, part: Part, shares: dict[str, Fraction], delta: Fraction,
                 evaluate: bool) -> p.ReleaseRequest:
        """One part of the plan (the main select/group-by or a histogram) as the worker's request."""
        spec = self.spec
        columns = [p.ColumnSpec(c.name, c.type.value, c.nullable, c.fill_value) for c in spec.columns]
        filters = [p.FilterSpec(f.column, f.operator.value, list(f.values)) for f in plan.filters]
        components = [self._component(plan, c, shares[c.name], delta) for c in part.components]
        keys: list[list[Any]] = []
        if part.by and part.keys is not None:
            keys = [list(row) for row in (plan.keys if part.histogram_of < 0 else
                                          [(v,) for v in _categories(spec, part.by[0])])]
        return p.ReleaseRequest(spec.source.uri, spec.source.format.value, columns, spec.privacy_unit_column,
                                spec.max_contributions, spec.accounting.value, filters, list(part.by), keys,
                                components, evaluate, spec.source.delimiter, spec.groups_per_unit)

    def _component(self, plan: Plan, c: Component, share: Fraction, delta: Fraction) -> p.ComponentSpec:
        """A noisy component as Tumult computes it: the same roles, bounds and noise domain as on Polars."""
        spec = self.spec
        aggregate = plan.aggregates[c.aggregate] if c.aggregate >= 0 else None
        square_of: list[float] = []
        if aggregate is None:
            role, column_name = "keys", ""
        elif c.role in ("sum_of_squares", "quantile"):
            role, column_name = c.role, aggregate.column
        elif aggregate.function is Function.SUM or c.role == "sum":
            role, column_name = "sum", aggregate.column
        else:
            role = "count"
            column_name = aggregate.column if aggregate.function is Function.COUNT else ""
        column = spec.column(column_name) if column_name else None
        bounds = column.bounds if column is not None and column.bounds is not None else (0.0, 0.0)
        if role == "sum_of_squares":
            square_of, bounds = list(bounds), square_bounds(*bounds)
        budget = ({"rho": p.rational(share)} if spec.accounting is Accounting.ZCDP else
                  {"epsilon": p.rational(share), "delta": p.rational(delta if role == "keys" else Fraction(0))})
        return p.ComponentSpec(c.name, role, column_name, bounds[0], bounds[1], c.integer, quantile=c.quantile,
                               square_of=square_of, **budget)

    def _run(self, compiled: Compiled, evaluate: bool) -> tuple[list[Part], list[pl.DataFrame]]:
        assert isinstance(compiled, SparkCompiled) and compiled.plan is not None
        plan, shares, delta = compiled.plan, compiled.shares, Fraction(compiled.cost.delta)
        parts: list[Part] = []
        frames: list[pl.DataFrame] = []
        for part in compiled.parts:
            reply = self.process.call(self._request(plan, part, shares, delta, evaluate))
            if not reply.ok:
                if reply.error == "SOURCE_UNAVAILABLE" and not reply.data_read:
                    raise SourceUnavailable
                raise ReleaseFailed
            scales = {c.name: c.scale for c in reply.components}
            parts.append(replace(part, scales=scales))
            frames.append(self._frame(plan, part, reply.rows))
        return parts, frames

    def _frame(self, plan: Plan, part: Part, rows: list[dict[str, Any]]) -> pl.DataFrame:
        """The released rows with group keys in engine values (as results.py reads Polars releases); a quantile
        is Tumult's released value moved to the nearest of the plan's candidates (post-processing), so both
        engines answer from the same candidates."""
        columns = {name: self.spec.column(name) for name in part.by}
        candidates = {c.name: plan.aggregates[c.aggregate].candidates for c in part.components
                      if c.role == "quantile"}
        converted = []
        for row in rows:
            out = dict(row)
            for name, column in columns.items():
                if column is not None:
                    out[name] = to_engine_value(row.get(name), column)
            for name, choices in candidates.items():
                if out.get(name) is not None:
                    out[name] = _nearest(choices, float(out[name]))
            out.setdefault(HIDDEN_COUNT, 0.0)
            converted.append(out)
        return pl.DataFrame(converted) if converted else pl.DataFrame()

    def describe(self, compiled: Compiled) -> Compiled:
        """The noise each component would get (Tumult's), without reading values: for validate_only."""
        parts, _ = self._run(compiled, evaluate=False)
        return replace(compiled, parts=parts)

    def release(self, compiled: Compiled) -> list[pl.DataFrame]:
        parts, frames = self._run(compiled, evaluate=True)
        compiled.parts[:] = parts
        return frames


def _categories(spec: DatasetSpec, name: str) -> tuple[Scalar, ...]:
    column = spec.column(name)
    return column.categories if column is not None else ()


def _nearest(choices: tuple[float, ...], value: float) -> float:
    return min(choices, key=lambda choice: abs(choice - value))
