"""The ledger under real processes: 200 concurrent queries from four client processes against two gateway
processes sharing one ledger never exceed a cap (SQLite and PostgreSQL), and a gateway killed with SIGKILL
mid-load loses no committed spend (its open reservations are charged in full at the next start)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from privmesh.dpgateway.v1 import dpgateway_pb2 as pb
from privmesh.mesh.local import check_health
from privmesh.runtime.pki import DevPki
from privmesh.runtime.ports import free_loopback_port
from tests.conftest import identity, spiffe
from tests.dpgateway.conftest import ANALYST, OTHER, gateway_config, patients_dataset

ROOT = Path(__file__).resolve().parents[2]
SERVICE = "privmesh.dpgateway.v1.DPGateway"


class GatewayProcess:
    def __init__(self, workdir: Path, pki: DevPki, database: str, **service: Any) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.target = f"127.0.0.1:{free_loopback_port()}"
        self.config = gateway_config(workdir, pki, database, server={"listen": self.target}, **service)
        self.log = workdir / "gateway.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.pki = pki

    def spawn(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as log:
            return subprocess.Popen([sys.executable, "-m", "privmesh.dpgateway", "--config", str(self.config)],
                                    stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)

    async def start(self) -> None:
        self.process = self.spawn()
        for _ in range(300):
            if await check_health(self.target, identity(self.pki, "alice"), SERVICE,
                                  peer=spiffe("server")) == "SERVING":
                return
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            await asyncio.sleep(0.1)
        raise AssertionError("the gateway did not become healthy")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.process is not None
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)
        self.process.wait(timeout=30)


@pytest.fixture
def processes() -> Iterator[list[GatewayProcess]]:
    started: list[GatewayProcess] = []
    yield started
    for process in started:
        if process.process is not None and process.process.poll() is None:
            process.kill(signal.SIGTERM)


async def _setup(admin_target: str, pki: DevPki, csv: Path, cap: float) -> None:
    from privmesh.dpgateway.v1 import dpgateway_pb2_grpc
    from privmesh.runtime.client import secure_channel

    async with secure_channel(admin_target, identity(pki, "alice"), peer=spiffe("server")) as channel:
        admin = dpgateway_pb2_grpc.DPGatewayStub(channel)
        await admin.RegisterDataset(pb.RegisterDatasetRequest(dataset_id="patients",
                                                              dataset=patients_dataset(str(csv))))
        for name in (ANALYST, OTHER):
            await admin.SetBudget(pb.SetBudgetRequest(dataset="datasets/patients", analyst=spiffe(name),
                                                      cap=pb.PrivacyLoss(rho=cap)))
        await admin.SetBudget(pb.SetBudgetRequest(dataset="datasets/patients", analyst="*",
                                                  cap=pb.PrivacyLoss(rho=cap * 1.5)))


def _clients(pki: DevPki, targets: list[str], plan: list[tuple[str, int]], rho: float,
             sequential: bool = False) -> list[subprocess.Popen[bytes]]:
    extra = ["--sequential"] if sequential else []
    return [subprocess.Popen([sys.executable, "-m", "tests.dpgateway.load_client", str(pki.directory), name,
                              ",".join(targets), str(count), str(rho), *extra], stdout=subprocess.PIPE, cwd=ROOT)
            for name, count in plan]


def _outcomes(clients: list[subprocess.Popen[bytes]]) -> list[dict[str, Any]]:
    lines = []
    for client in clients:
        out, _ = client.communicate(timeout=240)
        lines += [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    return lines


async def _budget(target: str, pki: DevPki, analyst: str) -> pb.GetBudgetResponse:
    from privmesh.dpgateway.v1 import dpgateway_pb2_grpc
    from privmesh.runtime.client import secure_channel

    async with secure_channel(target, identity(pki, "alice"), peer=spiffe("server")) as channel:
        return await dpgateway_pb2_grpc.DPGatewayStub(channel).GetBudget(pb.GetBudgetRequest(
            dataset="datasets/patients", analyst=analyst))


async def _ledger(target: str, pki: DevPki) -> list[pb.LedgerEntry]:
    from privmesh.dpgateway.v1 import dpgateway_pb2_grpc
    from privmesh.runtime.client import secure_channel

    async with secure_channel(target, identity(pki, "alice"), peer=spiffe("server")) as channel:
        stub = dpgateway_pb2_grpc.DPGatewayStub(channel)
        entries, token = [], ""
        while True:
            page = await stub.ListLedger(pb.ListLedgerRequest(page_size=1000, page_token=token))
            entries += page.entries
            token = page.next_page_token
            if not token:
                return entries


async def _concurrent_queries_never_exceed_caps(tmp_path: Path, pki: DevPki, carol: DevPki, csv: Path,
                                               database: str, processes: list[GatewayProcess]) -> None:
    for i in range(2):
        processes.append(GatewayProcess(tmp_path / f"gw{i}", pki, database))
    for process in processes:
        await process.start()
    targets = [p.target for p in processes]
    cap, cost = 1.0, 0.03  # each analyst fits 33 queries, the dataset-wide cap 50 of the 200
    await _setup(targets[0], pki, csv, cap)
    outcomes = _outcomes(_clients(pki, targets, [(ANALYST, 50), (ANALYST, 50), (OTHER, 50), (OTHER, 50)], cost))
    assert len(outcomes) == 200
    ok = [o for o in outcomes if "ok" in o]
    refused = [o for o in outcomes if "error" in o]
    assert {o["error"] for o in refused} == {"BUDGET_EXCEEDED"}
    wide = (await _budget(targets[1], pki, "*")).budget
    assert wide.spent.rho <= wide.cap.rho and wide.reserved.rho == 0
    assert wide.spent.rho == pytest.approx(sum(o["rho"] for o in ok), rel=1e-9)
    assert wide.cap.rho - wide.spent.rho < max(o["rho"] for o in ok)  # filled: no other query would have fit
    assert 45 <= len(ok) <= 50
    for name in (ANALYST, OTHER):
        own = (await _budget(targets[0], pki, spiffe(name))).budget
        assert own.spent.rho <= own.cap.rho


@pytest.mark.slow
async def test_200_concurrent_queries_from_processes_never_exceed_caps_sqlite(
        tmp_path: Path, pki: DevPki, carol: DevPki, patients_csv: Path, processes: list[GatewayProcess]) -> None:
    await _concurrent_queries_never_exceed_caps(tmp_path, pki, carol, patients_csv,
                                               f"sqlite:///{tmp_path / 'shared-ledger.db'}", processes)


@pytest.mark.slow
@pytest.mark.postgres
async def test_200_concurrent_queries_from_processes_never_exceed_caps_postgres(
        tmp_path: Path, pki: DevPki, carol: DevPki, patients_csv: Path, postgres_db: str,
        processes: list[GatewayProcess]) -> None:
    await _concurrent_queries_never_exceed_caps(tmp_path, pki, carol, patients_csv, postgres_db, processes)


@pytest.mark.slow
async def test_kill_9_loses_no_committed_spend(tmp_path: Path, pki: DevPki, patients_csv: Path,
                                               processes: list[GatewayProcess]) -> None:
    database = f"sqlite:///{tmp_path / 'ledger.db'}"
    first = GatewayProcess(tmp_path / "run1", pki, database, stale_reservation_seconds=0)
    processes.append(first)
    await first.start()
    await _setup(first.target, pki, patients_csv, cap=100.0)
    clients = _clients(pki, [first.target], [(ANALYST, 400)], 0.01, sequential=True)
    reader = clients[0].stdout
    assert reader is not None
    early: list[dict[str, Any]] = []
    while len(early) < 60:  # let a good number of spends commit, then kill the server mid-stream
        line = await asyncio.to_thread(reader.readline)
        if line.strip():
            early.append(json.loads(line))
    first.kill(signal.SIGKILL)
    acknowledged = [o for o in early + _outcomes(clients) if "ok" in o]
    assert len(acknowledged) >= 60
    second = GatewayProcess(tmp_path / "run2", pki, database, stale_reservation_seconds=0)
    processes.append(second)
    await second.start()
    entries = await _ledger(second.target, pki)
    committed = {e.release_id: e for e in entries if e.state == pb.SPEND_STATE_COMMITTED and e.release_id}
    assert {o["ok"] for o in acknowledged} <= set(committed)  # every acknowledged spend survived
    assert not [e for e in entries if e.state == pb.SPEND_STATE_RESERVED]  # in-flight ones were charged in full
    budget = (await _budget(second.target, pki, spiffe(ANALYST))).budget
    charged = sum(e.charged.rho for e in entries if e.kind == pb.LEDGER_ENTRY_KIND_SPEND)
    assert budget.spent.rho == pytest.approx(charged, rel=1e-9)
    assert budget.spent.rho >= sum(o["rho"] for o in acknowledged) - 1e-9
