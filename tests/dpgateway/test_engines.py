"""The dp-gateway query suite on both engines (OpenDP on Polars, Tumult Analytics on Spark local[2]): counts,
sums, means, variances, quantiles, group-by with declared, public, private and BOOL keys, a target accuracy,
SQL errors, budget exhaustion, and budgets raced by two replicas. Spark runs in one engine process for the
whole session (scripts/dev/spark-env.sh builds its venv) with small-table settings (one shuffle partition, no
adaptive re-planning). Every noisy estimate is checked against the true answer within its released accuracy
at ALPHA: with the few dozen estimates below, the suite fails by chance with probability below 1e-4 (union
bound). Quantiles state no accuracy; their check is a loose rank check that fails with negligible probability."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import uuid
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import grpc
import polars as pl
import pytest

from privmesh.dpgateway.spark import protocol
from privmesh.dpgateway.spark_engine import EngineProcess, _split, shared_process
from privmesh.dpgateway.v1 import dpgateway_pb2 as pb
from privmesh.runtime.errors import read_error
from tests.conftest import spiffe
from tests.dpgateway.conftest import ANALYST, Gateway, patient_columns, register_patients

ALPHA = 1e-6
TIMEOUT = 300  # seconds per call (the channels' deadline): Spark on two shared cores
ROOT = Path(__file__).resolve().parents[2]
ENGINES = ["polars", "spark"]
ENGINE_VALUE = {"polars": pb.DATASET_ENGINE_POLARS, "spark": pb.DATASET_ENGINE_SPARK}
SPARK_CONF = {"spark.sql.shuffle.partitions": "1", "spark.sql.adaptive.enabled": "false"}  # 400 rows
F = pb.AggregateFunction
pytestmark = pytest.mark.timeout(900)  # Spark on two cores shared with the rest of CI


def engine_process(python: str) -> EngineProcess:
    """The session's Spark engine: the one the test gateways share (same Python, master and settings)."""
    return shared_process(python, "local[2]", tuple(sorted(SPARK_CONF.items())))


@pytest.fixture(scope="session")
def spark_python() -> str:
    """The Tumult venv's Python (built once into ~/.cache/privmesh by the project script; cached after)."""
    out = subprocess.run([str(ROOT / "scripts/dev/spark-env.sh")], check=True, capture_output=True, text=True)
    python = out.stdout.strip().splitlines()[-1]
    engine_process(python).start()  # one Spark driver for the session, started before any deadline
    return python


@pytest.fixture(scope="session")
def patients_parquet(patients_frame: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The patients with a BOOL column (smokes) besides the declared ones."""
    path = tmp_path_factory.mktemp("engines") / "patients.parquet"
    patients_frame.with_columns(smokes=pl.col("smoker") == 1).write_parquet(path)
    return path


@pytest.fixture
def open_engine_gateway(open_gateway: Callable[..., Any], spark_python: str) -> Callable[..., Any]:
    async def open_(engine: str, **service: Any) -> Gateway:
        extra = {"spark_python": spark_python, "spark_conf": SPARK_CONF} if engine == "spark" else {}
        return await open_gateway(call_timeout=TIMEOUT, **extra, **service)  # type: ignore[no-any-return]
    return open_


async def registered(open_: Callable[..., Any], engine: str, uri: Path, cap: float = 5.0,
                     accounting: int = pb.PRIVACY_ACCOUNTING_ZCDP, **dataset: Any) -> Gateway:
    gw: Gateway = await open_(engine)
    await register_patients(gw, str(uri), cap=cap, accounting=accounting, engine=ENGINE_VALUE[engine], **dataset)
    return gw


def rho(value: float) -> pb.PrivacySpec:
    return pb.PrivacySpec(privacy_loss=pb.PrivacyLoss(rho=value), alpha=ALPHA)


def within(estimate: pb.Estimate, truth: float) -> bool:
    return estimate.confidence_interval.lower <= truth <= estimate.confidence_interval.upper


async def sql(gw: Gateway, text: str, privacy: pb.PrivacySpec, **extra: Any) -> pb.Release:
    return (await gw.analyst.QuerySql(pb.QuerySqlRequest(sql=text, privacy=privacy, **extra))).release


async def spent(gw: Gateway, dataset: str = "patients") -> pb.Budget:
    return (await gw.analyst.GetBudget(pb.GetBudgetRequest(dataset=f"datasets/{dataset}",
                                                           analyst=spiffe(ANALYST)))).budget


@pytest.mark.parametrize("engine", ENGINES)
async def test_count_sum_mean_and_declared_keys_within_the_bound(open_engine_gateway: Callable[..., Any],
                                                                engine: str, patients_parquet: Path,
                                                                patients_frame: pl.DataFrame) -> None:
    gw = await registered(open_engine_gateway, engine, patients_parquet)
    release = await sql(gw, "SELECT COUNT(*) AS n, SUM(age) AS s, AVG(bmi) AS m FROM patients WHERE age >= 40",
                        rho(1.0))
    rows = patients_frame.filter(pl.col("age") >= 40)
    n, s, m = release.rows[0].estimates
    assert within(n, rows.height) and within(s, rows["age"].sum()) and within(m, rows["bmi"].mean())
    assert n.noise_scale > 0 and n.accuracy > 0 and 0.99 < release.charged.rho <= 1.0
    grouped = await sql(gw, "SELECT hospital, COUNT(*) AS n FROM patients GROUP BY hospital", rho(0.5))
    truth = dict(patients_frame.group_by("hospital").len().iter_rows())
    assert {r.group_key[0].string_value for r in grouped.rows} == set(truth)
    assert all(within(r.estimates[0], truth[r.group_key[0].string_value]) for r in grouped.rows)
    assert 1.49 < (await spent(gw)).spent.rho <= 1.5


@pytest.mark.parametrize("engine", ENGINES)
async def test_variance_quantile_and_bool_keys_within_the_bound(open_engine_gateway: Callable[..., Any],
                                                               engine: str, patients_parquet: Path,
                                                               patients_frame: pl.DataFrame) -> None:
    smokes = pb.ColumnSchema(name="smokes", type=pb.COLUMN_TYPE_BOOL,
                             categories=[pb.Value(bool_value=True), pb.Value(bool_value=False)])
    gw = await registered(open_engine_gateway, engine, patients_parquet, columns=[*patient_columns(), smokes])
    release = await sql(gw, "SELECT smokes, COUNT(*) AS n, VARIANCE(bmi) AS v, MEDIAN(age) AS med FROM patients "
                        "GROUP BY smokes", rho(2.5))
    frame = patients_frame.with_columns(smokes=pl.col("smoker") == 1)
    assert [r.group_key[0].bool_value for r in release.rows] == [True, False]  # the declared keys, in order
    for row in release.rows:
        group = frame.filter(pl.col("smokes") == row.group_key[0].bool_value)
        n, v, med = row.estimates
        assert within(n, group.height) and within(v, group["bmi"].var(ddof=0))
        assert v.components[2].name == "sum_of_squares" and v.components[2].noise_scale > 0
        ages = group["age"]  # a candidate (an integer age) with at least a tenth of the group on each side
        assert med.value.is_integer() and (ages <= med.value).mean() >= 0.1 and (ages >= med.value).mean() >= 0.1
        # Each engine names the selection it ran: OpenDP's report-noisy-max, Tumult's exponential mechanism.
        assert med.mechanism == (pb.MECHANISM_EXPONENTIAL if engine == "spark" else pb.MECHANISM_REPORT_NOISY_MAX)
        assert med.noise_scale > 0
    assert 2.49 < release.charged.rho <= 2.5 and (await spent(gw)).spent.rho == release.charged.rho


@pytest.mark.parametrize("engine", ENGINES)
async def test_target_accuracy_is_reached_and_charged_as_stated(open_engine_gateway: Callable[..., Any],
                                                               engine: str, patients_parquet: Path,
                                                               patients_frame: pl.DataFrame) -> None:
    gw = await registered(open_engine_gateway, engine, patients_parquet)
    release = await sql(gw, "SELECT hospital, COUNT(*) AS n, SUM(age) AS s FROM patients GROUP BY hospital",
                        pb.PrivacySpec(target_accuracy=400.0, alpha=ALPHA))
    truth = {h: (n, s) for h, n, s in patients_frame.group_by("hospital").agg(pl.len(), pl.col("age").sum())
             .iter_rows()}
    for row in release.rows:
        n, s = row.estimates
        assert all(360 <= e.accuracy <= 400 for e in (n, s))  # reached, and not by spending far more
        assert within(n, truth[row.group_key[0].string_value][0]) and within(s, truth[row.group_key[0].string_value][1])
    charged = release.charged
    assert charged == release.privacy_loss and 0 < charged.rho < 5 and charged.epsilon == charged.delta == 0
    assert (await spent(gw)).spent.rho == charged.rho  # the ledger holds exactly what the plan states


async def test_max_groups_per_unit_gives_both_engines_the_same_noise(open_engine_gateway: Callable[..., Any],
                                                                    patients_parquet: Path) -> None:
    scales = {}
    for engine in ENGINES:  # two gateways on one ledger database: one dataset each
        gw = await registered(open_engine_gateway, engine, patients_parquet, dataset_id=engine,
                              max_contributions_per_unit=3, max_groups_per_unit=1)
        release = await sql(gw, f"SELECT hospital, COUNT(*) AS n, SUM(age) AS s FROM {engine} GROUP BY hospital",
                            rho(0.5), validate_only=True)
        scales[engine] = [e.noise_scale for e in release.rows[0].estimates]
        assert 0.49 < release.privacy_loss.rho <= 0.5 and (await spent(gw, engine)).spent.rho == 0
    assert scales["polars"][0] > 1 and scales["spark"] == pytest.approx(scales["polars"], rel=1e-6)


@pytest.mark.parametrize("engine", ENGINES)
async def test_public_and_private_keys(open_engine_gateway: Callable[..., Any], engine: str, patients_parquet: Path,
                                       patients_frame: pl.DataFrame) -> None:
    gw = await registered(open_engine_gateway, engine, patients_parquet, cap=5.0,
                          accounting=pb.PRIVACY_ACCOUNTING_APPROXIMATE_DP)
    privacy = pb.PrivacySpec(privacy_loss=pb.PrivacyLoss(epsilon=1.0), alpha=ALPHA)
    public = (await gw.analyst.Query(pb.QueryRequest(query=pb.StructuredQuery(
        dataset="datasets/patients", group_by=["sex"],
        group_keys=pb.GroupKeys(mode=pb.GROUP_KEYS_MODE_PUBLIC, keys=[
            pb.GroupKey(values=[pb.Value(string_value=v)]) for v in ("F", "X")]),
        aggregates=[pb.Aggregate(function=F.AGGREGATE_FUNCTION_COUNT)]), privacy=privacy))).release
    truth = dict(patients_frame.group_by("sex").len().iter_rows())
    assert [r.group_key[0].string_value for r in public.rows] == ["F", "X"]
    assert within(public.rows[0].estimates[0], truth["F"]) and within(public.rows[1].estimates[0], 0)
    private = (await gw.analyst.Query(pb.QueryRequest(query=pb.StructuredQuery(
        dataset="datasets/patients", group_by=["diagnosis"], group_keys=pb.GroupKeys(mode=pb.GROUP_KEYS_MODE_PRIVATE),
        aggregates=[pb.Aggregate(function=F.AGGREGATE_FUNCTION_COUNT)]),
        privacy=pb.PrivacySpec(privacy_loss=pb.PrivacyLoss(epsilon=1.0, delta=1e-6), alpha=ALPHA)))).release
    truth = dict(patients_frame.group_by("diagnosis").len().iter_rows())
    released = {r.group_key[0].string_value: r.estimates[0] for r in private.rows}
    assert released and set(released) <= set(truth)  # only keys present in the data, thresholded
    assert all(within(e, truth[k]) for k, e in released.items())
    assert 0 < private.charged.delta <= 1e-6 and 0.99 < private.charged.epsilon <= 1.0


@pytest.mark.parametrize("engine", ENGINES)
async def test_sql_errors_and_exhaustion_spend_nothing(open_engine_gateway: Callable[..., Any], engine: str,
                                                       patients_parquet: Path) -> None:
    gw = await registered(open_engine_gateway, engine, patients_parquet, cap=1.0)
    for text in ("SELECT COUNT(*) FROM patients WHERE weight > 3", "SELECT SUM(diagnosis) FROM patients",
                 "DELETE FROM patients", "SELECT COUNT(*) FROM patients GROUP BY nope"):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await sql(gw, text, rho(0.1))
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert [v.field for v in read_error(refused.value).violations] == ["sql"]
    assert (await spent(gw)).spent.rho == 0
    await sql(gw, "SELECT COUNT(*) FROM patients", rho(0.75))
    with pytest.raises(grpc.aio.AioRpcError) as exhausted:
        await sql(gw, "SELECT COUNT(*) FROM patients WHERE age > 30", rho(0.5))
    assert exhausted.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    budget = await spent(gw)
    assert budget.spent.rho == pytest.approx(0.75) and budget.remaining.rho == pytest.approx(0.25)
    assert budget.reserved.rho == 0


async def test_spark_refuses_private_keys_under_zcdp_and_spends_nothing(open_engine_gateway: Callable[..., Any],
                                                                   patients_parquet: Path) -> None:
    gw = await registered(open_engine_gateway, "spark", patients_parquet)  # ZCDP: Tumult selects keys under DP
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await gw.analyst.Query(pb.QueryRequest(query=pb.StructuredQuery(
            dataset="datasets/patients", group_by=["diagnosis"],
            group_keys=pb.GroupKeys(mode=pb.GROUP_KEYS_MODE_PRIVATE),
            aggregates=[pb.Aggregate(function=F.AGGREGATE_FUNCTION_COUNT)]),
            privacy=pb.PrivacySpec(privacy_loss=pb.PrivacyLoss(rho=0.1, delta=1e-6))))
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert read_error(refused.value).reason == "ENGINE_UNSUPPORTED"
    assert [v.field for v in read_error(refused.value).violations] == ["query.group_keys.mode"]
    budget = await spent(gw)
    assert budget.spent.rho == budget.spent.delta == budget.reserved.rho == 0
    polars_only: Gateway = await open_engine_gateway("polars")
    with pytest.raises(grpc.aio.AioRpcError) as unavailable:
        await register_patients(polars_only, str(patients_parquet), dataset_id="other",
                                engine=pb.DATASET_ENGINE_SPARK)
    assert unavailable.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in read_error(unavailable.value).violations] == ["dataset.engine"]


def test_budget_shares_are_exact_rationals_that_sum_to_the_cost() -> None:
    shares = _split(Fraction(0.3), {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3, "d": 0.1})
    assert sum(shares.values()) == Fraction(0.3)
    assert all(Fraction(protocol.rational(v)) == v for v in shares.values())


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
async def test_two_replicas_racing_one_budget_never_overspend(open_engine_gateway: Callable[..., Any],
                                                              engine: str, patients_parquet: Path) -> None:
    first = await registered(open_engine_gateway, engine, patients_parquet, cap=1.0)
    second: Gateway = await open_engine_gateway(engine)  # the same ledger database, another server
    stubs = [first.analyst, second.analyst, first.analyst, second.analyst]
    outcomes = await asyncio.gather(*(stub.QuerySql(pb.QuerySqlRequest(
        sql=f"SELECT COUNT(*) FROM patients WHERE age > {20 + i}", privacy=rho(0.3))) for i, stub in enumerate(stubs)),
        return_exceptions=True)
    refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(refused) == 1 and refused[0].code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    budget = await spent(first)
    assert Fraction(budget.spent.rho) <= 1 and budget.spent.rho == pytest.approx(0.9) and budget.reserved.rho == 0


@pytest.mark.slow
async def test_killing_the_spark_engine_mid_query_charges_once_and_a_retry_is_the_stored_release(
        open_engine_gateway: Callable[..., Any], patients_parquet: Path, spark_python: str) -> None:
    gw = await registered(open_engine_gateway, "spark", patients_parquet)
    process = engine_process(spark_python)
    request = pb.QuerySqlRequest(sql="SELECT hospital, AVG(glucose) FROM patients GROUP BY hospital",
                                 privacy=rho(0.5))
    running = asyncio.ensure_future(gw.analyst.QuerySql(request))
    for _ in range(6000):  # until the cost is reserved: the engine gets the query next
        if (await spent(gw)).reserved.rho > 0:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    assert process.pid is not None
    os.kill(process.pid, signal.SIGKILL)
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await running
    assert failed.value.code() is grpc.StatusCode.INTERNAL and read_error(failed.value).reason == "RELEASE_FAILED"
    budget = await spent(gw)
    assert budget.spent.rho == 0.5 and budget.reserved.rho == 0  # charged once (the ledger's rule), not refunded
    retry = pb.QuerySqlRequest(sql=request.sql, privacy=request.privacy, request_id=str(uuid.uuid4()))
    first = (await gw.analyst.QuerySql(retry)).release  # the engine restarts
    again = (await gw.analyst.QuerySql(retry)).release
    assert again.release_id == first.release_id and [r.SerializeToString() for r in again.rows] == [
        r.SerializeToString() for r in first.rows]
    assert (await spent(gw)).spent.rho == 1.0
