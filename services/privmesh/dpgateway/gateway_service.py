"""The gateway's domain logic (no gRPC): datasets, queries and the ledger, with every spend audited.

A query goes: dataset and caller's budget -> plan checked against the declared schema -> privacy checked
against the dataset's accounting and the server's limits -> identical earlier release? (free) -> compiled
OpenDP measurements and their cost -> reserve (atomic, fail if over a cap) -> audit -> read data and
release -> commit with the stored release. Every refusal before the reservation leaves the ledger as it
was; Query and QuerySql refuse with INVALID_ARGUMENT whatever was wrong (see the contract).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from google.rpc.error_details_pb2 import QuotaFailure

from privmesh.dpgateway import source as sources
from privmesh.dpgateway.datasets import DatasetExists, DatasetStore, EtagMismatch, StoredDataset, encode_spec, now_us
from privmesh.dpgateway.engine import Budgeting, CompileError, DatasetEngine, ReleaseFailed, SourceUnavailable
from privmesh.dpgateway.ledger import WIDE, Budget, BudgetExceeded, Ledger, LedgerEntry, NoBudget, Reservation
from privmesh.dpgateway.ledger import EtagMismatch as BudgetEtagMismatch
from privmesh.dpgateway.loss import Loss, exact, unit_problems
from privmesh.dpgateway.plan import KeysMode, Plan, digest, plan_from_canonical, validate_plan
from privmesh.dpgateway.results import Estimate, NoisyComponent, Row, build_answer
from privmesh.dpgateway.schema import Accounting, DatasetSpec, Engine, validate_dataset
from privmesh.dpgateway.spark_engine import EngineProcess, SparkDatasetEngine
from privmesh.dpgateway.sql import ParsedSql
from privmesh.runtime.audit.log import AuditLog
from privmesh.runtime.context import current_principal
from privmesh.runtime.errors import (
    Aborted,
    AlreadyExists,
    FieldViolation,
    Internal,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)


@dataclass(frozen=True)
class Limits:
    """The most one query may spend (the server's configuration)."""

    epsilon: float = 10.0
    rho: float = 5.0
    delta: float = 1e-5


@dataclass(frozen=True)
class PrivacyRequest:
    loss: Loss | None  # None: target_accuracy
    target_accuracy: float = 0.0
    delta: float = 0.0
    alpha: float = 0.05


@dataclass(frozen=True)
class QueryInput:
    """A query as the servicer hands it over: a structured plan, or SQL parsed later against the schema."""

    dataset_id: str
    plan: Plan | None
    sql: ParsedSql | None
    keys_mode: KeysMode
    keys: tuple[tuple[Any, ...], ...]
    privacy: PrivacyRequest
    force_new_release: bool = False
    validate_only: bool = False
    request_id: str = ""
    fingerprint: str = ""  # of the whole request, for request_id reuse


@dataclass
class Release:
    release_id: str
    dataset_id: str
    plan: Plan
    query_digest: str
    rows: list[Row]
    accounting: Accounting
    privacy_loss: Loss
    charged: Loss
    remaining: Loss
    alpha: float
    partition_threshold: float
    cached: bool
    release_us: int
    truncated: bool


def encode_release(release: Release) -> str:
    """The stored form (never logged or audited): the plan and the rows, as released."""
    return json.dumps({"plan": release.plan.canonical(), "rows": [asdict(r) for r in release.rows],
                       "privacy_loss": asdict(release.privacy_loss), "alpha": release.alpha,
                       "threshold": release.partition_threshold, "release_us": release.release_us,
                       "truncated": release.truncated, "digest": release.query_digest,
                       "accounting": release.accounting.value}, separators=(",", ":"))


def decode_release(release_id: str, dataset_id: str, body: str) -> Release:
    data = json.loads(body)
    rows = [Row(tuple(r["key"]), tuple(Estimate(
        e["aggregate"], e["value"], e["mechanism"], e["noise_scale"], e["accuracy"], e["bin"],
        tuple(e["interval"]) if e["interval"] else None,
        tuple(NoisyComponent(**c) for c in e["components"])) for e in r["estimates"])) for r in data["rows"]]
    return Release(release_id, dataset_id, plan_from_canonical(data["plan"]), data["digest"], rows,
                   Accounting(data["accounting"]), Loss(**data["privacy_loss"]), Loss(), Loss(), data["alpha"],
                   data["threshold"], False, data["release_us"], data["truncated"])


def _refusal(field_path: str, message: str, reason: str) -> InvalidArgument:
    return InvalidArgument.single(field_path, message, reason)


def _over_budget(dataset_id: str, cap_holder: str, message: str) -> ResourceExhausted:
    """An exhausted privacy budget: a quota of the caller's (AIP-193), not a bad request."""
    quota = QuotaFailure(violations=[QuotaFailure.Violation(subject=f"datasets/{dataset_id}/budgets/{cap_holder}",
                                                            description=message)])
    return ResourceExhausted("BUDGET_EXCEEDED", message, violations=[FieldViolation("privacy", message)],
                             extra_details=[quota])


class GatewayService:
    def __init__(self, datasets: DatasetStore, ledger: Ledger, reader: sources.SourceReader, audit: AuditLog,
                 limits: Limits, authorize: Callable[[str], None], spark: EngineProcess | None = None) -> None:
        self.datasets = datasets
        self.ledger = ledger
        self.reader = reader
        self.audit = audit
        self.limits = limits
        self.authorize = authorize  # refuses unless the policy allows the current call on the resource
        self.spark = spark  # the Spark engine process, when this gateway runs one
        self._engines: dict[str, tuple[DatasetEngine | SparkDatasetEngine, int]] = {}
        self._engine_lock = asyncio.Lock()

    # --- datasets ------------------------------------------------------------------------------------------

    async def register_dataset(self, spec: DatasetSpec, request_id: str) -> StoredDataset:
        validate_dataset(spec)
        if spec.engine is Engine.SPARK and self.spark is None:
            raise _refusal("dataset.engine", "this gateway runs no Spark engine (service.spark_python)",
                           "ENGINE_UNAVAILABLE")
        principal = current_principal.get()
        fingerprint = hashlib.sha256(encode_spec(spec).encode() + spec.dataset_id.encode()).hexdigest()
        if request_id:
            earlier = await asyncio.to_thread(self.ledger.find_request, principal, "register:" + request_id)
            if earlier is not None:
                stored = await asyncio.to_thread(self.datasets.get, spec.dataset_id)
                if earlier.fingerprint != fingerprint or stored is None or stored.uid != earlier.release_id:
                    raise _refusal("request_id", "used before with a different request", "REQUEST_ID_CONFLICT")
                return stored
        try:
            opened = await asyncio.to_thread(self.reader.open, spec)
            await asyncio.to_thread(sources.check_declared_columns, spec, opened)
        except sources.SourceError as exc:
            raise _refusal("dataset.source.uri", str(exc), "SOURCE_UNREADABLE") from None
        except sources.SchemaMismatch as exc:
            raise _refusal(f"dataset.columns[{exc.column_index}]", exc.message, "SCHEMA_MISMATCH") from None
        await self.audit.append("RegisterDataset", resource=f"datasets/{spec.dataset_id}",
                                details={"accounting": spec.accounting.value, "columns": str(len(spec.columns)),
                                         "privacy_unit_column": spec.privacy_unit_column,
                                         "max_contributions": str(spec.max_contributions)})
        try:
            stored = await asyncio.to_thread(self.datasets.create, spec)
        except DatasetExists:
            raise AlreadyExists("DATASET_ALREADY_EXISTS", f"datasets/{spec.dataset_id} is registered already") from None
        if request_id:
            await asyncio.to_thread(self.ledger.remember_request, principal, "register:" + request_id, fingerprint,
                                    stored.uid)
        return stored

    async def find_dataset(self, dataset_id: str) -> StoredDataset | None:
        return await asyncio.to_thread(self.datasets.get, dataset_id)

    async def get_dataset(self, dataset_id: str) -> StoredDataset:
        stored = await asyncio.to_thread(self.datasets.get, dataset_id)
        if stored is None:
            raise NotFound("DATASET_NOT_FOUND", f"no dataset datasets/{dataset_id}")
        return stored

    async def list_datasets(self, after: str, limit: int) -> list[StoredDataset]:
        return await asyncio.to_thread(self.datasets.list, after, limit)

    async def delete_dataset(self, dataset_id: str, etag: str) -> None:
        stored = await self.get_dataset(dataset_id)
        await self.audit.append("DeleteDataset", resource=f"datasets/{dataset_id}", details={"uid": stored.uid})
        try:
            if not await asyncio.to_thread(self.datasets.delete, dataset_id, etag):
                raise NotFound("DATASET_NOT_FOUND", f"no dataset datasets/{dataset_id}")
        except EtagMismatch:
            raise Aborted("ETAG_MISMATCH", "the dataset changed since the given etag") from None
        self._engines.pop(stored.uid, None)

    # --- budgets -------------------------------------------------------------------------------------------

    async def set_budget(self, dataset_id: str, analyst: str, cap: Loss | None, etag: str) -> Budget:
        stored = await self.get_dataset(dataset_id)
        if cap is None and analyst != WIDE:
            raise _refusal("cap", "required for an analyst", "BUDGET_INVALID")
        if cap is not None:
            problems = unit_problems(cap, stored.spec.accounting, for_cap=True)
            if problems:
                raise InvalidArgument([FieldViolation(f"cap.{f}", why) for f, why in problems], "BUDGET_INVALID")
        details = {"analyst": analyst, "cap": "none" if cap is None else _loss_text(cap)}
        await self.audit.append("SetBudget", resource=f"datasets/{dataset_id}", details=details)
        try:
            return await asyncio.to_thread(self.ledger.set_budget, dataset_id, analyst, cap, etag,
                                           current_principal.get())
        except BudgetEtagMismatch:
            raise Aborted("ETAG_MISMATCH", "the budget changed since the given etag") from None

    async def get_budget(self, dataset_id: str, analyst: str) -> tuple[Budget, Budget | None]:
        stored = await asyncio.to_thread(self.datasets.get, dataset_id)
        budget = await asyncio.to_thread(self.ledger.get_budget, dataset_id, analyst)
        if budget is None and stored is None:
            raise NotFound("DATASET_NOT_FOUND", f"no dataset datasets/{dataset_id}")
        if budget is None:
            budget = Budget(dataset_id, analyst, None, exact(()), exact(()), 0, "")
        wide = None
        if analyst != WIDE:
            found = await asyncio.to_thread(self.ledger.get_budget, dataset_id, WIDE)
            wide = found if found is not None and found.cap is not None else None
        return budget, wide

    async def list_ledger(self, dataset_id: str, analyst: str, after: int, limit: int) -> list[LedgerEntry]:
        return await asyncio.to_thread(self.ledger.entries, dataset_id, analyst, after, limit)

    async def accounting_of(self, dataset_id: str) -> Accounting | None:
        stored = await asyncio.to_thread(self.datasets.get, dataset_id)
        return stored.spec.accounting if stored else None

    # --- queries -------------------------------------------------------------------------------------------

    async def _engine(self, stored: StoredDataset) -> DatasetEngine | SparkDatasetEngine:
        """The dataset's engine for the source as it is now (rebuilt when a file changes): its OpenDP context,
        or the Spark engine's view of it."""
        try:
            opened = await asyncio.to_thread(self.reader.open, stored.spec)
        except sources.SourceError:
            raise SourceUnavailable from None
        engine: DatasetEngine | SparkDatasetEngine
        async with self._engine_lock:
            found = self._engines.get(stored.uid)
            if found is not None and found[0].fingerprint == opened.fingerprint:
                engine, rows = found
            else:
                try:
                    rows = await asyncio.to_thread(sources.row_count, stored.spec, opened)
                    if stored.spec.engine is Engine.SPARK and self.spark is not None:
                        engine = SparkDatasetEngine(stored.spec, opened, self.spark)
                    else:
                        engine = await asyncio.to_thread(DatasetEngine, stored.spec, opened)
                except Exception:
                    raise SourceUnavailable from None
                self._engines[stored.uid] = (engine, rows)
        if rows > stored.spec.max_rows:
            raise SourceUnavailable
        return engine

    async def _queryable_dataset(self, query: QueryInput, analyst: str) -> StoredDataset:
        field_path = "sql" if query.sql is not None else "query.dataset"
        missing = _refusal(field_path, f"no dataset {query.dataset_id!r} on which you have a budget",
                           "DATASET_NOT_FOUND")
        self.authorize(f"datasets/{query.dataset_id}")  # the SQL's dataset is known only here
        stored = await asyncio.to_thread(self.datasets.get, query.dataset_id)
        if stored is None:
            raise missing
        budget = await asyncio.to_thread(self.ledger.get_budget, query.dataset_id, analyst)
        if budget is None or budget.cap is None:
            raise missing
        return stored

    def _plan(self, query: QueryInput, spec: DatasetSpec) -> Plan:
        if query.sql is None:
            assert query.plan is not None
            return validate_plan(spec, query.plan)
        try:
            return validate_plan(spec, query.sql.plan(spec, query.keys_mode, query.keys), "query")
        except InvalidArgument as exc:  # the plan's paths do not exist in a SQL request: name "sql"
            raise InvalidArgument([FieldViolation("sql", f"{v.field}: {v.description}") for v in exc.violations],
                                  exc.reason) from None

    def _check_privacy(self, privacy: PrivacyRequest, spec: DatasetSpec, plan: Plan) -> None:
        accounting = spec.accounting
        base = "privacy.privacy_loss"
        if not (math.isfinite(privacy.alpha) and 0 < privacy.alpha < 1):
            raise _refusal("privacy.alpha", "must be in (0, 1)", "PRIVACY_LOSS_INVALID")
        private = plan.keys_mode is KeysMode.PRIVATE and bool(plan.group_by)
        if privacy.loss is None:
            if not (math.isfinite(privacy.target_accuracy) and privacy.target_accuracy > 0):
                raise _refusal("privacy.target_accuracy", "must be finite and > 0", "PRIVACY_LOSS_INVALID")
            delta = privacy.delta
            field_delta = "privacy.delta"
        else:
            problems = unit_problems(privacy.loss, accounting, for_cap=False)
            if problems:
                raise InvalidArgument([FieldViolation(f"{base}.{f}", why) for f, why in problems],
                                      "PRIVACY_LOSS_INVALID")
            loss = privacy.loss
            if loss.epsilon > self.limits.epsilon or loss.rho > self.limits.rho:
                which = "rho" if accounting is Accounting.ZCDP else "epsilon"
                limit = self.limits.rho if accounting is Accounting.ZCDP else self.limits.epsilon
                raise _refusal(f"{base}.{which}", f"above the per-query limit {limit:g}", "PRIVACY_LOSS_INVALID")
            delta, field_delta = loss.delta, f"{base}.delta"
        if not (math.isfinite(delta) and 0 <= delta <= self.limits.delta):
            raise _refusal(field_delta, f"must be in [0, {self.limits.delta:g}]", "PRIVACY_LOSS_INVALID")
        if private and (accounting is Accounting.PURE_DP or delta <= 0):
            raise _refusal(field_delta, "grouping by private keys needs delta > 0 (not under PURE_DP)",
                           "DELTA_REQUIRED")

    @staticmethod
    def _budgeting(privacy: PrivacyRequest) -> Budgeting:
        if privacy.loss is not None:
            return Budgeting(privacy.loss, alpha=privacy.alpha)
        return Budgeting(None, privacy.target_accuracy, privacy.alpha)

    async def query(self, query: QueryInput) -> Release:
        analyst = current_principal.get()
        stored = await self._queryable_dataset(query, analyst)
        spec = stored.spec
        plan = self._plan(query, spec)
        self._check_privacy(query.privacy, spec, plan)
        privacy = query.privacy
        key = digest(plan, {"epsilon": privacy.loss.epsilon if privacy.loss else 0.0,
                            "delta": privacy.loss.delta if privacy.loss else privacy.delta,
                            "rho": privacy.loss.rho if privacy.loss else 0.0,
                            "target_accuracy": privacy.target_accuracy, "alpha": privacy.alpha})
        request = (analyst, query.request_id, query.fingerprint) if query.request_id else None
        if request is not None:
            earlier = await asyncio.to_thread(self.ledger.find_request, analyst, query.request_id)
            if earlier is not None:
                if earlier.fingerprint != query.fingerprint:
                    raise _refusal("request_id", "used before with a different request", "REQUEST_ID_CONFLICT")
                return await self._stored(earlier.release_id, stored, analyst, earlier.charged, cached=False)
        if not query.force_new_release and not query.validate_only:
            found = await asyncio.to_thread(self.ledger.find_release, analyst, stored.uid, key)
            if found is not None:
                return await self._repeat(found[0], stored, analyst, key, request)
        try:
            engine = await self._engine(stored)
        except SourceUnavailable:
            raise Unavailable("SOURCE_UNAVAILABLE", "the dataset's source cannot be read now; nothing was spent"
                              ) from None
        try:
            compiled = await asyncio.to_thread(engine.compile, key, plan, self._budgeting(privacy))
        except CompileError as exc:
            field_path = "sql" if query.sql is not None and exc.field_path == "query" else exc.field_path
            raise _refusal(field_path, exc.message, exc.reason) from None
        except (SourceUnavailable, ReleaseFailed):  # the Spark engine could not price a target accuracy
            raise Unavailable("SOURCE_UNAVAILABLE", "the Spark engine cannot plan this query now; nothing was "
                              "spent") from None
        cost = compiled.cost
        if privacy.loss is None and (cost.epsilon > self.limits.epsilon or cost.rho > self.limits.rho):
            raise _refusal("privacy.target_accuracy", "reaching it would cost more than the per-query limit",
                           "ACCURACY_UNREACHABLE")
        if query.validate_only:
            if isinstance(engine, SparkDatasetEngine):  # Tumult's scales, without reading values
                try:
                    compiled = await asyncio.to_thread(engine.describe, compiled)
                except (SourceUnavailable, ReleaseFailed):
                    raise Unavailable("SOURCE_UNAVAILABLE", "the Spark engine cannot plan this query now; "
                                      "nothing was spent") from None
            answer = build_answer(spec, plan, compiled, None, privacy.alpha)
            remaining = await asyncio.to_thread(self.ledger.remaining, spec.dataset_id, analyst)
            return Release("", spec.dataset_id, plan, key, answer.rows, spec.accounting, cost, Loss(), remaining,
                           privacy.alpha, float(compiled.threshold or 0), False, now_us(), False)
        reservation = await self._reserve(spec, analyst, cost, key)
        try:
            await self._audit_spend(spec.dataset_id, analyst, key, cost, reservation.remaining, "reserved")
        except Exception:
            await asyncio.to_thread(self.ledger.refund, reservation)
            raise
        try:
            await self._engine(stored)  # the source is still there: the last point where a refund is due
        except SourceUnavailable:
            await self._refund(reservation, spec.dataset_id, analyst, key)
            raise Unavailable("SOURCE_UNAVAILABLE", "the dataset's source cannot be read now; the reservation was "
                              "refunded") from None
        release_id = secrets.token_hex(16)
        try:
            frames = await asyncio.to_thread(engine.release, compiled)
        except SourceUnavailable:  # the Spark engine could not open the source: nothing was read
            await self._refund(reservation, spec.dataset_id, analyst, key)
            raise Unavailable("SOURCE_UNAVAILABLE", "the dataset's source cannot be read now; the reservation was "
                              "refunded") from None
        except ReleaseFailed:
            await asyncio.to_thread(self.ledger.commit, reservation, "", stored.uid, None, None)
            raise Internal("RELEASE_FAILED", "the query failed after reading data; its cost stays charged") from None
        answer = build_answer(spec, plan, compiled, frames, privacy.alpha)
        release = Release(release_id, spec.dataset_id, plan, key, answer.rows, spec.accounting, cost, cost, Loss(),
                          privacy.alpha, float(compiled.threshold or 0), False, now_us(), answer.truncated)
        release.remaining = await asyncio.to_thread(self.ledger.commit, reservation, release_id, stored.uid,
                                                    encode_release(release), request)
        return release

    async def _reserve(self, spec: DatasetSpec, analyst: str, cost: Loss, key: str) -> Reservation:
        try:
            return await asyncio.to_thread(self.ledger.reserve, spec.dataset_id, analyst, cost, key, analyst)
        except NoBudget:
            raise _refusal("query.dataset", f"no dataset {spec.dataset_id!r} on which you have a budget",
                           "DATASET_NOT_FOUND") from None
        except BudgetExceeded as exc:
            await self.audit.append("SpendBudget", resource=f"datasets/{spec.dataset_id}", outcome="DENIED",
                                    details={"analyst": analyst, "query_digest": key, "cost": _loss_text(cost),
                                             "reason": f"BUDGET_EXCEEDED ({exc.which} cap)"})
            raise _over_budget(spec.dataset_id, analyst if exc.which == "analyst" else WIDE,
                               f"the cost ({_loss_text(cost)}) exceeds what remains of the {exc.which} cap") from None

    async def _audit_spend(self, dataset_id: str, analyst: str, key: str, cost: Loss, remaining: Loss,
                           state: str) -> None:
        await self.audit.append("SpendBudget", resource=f"datasets/{dataset_id}",
                                details={"analyst": analyst, "query_digest": key, "cost": _loss_text(cost),
                                         "remaining": _loss_text(remaining), "state": state})

    async def _refund(self, reservation: Reservation, dataset_id: str, analyst: str, key: str) -> None:
        await asyncio.to_thread(self.ledger.refund, reservation)
        remaining = await asyncio.to_thread(self.ledger.remaining, dataset_id, analyst)
        await self._audit_spend(dataset_id, analyst, key, Loss(), remaining, "refunded")

    async def _repeat(self, release_id: str, stored: StoredDataset, analyst: str, key: str,
                      request: tuple[str, str, str] | None) -> Release:
        remaining = await asyncio.to_thread(self.ledger.record_repeat, stored.spec.dataset_id, analyst, key,
                                            release_id, analyst, request)
        await self._audit_spend(stored.spec.dataset_id, analyst, key, Loss(), remaining, "cached repeat")
        release = await self._stored(release_id, stored, analyst, Loss(), cached=True)
        release.remaining = remaining
        return release

    async def _stored(self, release_id: str, stored: StoredDataset, analyst: str, charged: Loss,
                      cached: bool) -> Release:
        body = await asyncio.to_thread(self.ledger.release_body, release_id)
        if body is None:
            raise Internal("RELEASE_MISSING", "the stored release cannot be found")
        release = decode_release(release_id, stored.spec.dataset_id, body)
        remaining = await asyncio.to_thread(self.ledger.remaining, stored.spec.dataset_id, analyst)
        return replace(release, charged=charged, cached=cached, remaining=remaining)


def _loss_text(loss: Loss) -> str:
    return f"epsilon={loss.epsilon:.6g},delta={loss.delta:.6g},rho={loss.rho:.6g}"
