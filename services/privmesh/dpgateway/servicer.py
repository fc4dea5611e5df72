"""DPGateway over gRPC: translates protobuf <-> the domain service and its errors."""

from __future__ import annotations

import hashlib
import math
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from privmesh.dpgateway.datasets import StoredDataset
from privmesh.dpgateway.gateway_service import GatewayService, PrivacyRequest, QueryInput, Release
from privmesh.dpgateway.ledger import WIDE, Budget, LedgerEntry
from privmesh.dpgateway.loss import Loss
from privmesh.dpgateway.plan import Aggregate, Filter, Function, KeysMode, Operator, Plan
from privmesh.dpgateway.results import Estimate
from privmesh.dpgateway.schema import (
    DATASET_ID,
    DEFAULT_MAX_ROWS,
    Accounting,
    Column,
    ColumnType,
    DataFormat,
    DatasetSpec,
    Engine,
    Scalar,
    Source,
    infer_format,
)
from privmesh.dpgateway.sql import parse_sql
from privmesh.dpgateway.v1 import dpgateway_pb2 as pb
from privmesh.dpgateway.v1 import dpgateway_pb2_grpc
from privmesh.runtime.authz import Authorizer
from privmesh.runtime.context import CallContext, current_principal
from privmesh.runtime.errors import InvalidArgument
from privmesh.runtime.paging import decode_token, name_page, page_size, visible_page

MAX_REQUEST_BYTES = 1024 * 1024


def _ts_us(micros: int) -> Timestamp:
    return Timestamp(seconds=micros // 1_000_000, nanos=(micros % 1_000_000) * 1000)


def scalar_of(value: pb.Value) -> Scalar:
    kind = value.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return None
    result: Scalar = getattr(value, kind)
    return result


def value_of(scalar: Scalar, column_type: ColumnType | None = None) -> pb.Value:
    if scalar is None:
        return pb.Value(null_value="NULL_VALUE")
    if isinstance(scalar, bool):
        return pb.Value(bool_value=scalar)
    if isinstance(scalar, int) and column_type is not ColumnType.FLOAT64:
        return pb.Value(int_value=scalar)
    if isinstance(scalar, int | float):
        return pb.Value(float_value=float(scalar))
    return pb.Value(string_value=scalar)


def _name(name: str, field_path: str) -> str:
    dataset_id = name.removeprefix("datasets/")
    if not name.startswith("datasets/") or not DATASET_ID.match(dataset_id):
        raise InvalidArgument.single(field_path, "must be datasets/{dataset}")
    return dataset_id


def spec_from_proto(dataset_id: str, msg: pb.Dataset) -> DatasetSpec:
    columns = []
    for i, c in enumerate(msg.columns):
        if c.type == pb.COLUMN_TYPE_UNSPECIFIED:
            raise InvalidArgument.single(f"dataset.columns[{i}].type", "required", "SCHEMA_INVALID")
        columns.append(Column(c.name, ColumnType(pb.ColumnType.Name(c.type).removeprefix("COLUMN_TYPE_")),
                              c.nullable, (c.bounds.lower, c.bounds.upper) if c.HasField("bounds") else None,
                              tuple(scalar_of(v) for v in c.categories),
                              scalar_of(c.fill_value) if c.HasField("fill_value") else None, c.description))
    source = msg.source
    fmt = (DataFormat(pb.DataFormat.Name(source.format).removeprefix("DATA_FORMAT_"))
           if source.format else infer_format(source.uri))
    if fmt is None:
        raise InvalidArgument.single("dataset.source.format", "required: the URI ends neither in .csv nor .parquet",
                                     "SCHEMA_INVALID")
    accounting = (Accounting(pb.PrivacyAccounting.Name(msg.accounting).removeprefix("PRIVACY_ACCOUNTING_"))
                  if msg.accounting else Accounting.ZCDP)
    contributions = msg.max_contributions_per_unit or 1
    return DatasetSpec(dataset_id, Source(source.uri, fmt, source.csv.delimiter or ",", source.csv.headerless),
                       tuple(columns), msg.privacy_unit_column, contributions, msg.max_groups_per_unit, accounting,
                       msg.max_rows or DEFAULT_MAX_ROWS, msg.description,
                       Engine(pb.DatasetEngine.Name(msg.engine).removeprefix("DATASET_ENGINE_"))
                       if msg.engine else Engine.POLARS)


def dataset_to_proto(stored: StoredDataset) -> pb.Dataset:
    spec = stored.spec
    columns = []
    for c in spec.columns:
        column = pb.ColumnSchema(name=c.name, type="COLUMN_TYPE_" + c.type.value,
                                 nullable=c.nullable, categories=[value_of(v, c.type) for v in c.categories],
                                 description=c.description)
        if c.bounds is not None:
            column.bounds.CopyFrom(pb.Bounds(lower=c.bounds[0], upper=c.bounds[1]))
        if c.fill_value is not None:
            column.fill_value.CopyFrom(value_of(c.fill_value, c.type))
        columns.append(column)
    return pb.Dataset(
        name=f"datasets/{spec.dataset_id}", description=spec.description,
        source=pb.DataSource(uri=spec.source.uri, format="DATA_FORMAT_" + spec.source.format.value,
                             csv=pb.CsvOptions(delimiter=spec.source.delimiter, headerless=spec.source.headerless)),
        columns=columns, privacy_unit_column=spec.privacy_unit_column,
        max_contributions_per_unit=spec.max_contributions, max_groups_per_unit=spec.max_groups,
        accounting="PRIVACY_ACCOUNTING_" + spec.accounting.value, uid=stored.uid,
        create_time=_ts_us(stored.create_us), etag=stored.etag, max_rows=spec.max_rows,
        engine="DATASET_ENGINE_" + spec.engine.value)


def _keys(msg: pb.GroupKeys) -> tuple[KeysMode, tuple[tuple[Scalar, ...], ...]]:
    mode = KeysMode(pb.GroupKeysMode.Name(msg.mode).removeprefix("GROUP_KEYS_MODE_")) if msg.mode else KeysMode.DECLARED
    return mode, tuple(tuple(scalar_of(v) for v in key.values) for key in msg.keys)


def plan_from_proto(msg: pb.StructuredQuery) -> Plan:
    aggregates = []
    for i, a in enumerate(msg.aggregates):
        if a.function == pb.AGGREGATE_FUNCTION_UNSPECIFIED:
            raise InvalidArgument.single(f"query.aggregates[{i}].function", "required", "QUERY_INVALID")
        function = Function(pb.AggregateFunction.Name(a.function).removeprefix("AGGREGATE_FUNCTION_"))
        aggregates.append(Aggregate(function, a.column, a.alias, tuple(a.quantiles), tuple(a.candidates), a.weight))
    filters = []
    for i, f in enumerate(msg.filters):
        if f.operator == pb.FILTER_OPERATOR_UNSPECIFIED:
            raise InvalidArgument.single(f"query.filters[{i}].operator", "required", "QUERY_INVALID")
        operator = Operator(pb.FilterOperator.Name(f.operator).removeprefix("FILTER_OPERATOR_"))
        filters.append(Filter(f.column, operator, tuple(scalar_of(v) for v in f.values)))
    mode, keys = _keys(msg.group_keys)
    return Plan(msg.dataset.removeprefix("datasets/"), tuple(aggregates), tuple(filters), tuple(msg.group_by), mode,
                keys)


def plan_to_proto(plan: Plan, spec_types: dict[str, ColumnType]) -> pb.StructuredQuery:
    return pb.StructuredQuery(
        dataset=f"datasets/{plan.dataset_id}",
        filters=[pb.Filter(column=f.column, operator="FILTER_OPERATOR_" + f.operator.value,
                           values=[value_of(v, spec_types.get(f.column)) for v in f.values]) for f in plan.filters],
        group_by=list(plan.group_by),
        group_keys=pb.GroupKeys(mode="GROUP_KEYS_MODE_" + plan.keys_mode.value,
                                keys=[pb.GroupKey(values=[value_of(v, spec_types.get(c))
                                                          for v, c in zip(k, plan.group_by, strict=True)])
                                      for k in plan.keys]) if plan.group_by else None,
        aggregates=[pb.Aggregate(alias=a.alias,
                                 function="AGGREGATE_FUNCTION_" + a.function.value,
                                 column=a.column, quantiles=a.quantiles, candidates=a.candidates, weight=a.weight)
                    for a in plan.aggregates])


def privacy_from_proto(msg: pb.PrivacySpec) -> PrivacyRequest:
    alpha = msg.alpha if msg.alpha else 0.05
    which = msg.WhichOneof("budget")
    if which == "privacy_loss":
        loss = msg.privacy_loss
        return PrivacyRequest(Loss(loss.epsilon, loss.delta, loss.rho), alpha=alpha)
    if which == "target_accuracy":
        return PrivacyRequest(None, msg.target_accuracy, msg.delta, alpha)
    raise InvalidArgument.single("privacy.privacy_loss", "a privacy_loss or a target_accuracy is required",
                                 "PRIVACY_LOSS_INVALID")


def loss_to_proto(loss: Loss) -> pb.PrivacyLoss:
    return pb.PrivacyLoss(epsilon=loss.epsilon, delta=loss.delta, rho=loss.rho)


def _mechanism(name: str) -> int:
    return int(pb.Mechanism.Value("MECHANISM_" + name))


def _estimate(e: Estimate) -> pb.Estimate:
    out = pb.Estimate(aggregate=e.aggregate, bin=e.bin, value=e.value, mechanism=_mechanism(e.mechanism),  # type: ignore[arg-type]
                      noise_scale=e.noise_scale, accuracy=e.accuracy,
                      components=[pb.NoisyComponent(name=c.name, value=c.value, mechanism=_mechanism(c.mechanism),  # type: ignore[arg-type]
                                                    noise_scale=c.noise_scale, accuracy=c.accuracy)
                                  for c in e.components])
    if e.interval is not None:
        out.confidence_interval.CopyFrom(pb.ConfidenceInterval(lower=e.interval[0], upper=e.interval[1]))
    return out


def release_to_proto(release: Release, types: dict[str, ColumnType]) -> pb.Release:
    return pb.Release(
        release_id=release.release_id, dataset=f"datasets/{release.dataset_id}",
        plan=plan_to_proto(release.plan, types), query_digest=release.query_digest,
        rows=[pb.ResultRow(group_key=[value_of(v, types.get(c)) for v, c in zip(r.key, release.plan.group_by,
                                                                                 strict=True)],
                           estimates=[_estimate(e) for e in r.estimates]) for r in release.rows],
        accounting="PRIVACY_ACCOUNTING_" + release.accounting.value,
        privacy_loss=loss_to_proto(release.privacy_loss), charged=loss_to_proto(release.charged),
        remaining=loss_to_proto(release.remaining), alpha=release.alpha,
        partition_threshold=release.partition_threshold, cached=release.cached,
        release_time=_ts_us(release.release_us), truncated=release.truncated)


def budget_to_proto(budget: Budget, accounting: Accounting | None) -> pb.Budget:
    out = pb.Budget(dataset=f"datasets/{budget.dataset_id}", analyst=budget.analyst,
                    accounting=("PRIVACY_ACCOUNTING_" + accounting.value
                                if accounting else None),
                    spent=loss_to_proto(budget.spent), reserved=loss_to_proto(budget.reserved),
                    remaining=loss_to_proto(budget.remaining), etag=budget.etag)
    if budget.cap is not None:
        out.cap.CopyFrom(loss_to_proto(budget.cap))
    if budget.update_us:
        out.update_time.CopyFrom(_ts_us(budget.update_us))
    return out


def entry_to_proto(entry: LedgerEntry) -> pb.LedgerEntry:
    out = pb.LedgerEntry(
        sequence=entry.sequence, time=_ts_us(entry.time_us),
        kind="LEDGER_ENTRY_KIND_" + entry.kind, dataset=f"datasets/{entry.dataset_id}",
        analyst=entry.analyst, principal=entry.principal,
        state="SPEND_STATE_" + entry.state if entry.state else None,
        query_digest=entry.query_digest, release_id=entry.release_id, cached=entry.cached,
        remaining=loss_to_proto(entry.remaining), update_time=_ts_us(entry.update_us))
    if entry.kind == "SPEND":
        out.reserved.CopyFrom(loss_to_proto(entry.reserved))
        out.charged.CopyFrom(loss_to_proto(entry.charged))
    if entry.cap is not None:
        out.cap.CopyFrom(loss_to_proto(entry.cap))
    return out


def _fingerprint(request: Any) -> str:
    copy = type(request)()
    copy.CopyFrom(request)
    copy.request_id = ""
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


def _check_size(request: Any) -> None:
    if request.ByteSize() > MAX_REQUEST_BYTES:
        raise InvalidArgument.single("request", f"encodes to more than {MAX_REQUEST_BYTES} bytes", "QUERY_INVALID")


def _check_loss_finite(privacy: PrivacyRequest) -> None:
    values = [privacy.target_accuracy, privacy.delta, privacy.alpha]
    if privacy.loss is not None:
        values += [privacy.loss.epsilon, privacy.loss.delta, privacy.loss.rho]
    if not all(math.isfinite(v) for v in values):
        raise InvalidArgument.single("privacy", "every number must be finite", "PRIVACY_LOSS_INVALID")


class DPGatewayServicer(dpgateway_pb2_grpc.DPGatewayServicer):
    def __init__(self, service: GatewayService, authorizer: Authorizer) -> None:
        self._service = service
        self._authorizer = authorizer

    async def RegisterDataset(self, request: pb.RegisterDatasetRequest,
                              context: CallContext) -> pb.RegisterDatasetResponse:
        if request.dataset.ByteSize() > MAX_REQUEST_BYTES:
            raise InvalidArgument.single("dataset", f"encodes to more than {MAX_REQUEST_BYTES} bytes",
                                         "SCHEMA_INVALID")
        spec = spec_from_proto(request.dataset_id, request.dataset)
        stored = await self._service.register_dataset(spec, request.request_id)
        return pb.RegisterDatasetResponse(dataset=dataset_to_proto(stored))

    async def GetDataset(self, request: pb.GetDatasetRequest,
                         context: CallContext) -> pb.GetDatasetResponse:
        dataset_id = _name(request.name, "name")
        return pb.GetDatasetResponse(dataset=dataset_to_proto(await self._service.get_dataset(dataset_id)))

    async def ListDatasets(self, request: pb.ListDatasetsRequest,
                           context: CallContext) -> pb.ListDatasetsResponse:
        limit, after = name_page(request)

        async def fetch(start: str | None, count: int) -> list[pb.Dataset]:
            return [dataset_to_proto(d) for d in await self._service.list_datasets(start or "", count)]

        page, token = await visible_page(fetch, after, limit, lambda d: d.name.removeprefix("datasets/"),
                                         self._authorizer.visible)
        return pb.ListDatasetsResponse(datasets=page, next_page_token=token)

    async def DeleteDataset(self, request: pb.DeleteDatasetRequest,
                            context: CallContext) -> pb.DeleteDatasetResponse:
        dataset_id = _name(request.name, "name")
        await self._service.delete_dataset(dataset_id, request.etag)
        return pb.DeleteDatasetResponse()

    async def _types(self, dataset_id: str) -> dict[str, ColumnType]:
        stored = await self._service.find_dataset(dataset_id)
        return {c.name: c.type for c in stored.spec.columns} if stored else {}

    async def Query(self, request: pb.QueryRequest, context: CallContext) -> pb.QueryResponse:
        _check_size(request)
        privacy = privacy_from_proto(request.privacy)
        _check_loss_finite(privacy)
        dataset_id = request.query.dataset.removeprefix("datasets/")
        if not request.query.dataset.startswith("datasets/") or not DATASET_ID.match(dataset_id):
            raise InvalidArgument.single("query.dataset", "no such dataset on which you have a budget",
                                         "DATASET_NOT_FOUND")
        plan = plan_from_proto(request.query)
        query = QueryInput(dataset_id, plan, None, plan.keys_mode, plan.keys, privacy, request.force_new_release,
                           request.validate_only, request.request_id, _fingerprint(request))
        release = await self._service.query(query)
        return pb.QueryResponse(release=release_to_proto(release, await self._types(dataset_id)))

    async def QuerySql(self, request: pb.QuerySqlRequest, context: CallContext) -> pb.QuerySqlResponse:
        _check_size(request)
        privacy = privacy_from_proto(request.privacy)
        _check_loss_finite(privacy)
        parsed = parse_sql(request.sql)
        mode, keys = _keys(request.group_keys)
        query = QueryInput(parsed.dataset_id, None, parsed, mode, keys, privacy, request.force_new_release,
                           request.validate_only, request.request_id, _fingerprint(request))
        release = await self._service.query(query)
        return pb.QuerySqlResponse(release=release_to_proto(release, await self._types(parsed.dataset_id)))

    async def SetBudget(self, request: pb.SetBudgetRequest, context: CallContext) -> pb.SetBudgetResponse:
        dataset_id = _name(request.dataset, "dataset")
        analyst = _analyst(request.analyst, required=True)
        cap = Loss(request.cap.epsilon, request.cap.delta, request.cap.rho) if request.HasField("cap") else None
        budget = await self._service.set_budget(dataset_id, analyst, cap, request.etag)
        return pb.SetBudgetResponse(budget=budget_to_proto(budget, await self._service.accounting_of(dataset_id)))

    async def GetBudget(self, request: pb.GetBudgetRequest, context: CallContext) -> pb.GetBudgetResponse:
        dataset_id = _name(request.dataset, "dataset")
        # Another analyst's budget needs the "datasets/{dataset}:analysts" view, checked by the runtime.
        analyst = _analyst(request.analyst, required=False) or current_principal.get()
        budget, wide = await self._service.get_budget(dataset_id, analyst)
        accounting = await self._service.accounting_of(dataset_id)
        reply = pb.GetBudgetResponse(budget=budget_to_proto(budget, accounting))
        if wide is not None:
            reply.dataset_budget.CopyFrom(budget_to_proto(wide, accounting))
        return reply

    async def ListLedger(self, request: pb.ListLedgerRequest,
                         context: CallContext) -> pb.ListLedgerResponse:
        dataset_id = _name(request.dataset, "dataset") if request.dataset else ""
        analyst = _analyst(request.analyst, required=False)
        limit = page_size(request.page_size, 100, 1000)
        after = int(decode_token(request.page_token, int) or 0)

        async def fetch(start: int | None, count: int) -> list[pb.LedgerEntry]:
            return [entry_to_proto(e) for e in await self._service.list_ledger(dataset_id, analyst, start or 0, count)]

        # Entries of datasets the caller may not list, and other analysts' without the ":analysts" view, are
        # filtered before paging.
        page, token = await visible_page(fetch, after, limit, lambda e: e.sequence, self._authorizer.visible)
        return pb.ListLedgerResponse(entries=page, next_page_token=token)


def _analyst(value: str, required: bool) -> str:
    if not value:
        if required:
            raise InvalidArgument.single("analyst", "required: a SPIFFE ID or '*'", "BUDGET_INVALID")
        return ""
    if value != WIDE and (not value.startswith("spiffe://") or len(value) > 2048):
        raise InvalidArgument.single("analyst", "a SPIFFE ID or '*'", "BUDGET_INVALID")
    return value
