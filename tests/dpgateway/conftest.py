"""Fixtures: the scenario's synthetic patients as CSV and Parquet, the dataset declaration an owner would
write for them, and a dp-gateway over real mTLS on loopback with an administrator and two analysts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import polars as pl
import pytest

from privmesh.demo import records
from privmesh.dpgateway.server import DEFINITION
from privmesh.dpgateway.v1 import dpgateway_pb2 as pb
from privmesh.dpgateway.v1 import dpgateway_pb2_grpc
from privmesh.runtime.client import secure_channel
from privmesh.runtime.pki import DevPki
from privmesh.runtime.server import MeshServer
from tests.conftest import identity, server_config, spiffe

ADMIN, ANALYST, OTHER = "alice", "bob", "carol"
SERVICE = "privmesh.dpgateway.v1.DPGateway"
PATIENTS = 400


@pytest.fixture(scope="session")
def carol(pki: DevPki) -> DevPki:
    pki.issue(OTHER)
    return pki


@pytest.fixture(scope="session")
def patients_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "patients.csv"
    return records.write_csv(path, records.patients(PATIENTS, seed=7))


@pytest.fixture(scope="session")
def patients_frame(patients_csv: Path) -> pl.DataFrame:
    return pl.read_csv(patients_csv)


def patient_columns() -> list[pb.ColumnSchema]:
    def cats(*values: str) -> list[pb.Value]:
        return [pb.Value(string_value=v) for v in values]

    return [
        pb.ColumnSchema(name="patient_id", type=pb.COLUMN_TYPE_STRING),
        pb.ColumnSchema(name="hospital", type=pb.COLUMN_TYPE_STRING, categories=cats(*records.HOSPITALS)),
        pb.ColumnSchema(name="age", type=pb.COLUMN_TYPE_INT64, bounds=pb.Bounds(lower=18, upper=90)),
        pb.ColumnSchema(name="sex", type=pb.COLUMN_TYPE_STRING, categories=cats("F", "M")),
        pb.ColumnSchema(name="diagnosis", type=pb.COLUMN_TYPE_STRING, categories=cats(*records.DIAGNOSES)),
        pb.ColumnSchema(name="bmi", type=pb.COLUMN_TYPE_FLOAT64, bounds=pb.Bounds(lower=15, upper=45)),
        pb.ColumnSchema(name="glucose", type=pb.COLUMN_TYPE_FLOAT64, bounds=pb.Bounds(lower=60, upper=250)),
        pb.ColumnSchema(name="smoker", type=pb.COLUMN_TYPE_INT64, bounds=pb.Bounds(lower=0, upper=1),
                        categories=[pb.Value(int_value=0), pb.Value(int_value=1)]),
    ]


def patients_dataset(uri: str, accounting: int = pb.PRIVACY_ACCOUNTING_ZCDP, **extra: Any) -> pb.Dataset:
    fields: dict[str, Any] = {"privacy_unit_column": "patient_id", "max_contributions_per_unit": 1,
                              "max_rows": 100_000, "columns": patient_columns(), **extra}
    return pb.Dataset(description="synthetic patients", source=pb.DataSource(uri=uri), accounting=accounting,
                      **fields)


def gateway_policy() -> list[dict[str, Any]]:
    return [
        {"name": "admin", "principals": [spiffe(ADMIN)], "methods": [f"{SERVICE}/*"]},
        {"name": "admin-reads-analysts", "principals": [spiffe(ADMIN)],
         "methods": [f"{SERVICE}/GetBudget", f"{SERVICE}/ListLedger"], "resources": ["datasets/*:analysts"]},
        {"name": "analysts", "principals": [spiffe(ANALYST), spiffe(OTHER)],
         "methods": [f"{SERVICE}/Query", f"{SERVICE}/QuerySql", f"{SERVICE}/GetBudget", f"{SERVICE}/GetDataset",
                     f"{SERVICE}/ListDatasets"]},
    ]


def gateway_config(tmp: Path, pki: DevPki, database: str | None = None, server: dict[str, Any] | None = None,
                   **service: Any) -> Path:
    settings = {"database": database or f"sqlite:///{tmp / 'dpgateway.db'}", "cache_dir": str(tmp / "cache"),
                **service}
    return server_config(tmp, pki, gateway_policy(), settings, **(server or {}))


@dataclass
class Gateway:
    server: MeshServer
    admin: dpgateway_pb2_grpc.DPGatewayStub
    analyst: dpgateway_pb2_grpc.DPGatewayStub
    other: dpgateway_pb2_grpc.DPGatewayStub

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"


@pytest.fixture
async def open_gateway(pki: DevPki, carol: DevPki, start_server: Callable[..., Any],
                       tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Starts a gateway (SQLite unless a database URL is given) and opens stubs for the three identities."""
    channels: list[grpc.aio.Channel] = []

    async def open_(database: str | None = None, *, call_timeout: float = 30.0, **service: Any) -> Gateway:
        server = await start_server(DEFINITION, gateway_config(tmp_path, pki, database, **service))
        stubs = []
        for name in (ADMIN, ANALYST, OTHER):
            channel = secure_channel(f"127.0.0.1:{server.port}", identity(pki, name), peer=spiffe("server"),
                                     timeout_seconds=call_timeout)
            channels.append(channel)
            stubs.append(dpgateway_pb2_grpc.DPGatewayStub(channel))
        return Gateway(server, *stubs)

    yield open_
    for channel in channels:
        await channel.close()


@pytest.fixture
async def gateway(open_gateway: Callable[..., Any]) -> Gateway:
    return await open_gateway()  # type: ignore[no-any-return]


async def register_patients(gw: Gateway, uri: str, dataset_id: str = "patients", cap: float = 5.0,
                            accounting: int = pb.PRIVACY_ACCOUNTING_ZCDP, **extra: Any) -> pb.Dataset:
    reply = await gw.admin.RegisterDataset(pb.RegisterDatasetRequest(
        dataset_id=dataset_id, dataset=patients_dataset(uri, accounting, **extra)))
    field = "rho" if accounting == pb.PRIVACY_ACCOUNTING_ZCDP else "epsilon"
    delta = 0.0 if accounting == pb.PRIVACY_ACCOUNTING_PURE_DP else 1e-5
    for analyst in (ANALYST, OTHER):
        await gw.admin.SetBudget(pb.SetBudgetRequest(dataset=f"datasets/{dataset_id}", analyst=spiffe(analyst),
                                                     cap=pb.PrivacyLoss(delta=delta, **{field: cap})))
    return reply.dataset


def rho(value: float, alpha: float = 0.0) -> pb.PrivacySpec:
    return pb.PrivacySpec(privacy_loss=pb.PrivacyLoss(rho=value), alpha=alpha)


def eps(value: float, delta: float = 0.0) -> pb.PrivacySpec:
    return pb.PrivacySpec(privacy_loss=pb.PrivacyLoss(epsilon=value, delta=delta))


def count_query(dataset: str = "datasets/patients", **extra: Any) -> pb.StructuredQuery:
    return pb.StructuredQuery(dataset=dataset, aggregates=[pb.Aggregate(function=pb.AGGREGATE_FUNCTION_COUNT)],
                              **extra)
