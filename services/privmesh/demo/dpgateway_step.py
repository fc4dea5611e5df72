"""Step 2 of the scenario: analysts ask dp-gateway for counts and means over the (tokenized) patient records;
the budget ledger refuses the query that would overspend.

The data owner (admin) registers the records with a declared schema (bounds and categories stated, never
read from the data; one row per patient, `patient_id` the privacy unit) and gives the demo analyst a zCDP
budget. The analyst asks for counts per hospital and mean age and BMI, repeats a query (returned from the
ledger at no cost), and then asks for more than remains: refused, and nothing is spent.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import grpc

from privmesh.demo import records
from privmesh.demo.context import CALL_TIMEOUT, DemoContext, expect
from privmesh.dpgateway.v1 import dpgateway_pb2 as pb
from privmesh.dpgateway.v1 import dpgateway_pb2_grpc
from privmesh.runtime.client import secure_channel
from privmesh.runtime.errors import read_error

PATIENTS = 600
CAP_RHO = 1.0


def _records_csv(ctx: DemoContext) -> tuple[Path, str]:
    """Step 1's tokenized records when it ran, else the same synthetic records written here."""
    tokenized = ctx.facts.get("tokenized_csv")
    if isinstance(tokenized, str | Path) and Path(tokenized).is_file():
        return Path(tokenized).resolve(), "the records tokenized in step 1"
    path = records.write_csv(ctx.work_dir / "patients.csv", records.patients(PATIENTS))
    return path.resolve(), f"{PATIENTS} synthetic patient records"


def _schema(uri: str) -> pb.Dataset:
    def categories(values: tuple[str, ...]) -> list[pb.Value]:
        return [pb.Value(string_value=v) for v in values]

    def numeric(name: str) -> pb.ColumnSchema:
        low, high = records.FEATURE_RANGES[name]
        return pb.ColumnSchema(name=name, type=pb.COLUMN_TYPE_FLOAT64, bounds=pb.Bounds(lower=low, upper=high))

    return pb.Dataset(
        description="hospital patient records (tokenized)", source=pb.DataSource(uri=uri),
        columns=[pb.ColumnSchema(name="patient_id", type=pb.COLUMN_TYPE_STRING),
                 pb.ColumnSchema(name="hospital", type=pb.COLUMN_TYPE_STRING,
                                 categories=categories(records.HOSPITALS)),
                 pb.ColumnSchema(name="diagnosis", type=pb.COLUMN_TYPE_STRING,
                                 categories=categories(records.DIAGNOSES)),
                 pb.ColumnSchema(name="age", type=pb.COLUMN_TYPE_INT64, bounds=pb.Bounds(lower=18, upper=90)),
                 numeric("bmi"), numeric("glucose")],
        privacy_unit_column="patient_id", max_contributions_per_unit=1,
        accounting=pb.PRIVACY_ACCOUNTING_ZCDP, max_rows=1_000_000)


def _interval(estimate: pb.Estimate) -> str:
    ci = estimate.confidence_interval
    return f"{estimate.value:.1f} (95% CI {ci.lower:.1f}..{ci.upper:.1f})"


async def dpgateway_step(ctx: DemoContext) -> None:
    target = ctx.targets["dp-gateway"]
    path, origin = _records_csv(ctx)
    dataset_id = f"patients_{secrets.token_hex(3)}"  # a fresh ledger per demo run against a long-lived mesh
    analyst = ctx.layout.pki.spiffe_id("demo-client")
    async with secure_channel(target, ctx.layout.identity("admin"), timeout_seconds=CALL_TIMEOUT,
                              peer=ctx.peers["dp-gateway"]) as admin_channel:
        admin = dpgateway_pb2_grpc.DPGatewayStub(admin_channel)
        await admin.RegisterDataset(pb.RegisterDatasetRequest(dataset_id=dataset_id, dataset=_schema(str(path))))
        await admin.SetBudget(pb.SetBudgetRequest(dataset=f"datasets/{dataset_id}", analyst=analyst,
                                                  cap=pb.PrivacyLoss(rho=CAP_RHO)))
        ctx.console.print(f"   owner registered datasets/{dataset_id} ({origin}); analyst budget rho={CAP_RHO}")
    async with secure_channel(target, ctx.layout.identity("demo-client"), timeout_seconds=CALL_TIMEOUT,
                              peer=ctx.peers["dp-gateway"]) as channel:
        gateway = dpgateway_pb2_grpc.DPGatewayStub(channel)
        privacy = pb.PrivacySpec(privacy_loss=pb.PrivacyLoss(rho=0.3))
        # (the gateway parses this SQL into a plan; no database executes it, and dataset_id is ours)
        counts_sql = f"SELECT hospital, COUNT(*) AS patients FROM {dataset_id} GROUP BY hospital"  # noqa: S608
        counts = (await gateway.QuerySql(pb.QuerySqlRequest(sql=counts_sql, privacy=privacy))).release
        for row in counts.rows:
            ctx.console.print(f"   {row.group_key[0].string_value}: {_interval(row.estimates[0])} patients")
        means_sql = (f"SELECT AVG(age) AS mean_age, AVG(bmi) AS mean_bmi FROM {dataset_id} "  # noqa: S608
                     "WHERE diagnosis <> 'healthy'")
        means = (await gateway.QuerySql(pb.QuerySqlRequest(sql=means_sql, privacy=privacy))).release
        age, bmi = means.rows[0].estimates
        ctx.console.print(f"   patients with a diagnosis: mean age {_interval(age)}, mean BMI {_interval(bmi)}")
        ctx.console.print(f"   charged rho={counts.charged.rho:.3f} + {means.charged.rho:.3f}; "
                          f"remaining rho={means.remaining.rho:.3f}")
        expect(abs(means.remaining.rho - (CAP_RHO - 0.6)) < 1e-6, "the ledger did not charge both queries")
        repeat = (await gateway.QuerySql(pb.QuerySqlRequest(sql=counts_sql, privacy=privacy))).release
        expect(repeat.cached and repeat.release_id == counts.release_id and repeat.charged.rho == 0,
               "an identical repeated query was charged again")
        ctx.console.print("   the repeated query returned the stored release at no cost")
        before = (await gateway.GetBudget(pb.GetBudgetRequest(dataset=f"datasets/{dataset_id}"))).budget
        try:
            overspend = f"SELECT AVG(glucose) FROM {dataset_id}"  # noqa: S608
            await gateway.QuerySql(pb.QuerySqlRequest(sql=overspend,
                                                      privacy=pb.PrivacySpec(privacy_loss=pb.PrivacyLoss(rho=0.5))))
        except grpc.aio.AioRpcError as exc:
            error = read_error(exc)
            expect(error.reason == "BUDGET_EXCEEDED", f"the overspend was refused for {error.reason}")
            ctx.console.print(f"   asking for rho=0.5 more: refused ({error.code.name}, {error.reason})")
        else:
            expect(False, "the query that would overspend was answered")
        after = (await gateway.GetBudget(pb.GetBudgetRequest(dataset=f"datasets/{dataset_id}"))).budget
        expect(after.spent == before.spent and after.spent.rho <= CAP_RHO, "the refused query changed the ledger")
        ctx.console.print(f"   ledger unchanged: spent rho={after.spent.rho:.3f} of {CAP_RHO}")
