"""The OpenDP engine: composition as the ledger states it (costs add up, each the measurement's privacy map;
OpenDP's own odometer agrees), scales solved for the requested loss, and a statistical test that the noise
actually released matches the advertised scale.

Statistical test: for a float SUM (continuous-looking noise on a 2^-k lattice), 1000 releases on a fixed
dataset give 1000 noise draws (release - exact sum); a one-sample Kolmogorov-Smirnov test against
Laplace(0, b) (pure DP) or Normal(0, sigma) (zCDP) with the advertised b / sigma must not reject at
significance 0.001 (false alarm once in a thousand runs). The same test with the scale misstated by 50%
must reject: the test can fail.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from scipy import stats

from privmesh.demo import records
from privmesh.dpgateway.engine import Budgeting, CompileError, DatasetEngine
from privmesh.dpgateway.loss import Loss
from privmesh.dpgateway.plan import Aggregate, Filter, Function, KeysMode, Operator, Plan, validate_plan
from privmesh.dpgateway.schema import Accounting, Column, ColumnType, DataFormat, DatasetSpec, Source
from privmesh.dpgateway.source import SourceReader

SIGNIFICANCE = 0.001
DRAWS = 1000


def _spec(path: Path, accounting: Accounting) -> DatasetSpec:
    return DatasetSpec("patients", Source(str(path), DataFormat.CSV), (
        Column("patient_id", ColumnType.STRING),
        Column("hospital", ColumnType.STRING, categories=records.HOSPITALS),
        Column("age", ColumnType.INT64, bounds=(18, 90)),
        Column("glucose", ColumnType.FLOAT64, bounds=(60, 250)),
        Column("diagnosis", ColumnType.STRING, categories=records.DIAGNOSES),
    ), "patient_id", 1, 0, accounting, 10_000)


def _engine(path: Path, accounting: Accounting) -> DatasetEngine:
    spec = _spec(path, accounting)
    return DatasetEngine(spec, SourceReader(path.parent / "cache").open(spec))


def _plan(spec: DatasetSpec, *aggregates: Aggregate, **extra: object) -> Plan:
    return validate_plan(spec, Plan("patients", aggregates, **extra))  # type: ignore[arg-type]


@pytest.mark.parametrize("accounting", [Accounting.PURE_DP, Accounting.ZCDP])
def test_noise_matches_the_advertised_scale(patients_csv: Path, accounting: Accounting) -> None:
    engine = _engine(patients_csv, accounting)
    plan = _plan(engine.spec, Aggregate(Function.SUM, "glucose"))
    loss = Loss(epsilon=1.0) if accounting is Accounting.PURE_DP else Loss(rho=0.5)
    compiled = engine.compile("sum", plan, Budgeting(loss))
    [part] = compiled.parts
    scale = part.scales["c0_sum"]
    exact = pl.read_csv(patients_csv)["glucose"].clip(60, 250).sum()
    noise = [engine.release(compiled)[0]["c0_sum"][0] - exact for _ in range(DRAWS)]
    reference = "laplace" if accounting is Accounting.PURE_DP else "norm"
    assert stats.kstest(noise, reference, args=(0, scale)).pvalue > SIGNIFICANCE
    assert stats.kstest(noise, reference, args=(0, scale * 1.5)).pvalue < SIGNIFICANCE  # a wrong scale is caught
    assert len(set(noise)) > DRAWS * 0.95  # fresh noise every release, from OpenDP's sampler


def test_costs_add_up_and_match_opendp_odometer(patients_csv: Path) -> None:
    engine = _engine(patients_csv, Accounting.ZCDP)
    spec = engine.spec
    plans = [
        _plan(spec, Aggregate(Function.COUNT)),
        _plan(spec, Aggregate(Function.MEAN, "age"), Aggregate(Function.VARIANCE, "glucose", weight=2)),
        _plan(spec, Aggregate(Function.HISTOGRAM, "diagnosis"), Aggregate(Function.COUNT)),
        _plan(spec, Aggregate(Function.COUNT), group_by=("hospital",), keys_mode=KeysMode.PRIVATE),
        _plan(spec, Aggregate(Function.QUANTILE, "age", quantiles=(0.25, 0.75)),
              filters=(Filter("hospital", Operator.IN, ("general", "riverside")),)),
    ]
    total = Loss()
    for i, plan in enumerate(plans):
        requested = Loss(rho=0.1 * (i + 1), delta=1e-7)
        compiled = engine.compile(f"p{i}", plan, Budgeting(requested))
        assert compiled.cost.rho <= requested.rho and compiled.cost.rho == pytest.approx(requested.rho, rel=1e-6)
        assert compiled.cost.delta <= requested.delta
        assert (compiled.cost.delta > 0) == (plan.keys_mode is KeysMode.PRIVATE and bool(plan.group_by))
        assert compiled.cost == sum((p.cost for p in compiled.parts), Loss())
        for part in compiled.parts:  # each part's cost is its measurement's privacy map at d_in = 1 unit
            mapped = part.measurement.map(1)
            assert (mapped[0], mapped[1]) == (part.cost.rho, part.cost.delta)
        engine.release(compiled)
        total = total + compiled.cost
    odometer = engine.privacy_loss()  # OpenDP's fully adaptive composition of everything released
    assert odometer.rho == pytest.approx(total.rho, rel=1e-12)
    assert odometer.delta == pytest.approx(total.delta, rel=1e-12)


def test_count_cost_is_the_gaussian_and_laplace_map(patients_csv: Path) -> None:
    """One unit changes a count by 1: rho = 1 / (2 sigma^2) (Gaussian), epsilon = 1 / b (Laplace)."""
    for accounting, loss in ((Accounting.ZCDP, Loss(rho=0.3)), (Accounting.PURE_DP, Loss(epsilon=0.7))):
        engine = _engine(patients_csv, accounting)
        compiled = engine.compile("count", _plan(engine.spec, Aggregate(Function.COUNT)), Budgeting(loss))
        scale = compiled.parts[0].scales["c0_count"]
        if accounting is Accounting.ZCDP:
            assert compiled.cost.rho == pytest.approx(1 / (2 * scale**2), rel=1e-9)
        else:
            assert compiled.cost.epsilon == pytest.approx(1 / scale, rel=1e-9)


def test_contributions_are_bounded_per_privacy_unit(tmp_path: Path) -> None:
    """A unit with many rows contributes at most max_contributions of them (OpenDP truncates)."""
    path = tmp_path / "visits.csv"
    pl.DataFrame({"patient_id": ["A"] * 50 + [f"P{i}" for i in range(50)], "age": [30] * 100}).write_csv(path)
    spec = DatasetSpec("visits", Source(str(path), DataFormat.CSV), (
        Column("patient_id", ColumnType.STRING), Column("age", ColumnType.INT64, bounds=(0, 100))),
        "patient_id", 2, 0, Accounting.ZCDP, 1000)
    engine = DatasetEngine(spec, SourceReader(tmp_path / "cache").open(spec))
    compiled = engine.compile("n", validate_plan(spec, Plan("visits", (Aggregate(Function.COUNT),))),
                              Budgeting(Loss(rho=50.0)))
    counts = [engine.release(compiled)[0]["c0_count"][0] for _ in range(20)]
    assert abs(sum(counts) / len(counts) - 52) < 2  # 50 single-row units + 2 of A's 50 rows
    assert compiled.cost.rho == pytest.approx(50.0, rel=1e-6)


@pytest.mark.timeout(60)
def test_an_unreachable_integer_accuracy_is_refused_not_searched_forever(patients_csv: Path) -> None:
    """Discrete Gaussian noise never reaches an accuracy of 1e-9: the scale search is bounded and says so."""
    engine = _engine(patients_csv, Accounting.ZCDP)
    plan = _plan(engine.spec, Aggregate(Function.COUNT))
    with pytest.raises(CompileError) as caught:
        engine.compile("tiny", plan, Budgeting(None, accuracy=1e-9, alpha=0.05))
    assert (caught.value.field_path, caught.value.reason) == ("privacy.target_accuracy", "ACCURACY_UNREACHABLE")
    reachable = engine.compile("ten", plan, Budgeting(None, accuracy=10.0, alpha=0.05))
    assert reachable.parts[0].scales["c0_count"] > 0
