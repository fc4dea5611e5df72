"""dp-gateway over real mTLS: datasets, structured and SQL queries, cached repeats, accuracy targets,
uniform refusals that spend nothing, budgets, the ledger, idempotent retries, and the audit of every spend."""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import sqlite3
from pathlib import Path

import grpc
import polars as pl
import pytest

from privmesh.dpgateway.v1 import dpgateway_pb2 as pb
from privmesh.runtime.errors import read_error
from tests.conftest import spiffe
from tests.dpgateway.conftest import (
    ANALYST,
    OTHER,
    Gateway,
    count_query,
    eps,
    patients_dataset,
    register_patients,
    rho,
)

F = pb.AggregateFunction


async def snapshot(gw: Gateway) -> tuple[list[bytes], list[bytes]]:
    """Everything a refusal must leave unchanged: every ledger entry and both analysts' budgets."""
    entries = (await gw.admin.ListLedger(pb.ListLedgerRequest(page_size=1000))).entries
    budgets = [await gw.admin.GetBudget(pb.GetBudgetRequest(dataset="datasets/patients", analyst=spiffe(name)))
               for name in (ANALYST, OTHER)]
    return [e.SerializeToString() for e in entries], [b.SerializeToString() for b in budgets]


def audit_rows(tmp_path: Path) -> list[tuple[str, str, dict[str, str]]]:
    with sqlite3.connect(tmp_path / "audit.db") as conn:
        rows = conn.execute("SELECT operation, outcome, details FROM audit_entries ORDER BY sequence").fetchall()
    return [(r[0], r[1], json.loads(r[2])) for r in rows]


@pytest.fixture
async def ready(gateway: Gateway, patients_csv: Path) -> Gateway:
    await register_patients(gateway, str(patients_csv))
    return gateway


async def test_datasets_register_get_list_delete_keep_the_ledger(gateway: Gateway, patients_csv: Path) -> None:
    registered = await register_patients(gateway, str(patients_csv))
    assert registered.name == "datasets/patients" and registered.uid and registered.max_rows == 100_000
    assert registered.source.format == pb.DATA_FORMAT_CSV  # inferred from the extension
    got = (await gateway.analyst.GetDataset(pb.GetDatasetRequest(name="datasets/patients"))).dataset
    assert got == registered
    await register_patients(gateway, str(patients_csv), dataset_id="patients_b")
    first = await gateway.admin.ListDatasets(pb.ListDatasetsRequest(page_size=1))
    assert [d.name for d in first.datasets] == ["datasets/patients"] and first.next_page_token
    second = await gateway.admin.ListDatasets(pb.ListDatasetsRequest(page_size=1, page_token=first.next_page_token))
    assert [d.name for d in second.datasets] == ["datasets/patients_b"] and not second.next_page_token
    await gateway.analyst.Query(pb.QueryRequest(query=count_query(), privacy=rho(0.5)))
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await gateway.admin.DeleteDataset(pb.DeleteDatasetRequest(name="datasets/patients", etag="stale"))
    assert read_error(exc.value).code == grpc.StatusCode.ABORTED
    await gateway.admin.DeleteDataset(pb.DeleteDatasetRequest(name="datasets/patients", etag=registered.etag))
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await gateway.admin.GetDataset(pb.GetDatasetRequest(name="datasets/patients"))
    assert read_error(exc.value).code == grpc.StatusCode.NOT_FOUND
    again = (await gateway.admin.RegisterDataset(pb.RegisterDatasetRequest(
        dataset_id="patients", dataset=patients_dataset(str(patients_csv))))).dataset
    assert again.uid != registered.uid
    budget = (await gateway.analyst.GetBudget(pb.GetBudgetRequest(dataset="datasets/patients"))).budget
    assert budget.spent.rho == pytest.approx(0.5, rel=1e-6)  # re-registration continues the ledger


async def test_register_refuses_bad_declarations_and_changes_nothing(gateway: Gateway, patients_csv: Path,
                                                                     tmp_path: Path) -> None:
    parquet = tmp_path / "p.parquet"
    pl.read_csv(patients_csv).drop("bmi").write_parquet(parquet)
    bad_bounds = patients_dataset(str(patients_csv))
    bad_bounds.columns[2].bounds.CopyFrom(pb.Bounds(lower=90, upper=18))
    cases = [
        ("Bad-Id", patients_dataset(str(patients_csv)), "dataset_id", "SCHEMA_INVALID"),
        ("p1", bad_bounds, "dataset.columns[2].bounds", "SCHEMA_INVALID"),
        ("p2", patients_dataset("relative/path.csv"), "dataset.source.uri", "SCHEMA_INVALID"),
        ("p3", patients_dataset(str(tmp_path / "missing.csv")), "dataset.source.uri", "SOURCE_UNREADABLE"),
        ("p4", patients_dataset(str(parquet)), "dataset.columns[5]", "SCHEMA_MISMATCH"),
        ("p5", patients_dataset(str(patients_csv), max_rows=2**33), "dataset.max_rows", "SCHEMA_INVALID"),
    ]
    for dataset_id, dataset, field, reason in cases:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await gateway.admin.RegisterDataset(pb.RegisterDatasetRequest(dataset_id=dataset_id, dataset=dataset))
        error = read_error(exc.value)
        assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason), dataset_id
        assert field in [v.field for v in error.violations], (dataset_id, error.violations)
    assert not (await gateway.admin.ListDatasets(pb.ListDatasetsRequest())).datasets


async def test_structured_and_sql_queries_give_the_same_plan_and_a_repeat_is_free(ready: Gateway,
                                                                                  tmp_path: Path) -> None:
    query = pb.StructuredQuery(
        dataset="datasets/patients",
        filters=[pb.Filter(column="age", operator=pb.FILTER_OPERATOR_GREATER_OR_EQUAL,
                           values=[pb.Value(int_value=40)])],
        aggregates=[pb.Aggregate(function=F.AGGREGATE_FUNCTION_COUNT),
                    pb.Aggregate(function=F.AGGREGATE_FUNCTION_MEAN, column="bmi")])
    structured = (await ready.analyst.Query(pb.QueryRequest(query=query, privacy=rho(0.4)))).release
    sql = (await ready.analyst.QuerySql(pb.QuerySqlRequest(
        sql="SELECT COUNT(*), AVG(bmi) FROM patients WHERE age >= 40", privacy=rho(0.4)))).release
    assert structured.query_digest == sql.query_digest and sql.cached and sql.release_id == structured.release_id
    assert sql.charged == pb.PrivacyLoss() and structured.charged.rho == pytest.approx(0.4, rel=1e-6)
    assert structured.charged.rho <= 0.4 and sql.rows == structured.rows
    [row] = structured.rows
    count, mean = row.estimates
    assert count.mechanism == pb.MECHANISM_GAUSSIAN and count.noise_scale > 0
    assert count.confidence_interval.lower < count.value < count.confidence_interval.upper
    assert [c.name for c in mean.components] == ["count", "sum"] and 15 <= mean.value <= 45
    fresh = (await ready.analyst.Query(pb.QueryRequest(query=query, privacy=rho(0.4), force_new_release=True))).release
    assert not fresh.cached and fresh.release_id != structured.release_id
    assert fresh.remaining.rho == pytest.approx(5 - 0.8, rel=1e-6)
    spends = [d for op, _, d in audit_rows(tmp_path) if op == "SpendBudget"]
    assert [d["state"] for d in spends] == ["reserved", "cached repeat", "reserved"]
    assert all(d["query_digest"] == structured.query_digest and d["analyst"] == spiffe(ANALYST) for d in spends)
    assert "rho=0.4" in spends[0]["cost"] and "remaining" in spends[0]
    released_values = {f"{e.value}" for e in row.estimates} | {f"{c.value}" for c in mean.components}
    audit_text = json.dumps(audit_rows(tmp_path))
    assert not any(value in audit_text for value in released_values)  # never the result


async def test_group_by_histogram_quantiles_and_private_keys(ready: Gateway, patients_frame: pl.DataFrame) -> None:
    grouped = (await ready.analyst.QuerySql(pb.QuerySqlRequest(
        sql="SELECT hospital, COUNT(*) AS n, MEDIAN(age) FROM patients GROUP BY hospital", privacy=rho(0.5)))).release
    assert [r.group_key[0].string_value for r in grouped.rows] == ["st-mary", "general", "riverside"]
    assert all([e.aggregate for e in r.estimates] == ["n", "quantile_age"] for r in grouped.rows)
    median = grouped.rows[0].estimates[1]
    assert median.mechanism == pb.MECHANISM_REPORT_NOISY_MAX and median.bin == "0.5" and 18 <= median.value <= 90
    histogram = (await ready.analyst.Query(pb.QueryRequest(query=pb.StructuredQuery(
        dataset="datasets/patients",
        aggregates=[pb.Aggregate(function=F.AGGREGATE_FUNCTION_HISTOGRAM, column="diagnosis")]),
        privacy=rho(0.5)))).release
    [row] = histogram.rows
    assert [e.bin for e in row.estimates] == ["healthy", "hypertension", "diabetes", "asthma", "cardiac"]
    exact = patients_frame.group_by("diagnosis").len()
    for estimate in row.estimates:  # rho 0.5 on one count per person: the noise is small at n=400
        truth = exact.filter(pl.col("diagnosis") == estimate.bin)["len"][0]
        assert abs(estimate.value - truth) <= 6 * estimate.noise_scale
    private = (await ready.analyst.Query(pb.QueryRequest(
        query=count_query(group_by=["sex"], group_keys=pb.GroupKeys(mode=pb.GROUP_KEYS_MODE_PRIVATE)),
        privacy=pb.PrivacySpec(privacy_loss=pb.PrivacyLoss(rho=0.5, delta=1e-6))))).release
    assert sorted(r.group_key[0].string_value for r in private.rows) == ["F", "M"]
    assert private.partition_threshold > 0 and 0 < private.charged.delta <= 1e-6


async def test_target_accuracy_and_validate_only(ready: Gateway) -> None:
    spec = pb.PrivacySpec(target_accuracy=10.0, alpha=0.05)
    planned = (await ready.analyst.Query(pb.QueryRequest(query=count_query(), privacy=spec,
                                                         validate_only=True))).release
    assert not planned.release_id and planned.charged == pb.PrivacyLoss() and planned.privacy_loss.rho > 0
    [estimate] = planned.rows[0].estimates
    assert estimate.accuracy <= 10.0 and estimate.value == 0
    released = (await ready.analyst.Query(pb.QueryRequest(query=count_query(), privacy=spec))).release
    assert released.charged.rho == pytest.approx(planned.privacy_loss.rho)
    assert released.rows[0].estimates[0].accuracy <= 10.0
    budget = (await ready.analyst.GetBudget(pb.GetBudgetRequest(dataset="datasets/patients"))).budget
    assert budget.spent.rho == pytest.approx(planned.privacy_loss.rho)  # validate_only spent nothing


BAD = [
    ("unknown dataset", pb.QueryRequest(query=count_query("datasets/nope"), privacy=rho(0.1)),
     "query.dataset", "DATASET_NOT_FOUND"),
    ("unknown column", pb.QueryRequest(query=pb.StructuredQuery(
        dataset="datasets/patients", aggregates=[pb.Aggregate(function=F.AGGREGATE_FUNCTION_SUM, column="salary")]),
        privacy=rho(0.1)), "query.aggregates[0].column", "COLUMN_NOT_FOUND"),
    ("bounds missing", pb.QueryRequest(query=pb.StructuredQuery(
        dataset="datasets/patients", aggregates=[pb.Aggregate(function=F.AGGREGATE_FUNCTION_MEAN, column="sex")]),
        privacy=rho(0.1)), "query.aggregates[0].column", "COLUMN_TYPE_MISMATCH"),
    ("rho zero", pb.QueryRequest(query=count_query(), privacy=rho(0.0)), "privacy.privacy_loss.rho",
     "PRIVACY_LOSS_INVALID"),
    ("rho absurd", pb.QueryRequest(query=count_query(), privacy=rho(1e9)), "privacy.privacy_loss.rho",
     "PRIVACY_LOSS_INVALID"),
    ("epsilon on zCDP", pb.QueryRequest(query=count_query(), privacy=eps(1.0)),
     "privacy.privacy_loss.epsilon privacy.privacy_loss.rho", "PRIVACY_LOSS_INVALID"),
    ("rho nan", pb.QueryRequest(query=count_query(), privacy=rho(math.nan)), "privacy", "PRIVACY_LOSS_INVALID"),
    ("private keys without delta", pb.QueryRequest(query=count_query(
        group_by=["sex"], group_keys=pb.GroupKeys(mode=pb.GROUP_KEYS_MODE_PRIVATE)), privacy=rho(0.1)),
     "privacy.privacy_loss.delta", "DELTA_REQUIRED"),
    ("declared keys without categories", pb.QueryRequest(query=count_query(group_by=["age"]), privacy=rho(0.1)),
     "query.group_by[0]", "CATEGORIES_MISSING"),
]
BAD_SQL = [
    ("not SQL", "SELEC COUNT(*) FRM patients", "SQL_SYNTAX_ERROR"),
    ("not a select", "DELETE FROM patients", "SQL_UNSUPPORTED"),
    ("syntax", "SELECT COUNT(* FROM patients", "SQL_SYNTAX_ERROR"),
    ("join", "SELECT COUNT(*) FROM patients JOIN other ON patients.a = other.a", "SQL_UNSUPPORTED"),
    ("not an aggregate", "SELECT age FROM patients", "SQL_UNSUPPORTED"),
    ("or", "SELECT COUNT(*) FROM patients WHERE age > 3 OR age < 2", "SQL_UNSUPPORTED"),
    ("expression", "SELECT SUM(age * 2) FROM patients", "SQL_UNSUPPORTED"),
    ("limit", "SELECT COUNT(*) FROM patients LIMIT 1", "SQL_UNSUPPORTED"),
    ("unknown column", "SELECT AVG(salary) FROM patients", "COLUMN_NOT_FOUND"),
    ("unknown dataset", "SELECT COUNT(*) FROM nope", "DATASET_NOT_FOUND"),
]


async def test_refusals_are_uniform_named_and_spend_nothing(ready: Gateway) -> None:
    await ready.analyst.Query(pb.QueryRequest(query=count_query(), privacy=rho(0.2)))
    before = await snapshot(ready)
    shapes = set()
    for label, request, field, reason in BAD:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await ready.analyst.Query(request)
        error = read_error(exc.value)
        assert (error.code, error.reason, error.domain) == (grpc.StatusCode.INVALID_ARGUMENT, reason,
                                                            "dpgateway.privmesh.dev"), label
        assert [v.field for v in error.violations] == field.split(), label
        shapes.add((error.code, error.domain))
    for label, sql, reason in BAD_SQL:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await ready.analyst.QuerySql(pb.QuerySqlRequest(sql=sql, privacy=rho(0.1)))
        error = read_error(exc.value)
        assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason), label
        assert [v.field for v in error.violations] == ["sql"], label
        shapes.add((error.code, error.domain))
    assert len(shapes) == 1  # one shape whatever was wrong
    with pytest.raises(grpc.aio.AioRpcError) as exc:  # a well-formed query over the caller's own quota
        await ready.analyst.Query(pb.QueryRequest(query=count_query(), privacy=rho(4.9), force_new_release=True))
    error = read_error(exc.value)
    assert (error.code, error.reason, [v.field for v in error.violations]) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED, "BUDGET_EXCEEDED", ["privacy"])
    assert error.quota_violations == (f"datasets/patients/budgets/{spiffe(ANALYST)}",)
    assert await snapshot(ready) == before


async def test_no_budget_and_unknown_dataset_are_indistinguishable(ready: Gateway, patients_csv: Path) -> None:
    await ready.admin.RegisterDataset(pb.RegisterDatasetRequest(
        dataset_id="hidden", dataset=patients_dataset(str(patients_csv))))
    errors = []
    for dataset in ("datasets/hidden", "datasets/absent"):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await ready.analyst.Query(pb.QueryRequest(query=count_query(dataset), privacy=rho(0.1)))
        error = read_error(exc.value)
        errors.append((error.code, error.reason, [v.field for v in error.violations],
                       error.message.replace(dataset.removeprefix("datasets/"), "X")))
    assert errors[0] == errors[1]


async def test_budgets_ledger_paging_and_dataset_wide_cap(ready: Gateway) -> None:
    await ready.admin.SetBudget(pb.SetBudgetRequest(dataset="datasets/patients", analyst="*",
                                                    cap=pb.PrivacyLoss(rho=1.0)))
    await ready.analyst.Query(pb.QueryRequest(query=count_query(), privacy=rho(0.6)))
    with pytest.raises(grpc.aio.AioRpcError) as exc:  # carol has 5.0 of her own, but the dataset has 0.4 left
        await ready.other.Query(pb.QueryRequest(query=count_query(), privacy=rho(0.5)))
    assert read_error(exc.value).reason == "BUDGET_EXCEEDED"
    reply = await ready.other.Query(pb.QueryRequest(query=count_query(), privacy=rho(0.3)))
    assert reply.release.remaining.rho == pytest.approx(0.1, rel=1e-6)
    own = await ready.other.GetBudget(pb.GetBudgetRequest(dataset="datasets/patients"))
    assert own.budget.analyst == spiffe(OTHER) and own.dataset_budget.spent.rho == pytest.approx(0.9, rel=1e-6)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await ready.other.GetBudget(pb.GetBudgetRequest(dataset="datasets/patients", analyst=spiffe(ANALYST)))
    assert read_error(exc.value).code == grpc.StatusCode.PERMISSION_DENIED
    pages, token = [], ""
    while True:
        page = await ready.admin.ListLedger(pb.ListLedgerRequest(dataset="datasets/patients", page_size=2,
                                                                 page_token=token))
        pages.append(page.entries)
        token = page.next_page_token
        if not token:
            break
    entries = [e for p in pages for e in p]
    assert [e.sequence for e in entries] == sorted(e.sequence for e in entries) and len(pages) >= 3
    kinds = [(e.kind, e.state) for e in entries]
    assert kinds.count((pb.LEDGER_ENTRY_KIND_CAP_SET, pb.SPEND_STATE_UNSPECIFIED)) == 3
    assert kinds.count((pb.LEDGER_ENTRY_KIND_SPEND, pb.SPEND_STATE_COMMITTED)) == 2
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await ready.admin.SetBudget(pb.SetBudgetRequest(dataset="datasets/patients", analyst=spiffe(ANALYST),
                                                        cap=pb.PrivacyLoss(epsilon=1.0)))
    error = read_error(exc.value)
    assert (error.code, error.reason, [v.field for v in error.violations]) == (
        grpc.StatusCode.INVALID_ARGUMENT, "BUDGET_INVALID", ["cap.epsilon"])
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await ready.analyst.SetBudget(pb.SetBudgetRequest(dataset="datasets/patients", analyst=spiffe(ANALYST),
                                                          cap=pb.PrivacyLoss(rho=100)))
    assert read_error(exc.value).code == grpc.StatusCode.PERMISSION_DENIED


async def test_request_id_retry_returns_the_first_release_without_a_second_charge(ready: Gateway) -> None:
    request = pb.QueryRequest(query=count_query(), privacy=rho(0.5), force_new_release=True,
                              request_id="7b7a7c1e-0000-4000-8000-000000000001")
    first = (await ready.analyst.Query(request)).release
    second = (await ready.analyst.Query(request)).release
    assert second.release_id == first.release_id and second.rows == first.rows
    budget = (await ready.analyst.GetBudget(pb.GetBudgetRequest(dataset="datasets/patients"))).budget
    assert budget.spent.rho == pytest.approx(0.5, rel=1e-6)
    changed = pb.QueryRequest(query=count_query(), privacy=rho(0.6), request_id=request.request_id)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await ready.analyst.Query(changed)
    assert read_error(exc.value).reason == "REQUEST_ID_CONFLICT"


async def test_pure_dp_dataset_uses_laplace_and_epsilon(gateway: Gateway, patients_csv: Path) -> None:
    await register_patients(gateway, str(patients_csv), dataset_id="pure", cap=2.0,
                            accounting=pb.PRIVACY_ACCOUNTING_PURE_DP)
    release = (await gateway.analyst.QuerySql(pb.QuerySqlRequest(
        sql="SELECT SUM(glucose), COUNT(*) FROM pure WHERE sex = 'F'", privacy=eps(1.0)))).release
    assert release.accounting == pb.PRIVACY_ACCOUNTING_PURE_DP and release.charged.epsilon == pytest.approx(1.0)
    assert {e.mechanism for e in release.rows[0].estimates} == {pb.MECHANISM_LAPLACE}
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await gateway.analyst.QuerySql(pb.QuerySqlRequest(sql="SELECT COUNT(*) FROM pure", privacy=rho(0.1)))
    assert [v.field for v in read_error(exc.value).violations] == ["privacy.privacy_loss.rho",
                                                                   "privacy.privacy_loss.epsilon"]


async def test_source_gone_before_reading_is_refunded(gateway: Gateway, patients_csv: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.csv"
    await asyncio.to_thread(shutil.copyfile, patients_csv, copy)
    await register_patients(gateway, str(copy))
    await gateway.analyst.Query(pb.QueryRequest(query=count_query(), privacy=rho(0.1)))
    await asyncio.to_thread(copy.unlink)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await gateway.analyst.Query(pb.QueryRequest(query=count_query(), privacy=rho(0.2)))
    assert read_error(exc.value).reason == "SOURCE_UNAVAILABLE"
    budget = (await gateway.analyst.GetBudget(pb.GetBudgetRequest(dataset="datasets/patients"))).budget
    assert budget.spent.rho == pytest.approx(0.1, rel=1e-6) and budget.reserved.rho == 0


@pytest.mark.postgres
async def test_postgres_ledger_end_to_end(open_gateway, postgres_db: str, patients_csv: Path) -> None:  # type: ignore[no-untyped-def]
    gw: Gateway = await open_gateway(postgres_db)
    await register_patients(gw, str(patients_csv), cap=1.0)
    first = (await gw.analyst.QuerySql(pb.QuerySqlRequest(sql="SELECT AVG(age) FROM patients",
                                                          privacy=rho(0.6)))).release
    repeat = (await gw.analyst.QuerySql(pb.QuerySqlRequest(sql="SELECT AVG(age) FROM patients",
                                                           privacy=rho(0.6)))).release
    assert repeat.cached and repeat.release_id == first.release_id and repeat.rows == first.rows
    before = await snapshot(gw)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await gw.analyst.Query(pb.QueryRequest(query=count_query(), privacy=rho(0.5)))
    assert read_error(exc.value).reason == "BUDGET_EXCEEDED"
    assert await snapshot(gw) == before
    budget = (await gw.analyst.GetBudget(pb.GetBudgetRequest(dataset="datasets/patients"))).budget
    assert budget.spent.rho == pytest.approx(0.6, rel=1e-6) and budget.remaining.rho == pytest.approx(0.4, rel=1e-5)
