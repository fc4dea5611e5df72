"""The auditor console against a local mesh holding the demo's state: one mesh, the demo's six steps run
against it, then every console page in Debian's headless Chromium (playwright-core). The numbers each page
shows equal what the services' gRPC APIs return to the auditor; the log whose history step 6 forged shows
the fork, and a log tampered with afterwards shows as broken. Screenshots of every page are kept in
$PRIVMESH_ARTIFACTS/console-demo (default test-artifacts/console-demo, gitignored)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from rich.console import Console

from privmesh.attestation.v1 import attestation_pb2 as av
from privmesh.attestation.v1 import attestation_pb2_grpc
from privmesh.common.v1 import common_pb2, common_pb2_grpc
from privmesh.console.app import AuditorConsole
from privmesh.console.inventory import PAGES
from privmesh.demo.context import DemoContext
from privmesh.demo.scenario import run_scenario
from privmesh.dpgateway.v1 import dpgateway_pb2 as dp
from privmesh.dpgateway.v1 import dpgateway_pb2_grpc
from privmesh.fl.v1 import fl_pb2, fl_pb2_grpc
from privmesh.keybroker.v1 import keybroker_pb2 as kb
from privmesh.keybroker.v1 import keybroker_pb2_grpc
from privmesh.mesh.local import LocalMesh, MeshLayout
from privmesh.runtime.audit.trust import Trust
from privmesh.runtime.client import secure_channel
from privmesh.tokenvault.v1 import tokenvault_pb2 as tv
from privmesh.tokenvault.v1 import tokenvault_pb2_grpc
from tests.runtime.test_console import ROOT, chromium  # noqa: F401 (a fixture)

TOKEN = "demo-t0ken"


@pytest.fixture
async def demo_mesh(tmp_path: Path) -> AsyncIterator[MeshLayout]:
    layout = MeshLayout(tmp_path / "mesh")
    mesh = LocalMesh(layout)
    await mesh.start()
    try:
        endpoints = layout.endpoints()
        output = io.StringIO()
        ctx = DemoContext(layout, Console(file=output, width=200), {e.service: e.target for e in endpoints},
                          tmp_path, {e.service: e.spiffe_id for e in endpoints})
        assert await run_scenario(ctx), output.getvalue()
        yield layout
    finally:
        mesh.stop()


class Auditor:
    """The auditor's own gRPC reads, through the generated stubs, to check the console against."""

    def __init__(self, layout: MeshLayout) -> None:
        self.layout = layout
        self.endpoints = {e.service: (e.target, e.spiffe_id) for e in layout.endpoints()}

    def channel(self, service: str) -> Any:
        target, peer = self.endpoints[service]
        return secure_channel(target, self.layout.identity("auditor"), timeout_seconds=10, peer=peer)

    async def numbers(self) -> dict[str, Any]:
        async with self.channel("key-broker") as ch:
            keys = (await keybroker_pb2_grpc.KeyBrokerStub(ch).ListKeys(kb.ListKeysRequest(page_size=500))).keys
        async with self.channel("token-vault") as ch:
            fields = (await tokenvault_pb2_grpc.TokenVaultStub(ch).ListFields(
                tv.ListFieldsRequest(parent="tenants/-", page_size=500))).fields
        async with self.channel("dp-gateway") as ch:
            dpg = dpgateway_pb2_grpc.DPGatewayStub(ch)
            ledger = (await dpg.ListLedger(dp.ListLedgerRequest(page_size=500))).entries
        async with self.channel("fl-coordinator") as ch:
            stub = fl_pb2_grpc.FLCoordinatorStub(ch)
            federations = (await stub.ListFederations(fl_pb2.ListFederationsRequest(page_size=500))).federations
            runs = {f.name: len((await stub.ListRuns(fl_pb2.ListRunsRequest(parent=f.name, page_size=500))).runs)
                    for f in federations}
        async with self.channel("attestation-verifier") as ch:
            stub = attestation_pb2_grpc.AttestationVerifierStub(ch)
            policies = (await stub.ListPolicies(av.ListPoliciesRequest(page_size=500))).policies
            verdicts = (await stub.ListVerificationResults(av.ListVerificationResultsRequest(page_size=500))).results
        return {"keys": sorted(k.name for k in keys), "fields": sorted(f.name for f in fields),
                "ledger": len(ledger), "runs": runs, "policies": sorted(p.name for p in policies),
                "verdicts": sorted(v.document_sha256 for v in verdicts),
                "rejected": sum(v.verdict == av.VERDICT_REJECTED for v in verdicts)}

    async def heads(self) -> dict[str, int]:
        heads = {}
        for service in self.endpoints:
            async with self.channel(service) as ch:
                reply = await common_pb2_grpc.AuditLogStub(ch).GetAuditHead(common_pb2.GetAuditHeadRequest())
            heads[service] = int(reply.head.sequence)
        return heads


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def _browse(base: str, chromium_path: str, shots: Path, paths: list[str]) -> dict[str, Any]:
    await asyncio.to_thread(shots.mkdir, parents=True, exist_ok=True)
    process = await asyncio.create_subprocess_exec(
        "node", str(ROOT / "tests/demo/console_pages.mjs"), base, TOKEN, chromium_path, str(shots), *paths, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1"})
    out, err = await asyncio.wait_for(process.communicate(), 300)
    assert process.returncode == 0, err.decode()
    shown: dict[str, Any] = json.loads(out)
    return shown


def _table(page: dict[str, Any], table: str) -> list[list[str]]:
    rows: list[list[str]] = next(t["rows"] for t in page["tables"] if t["id"] == table)
    return rows


@pytest.mark.slow
@pytest.mark.timeout(1200)
async def test_the_console_shows_the_demo_state_in_chromium(demo_mesh: MeshLayout, chromium: str) -> None:  # noqa: F811
    layout = demo_mesh
    auditor = Auditor(layout)
    trust = Trust(roots=x509.load_pem_x509_certificates(layout.pki.ca_file.read_bytes()),
                  trust_domain=layout.pki.trust_domain)
    runner, base = await _serve(AuditorConsole(auditor.endpoints, layout.identity("auditor"), trust, TOKEN).app())
    shots = Path(os.environ.get("PRIVMESH_ARTIFACTS", ROOT / "test-artifacts")) / "console-demo"
    try:
        api, before = await auditor.numbers(), await auditor.heads()
        paths = ["/", "/audit?principal=demo-client", *(f"/state/{p}" for p in PAGES)]
        shown = await _browse(base, chromium, shots, paths)
        after = await auditor.heads()
        assert all(page["status"] == 200 and not page["errors"] for page in shown.values()), shown
        overview = {row[0]: row for row in _table(shown["/"], "services")}
        assert set(overview) == set(before)
        for service, row in overview.items():
            assert before[service] <= int(row[1]) <= after[service], (service, row)
            assert row[4], f"{service}'s latest tree checkpoint shows no cosigner"
        # step 6 forged token-vault's history with its stolen key: a witness refused it, the console says so
        assert overview.pop("token-vault")[6].startswith("BROKEN: fork")
        assert all(row[6].startswith("verified") for row in overview.values()), overview
        keys = shown["/state/keys"]
        assert sorted(r[0] for r in _table(keys, "ListKeys")) == api["keys"] and api["keys"]
        assert all("auditor-reads" in r[7] for r in _table(keys, "ListKeys"))
        fields = _table(shown["/state/tokens"], "ListFields")
        assert sorted(r[0] for r in fields) == api["fields"] and api["fields"]
        assert all("demo-client" in r[2] and "MASKED" in r[2] for r in fields)
        budgets = shown["/state/budgets"]
        assert len(_table(budgets, "ListLedger")) == api["ledger"] and budgets["chart"] >= 1
        assert _table(budgets, "GetBudget")
        federations = _table(shown["/state/federations"], "ListFederations")
        assert {r[0]: len([x for x in r[3].split("; ") if x]) for r in federations} == api["runs"]
        assert sum(api["runs"].values()) >= 1
        attestation = shown["/state/attestation"]
        assert sorted(r[0] for r in _table(attestation, "ListPolicies")) == api["policies"]
        verdicts = _table(attestation, "ListVerificationResults")
        assert len(verdicts) == len(api["verdicts"]) and api["rejected"] >= 1
        assert sum("REJECTED" in r[3] for r in verdicts) == api["rejected"]
        assert shown["/audit?principal=demo-client"]["tables"][0]["rows"]

        audit_db = layout.data_dir / "key-broker" / "audit.db"
        with sqlite3.connect(audit_db) as conn:
            conn.execute("DROP TRIGGER audit_entries_no_update")
            conn.execute("UPDATE audit_entries SET principal = 'spiffe://privmesh.local/ns/privmesh/sa/mallory' "
                         "WHERE sequence = 3")
        tampered = await _browse(base, chromium, shots / "tampered", ["/"])
        rows = {row[0]: row for row in _table(tampered["/"], "services")}
        assert rows.pop("key-broker")[6].startswith("BROKEN") and rows.pop("token-vault")[6].startswith("BROKEN")
        assert all(r[6].startswith("verified") for r in rows.values()), rows
    finally:
        await runner.cleanup()
    assert all((shots / f"{name}.png").stat().st_size > 0 for name in ("overview", "state-keys", "state-budgets"))
