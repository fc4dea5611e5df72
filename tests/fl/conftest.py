"""A real fl-coordinator environment for a test module: key-broker and attestation-verifier over mTLS, the
coordinator (which starts and supervises a real flower-superlink process, and a FLARE server for the "flare"
engine), and three hospitals training on their own CSV files: real flower-supernode processes on Flower, real
FLARE clients (from the startup kits the coordinator issues) on FLARE.

The engine is the fixture's parameter (`pytest.mark.parametrize("fl_env", ENGINES, indirect=True,
scope="module")`), else "flare" for a module with `FLARE = True`, else "flower"."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from privmesh.attestation import server as attestation_server
from privmesh.attestation.v1 import attestation_pb2_grpc
from privmesh.demo import records
from privmesh.enclave.simulator import DevCa
from privmesh.fl import server as fl_server
from privmesh.fl.participant.sdk import FlareClient, ParticipantKeys, SuperNode, write_training_csv
from privmesh.fl.v1 import fl_pb2 as pb
from privmesh.fl.v1 import fl_pb2_grpc
from privmesh.keybroker import server as keybroker_server
from privmesh.runtime.client import secure_channel
from privmesh.runtime.config import load_config
from privmesh.runtime.pki import DevPki
from privmesh.runtime.ports import free_loopback_port
from privmesh.runtime.server import MeshServer, ServiceDefinition
from tests.conftest import identity, server_config, spiffe
from tests.keybroker.conftest import broker_settings

FL = "privmesh.fl.v1.FLCoordinator"
REPORTER = "privmesh.fl.v1.FLRunReporter"
ATTESTATION = "privmesh.attestation.v1.AttestationVerifier"
KEYBROKER = "privmesh.keybroker.v1.KeyBroker"
COORDINATOR = "fl-coordinator"
FL_RULES = [
    {"name": "operator", "principals": [spiffe("alice")], "methods": [f"{FL}/*"]},
    {"name": "operator-decrypts", "principals": [spiffe("alice")], "methods": [f"{FL}/GetModel"],
     "resources": ["federations/*/runs/*/model:decrypted"]},  # the view is named: no wildcard grants it
    {"name": "reader", "principals": [spiffe("bob")], "methods": [f"{FL}/GetModel"],
     "resources": ["federations/*/runs/*/model"]},  # the encrypted model only: no ":decrypted" view
    {"name": "self-reports", "principals": [spiffe(COORDINATOR)], "methods": [f"{REPORTER}/*"]},
    # A site operator who registered no participant: the coordinator itself must refuse it others' kits.
    {"name": "site-operator", "principals": [spiffe("carol")],
     "methods": [f"{FL}/GetStartupKit", f"{FL}/ReportSiteAudit"]},
    {"name": "auditor", "principals": [spiffe("auditor")], "methods": ["privmesh.common.v1.AuditLog/*"]},
    # A subtree glob: the federation's models, but never their decrypted view (no rule names it).
    {"name": "auditor-models", "principals": [spiffe("auditor")], "methods": [f"{FL}/GetModel"],
     "resources": ["federations/plain/**"]},
]
HOSPITALS = records.HOSPITALS
ENGINES = ("flower", "flare")


def write_hospital_csv(path: Path, hospital: str, count: int = 90) -> Path:
    return write_training_csv(path, records.FEATURES, "high_risk", [
        (records.scaled_features(p), p.high_risk) for p in records.patients(count) if p.hospital == hospital])


async def _start(definition: ServiceDefinition, path: Path) -> MeshServer:
    config, settings = load_config(path, definition.settings_model, environ={})
    server = MeshServer(definition, config, settings)
    await server.start()
    return server


@dataclass
class Hospital:
    name: str
    keys: ParticipantKeys
    data: Path
    node: SuperNode | FlareClient | None = None


@dataclass
class FlEnv:
    tmp: Path
    pki: DevPki
    coordinator: MeshServer
    stub: fl_pb2_grpc.FLCoordinatorStub  # alice: the operator
    reader: fl_pb2_grpc.FLCoordinatorStub  # bob: may fetch the encrypted model only
    verifier: attestation_pb2_grpc.AttestationVerifierStub
    enclave_ca: DevCa
    hospitals: list[Hospital]
    servers: list[MeshServer] = field(default_factory=list)
    engine: str = "flower"
    federation: str = ""  # the federation whose participants the hospitals are now

    @property
    def flare(self) -> bool:
        return self.engine == "flare"

    @property
    def flare_dir(self) -> Path:
        return self.tmp / "fl" / "flare"

    def _children(self, module: bytes, marker: str) -> list[int]:
        """Processes running `module` with `marker` (a path under our tmp) in their command line, started by this
        process (a child it forks has the same command line until it execs)."""
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    argv = (entry / "cmdline").read_bytes().split(b"\0")
                    parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    continue
                if module in argv[:3] and marker.encode() in argv and parent == os.getpid():
                    found.append(int(entry.name))
        return found

    def engine_pids(self) -> list[int]:
        """The engine's server process the coordinator supervises: the flower-superlink or the FLARE server."""
        if self.flare:
            return self._children(b"privmesh.fl.flare.server_main", str(self.flare_dir / "server"))
        return self._children(b"privmesh.fl.coordinator.superlink_main",
                              str(self.tmp / "fl" / "superlink" / "superlink.db"))

    def engine_nodes(self) -> int:
        """What the engine knows of participants: the SuperLink's registered node keys on Flower; on FLARE the
        sites the coordinator's FLARE CA certified (a kit, issued after admission; it keeps no copy, so its audited
        GetStartupKit records say which)."""
        if self.flare:
            return len({a[3]["flare_site"] for a in self.audit() if a[0] == "GetStartupKit" and a[2] == "SUCCESS"})
        with sqlite3.connect(self.tmp / "fl" / "superlink" / "superlink.db") as conn:
            return int(conn.execute("SELECT count(*) FROM node").fetchone()[0])

    def flare_job_status(self, job_id: str) -> str:
        """FLARE's own record of a job (its job store's meta): RUNNING, FINISHED:COMPLETED, FINISHED:ABORTED..."""
        meta = self.flare_dir / "server" / "storage" / "jobs" / job_id / "meta"
        return str(json.loads(meta.read_text())["status"])

    def audit(self) -> list[tuple[str, str, str, dict[str, str]]]:
        with sqlite3.connect(self.tmp / "fl" / "audit.db") as conn:
            rows = conn.execute("SELECT operation, resource, outcome, details FROM audit_entries ORDER BY sequence")
            return [(r[0], r[1], r[2], json.loads(r[3])) for r in rows]

    def rows(self, table: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.tmp / "fl" / "fl.db") as conn:
            return conn.execute(f"SELECT * FROM {table}").fetchall()

    def log_tails(self, lines: int = 40) -> str:
        """The last lines of the engine server's and each participant's log: what a stalled run needs explained."""
        if self.flare:
            logs = [("flare server", self.flare_dir / "server" / "log.txt")]
            logs += [(h.name, h.node.workspace / "client.log") for h in self.hospitals
                     if isinstance(h.node, FlareClient)]
        else:
            logs = [("superlink", self.tmp / "fl" / "superlink" / "superlink.log")]
            logs += [(h.name, self.tmp / h.name / "work" / "supernode.log") for h in self.hospitals]
        parts = []
        for name, path in logs:
            text = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else ["(no log)"]
            parts.append(f"--- {name}\n" + "\n".join(text))
        return "\n".join(parts)

    def fleet_address(self) -> str:
        return str(self.coordinator.settings.fleet_address)  # type: ignore[attr-defined]

    async def start_nodes(self, parent: str) -> None:
        """Starts each hospital's participant process of `parent` unless it runs: a SuperNode with the hospital's
        key, or a FLARE client from the startup kit GetStartupKit returns to the operator (the registrant) after
        admission, for the hospital's own FLARE key."""
        self.federation = parent
        for h in self.hospitals:
            if h.node is not None and h.node.alive():
                continue
            if self.flare:
                kit = await self.stub.GetStartupKit(h.keys.flare_kit_request(f"{parent}/participants/{h.name}"))
                workspace = self.tmp / h.name / "flare" / parent.rsplit("/", 1)[1]
                h.node = FlareClient(kit.startup_kit, kit.site, h.data, workspace, h.keys).start()
            else:
                h.node = SuperNode(h.keys, self.fleet_address(), self.pki.ca_file, h.data,
                                   self.tmp / h.name / "work").start()

    def stop_nodes(self) -> None:
        for h in self.hospitals:
            if h.node is not None:
                h.node.stop()
                h.node = None


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fl_env(tmp_path_factory: pytest.TempPathFactory, pki: DevPki, request: pytest.FixtureRequest
                 ) -> AsyncIterator[FlEnv]:
    engine = getattr(request, "param", "flare" if getattr(request.module, "FLARE", False) else "flower")
    fl_tmp = tmp_path_factory.mktemp(f"fl-{engine}")
    for name in (COORDINATOR, "key-broker", "attestation-verifier"):
        pki.issue(name)
    servers: list[MeshServer] = []
    kb_dir, av_dir, fl_dir = fl_tmp / "kb", fl_tmp / "av", fl_tmp / "fl"
    for d in (kb_dir, av_dir, fl_dir):
        d.mkdir()
    kb_rules = [{"name": "coordinator", "principals": [spiffe(COORDINATOR)], "methods": [f"{KEYBROKER}/*"]}]
    servers.append(await _start(keybroker_server.DEFINITION, server_config(kb_dir, pki, kb_rules,
                                                                          broker_settings(kb_dir))))
    enclave_ca = DevCa.load_or_create(fl_tmp / "enclave-sim")
    (fl_tmp / "dev-root.pem").write_bytes(enclave_ca.root_pem)
    av_rules = [{"name": "admin", "principals": [spiffe("alice")], "methods": [f"{ATTESTATION}/*"]},
                {"name": "coordinator", "principals": [spiffe(COORDINATOR)],
                 "methods": [f"{ATTESTATION}/VerifyAttestation", f"{ATTESTATION}/GetPolicy"]}]
    servers.append(await _start(attestation_server.DEFINITION, server_config(av_dir, pki, av_rules, {
        "database": f"sqlite:///{av_dir / 'attestation.db'}", "token_signing_key_file": str(av_dir / "token.pem"),
        "dev_root_files": [str(fl_tmp / "dev-root.pem")]})))
    kb_target, av_target = (f"127.0.0.1:{s.port}" for s in servers)
    settings: dict[str, object] = {"database": f"sqlite:///{fl_dir / 'fl.db'}", "key_broker_target": kb_target,
                "key_broker_identity": spiffe("server"), "attestation_verifier_identity": spiffe("server"),
                "attestation_verifier_target": av_target, "fleet_address": f"127.0.0.1:{free_loopback_port()}"}
    if engine == "flare":  # FLARE federations: a FLARE server too
        flare = {"address": f"localhost:{free_loopback_port()}"}
        if getattr(request.module, "FLARE_CC_POLICY", None):  # sites must present fresh Nitro evidence to FLARE
            flare["cc_policy"] = request.module.FLARE_CC_POLICY
        settings["flare"] = flare
    config = server_config(fl_dir, pki, FL_RULES, settings, listen=f"127.0.0.1:{free_loopback_port()}")
    # The coordinator serves with its own mesh identity (its ServerApps report with it too).
    data = config.read_text().replace(str(pki.bundle("server").cert_file), str(pki.bundle(COORDINATOR).cert_file))
    config.write_text(data.replace(str(pki.bundle("server").key_file), str(pki.bundle(COORDINATOR).key_file)))
    coordinator = await _start(fl_server.DEFINITION, config)
    servers.append(coordinator)
    target = f"127.0.0.1:{coordinator.port}"
    services = [pb.DESCRIPTOR.services_by_name["FLCoordinator"]]
    alice = secure_channel(target, identity(pki, "alice"), services, timeout_seconds=60, peer=spiffe(COORDINATOR))
    bob = secure_channel(target, identity(pki, "bob"), services, timeout_seconds=60, peer=spiffe(COORDINATOR))
    av = secure_channel(av_target, identity(pki, "alice"), peer=spiffe("server"))
    hospitals = []
    for name in HOSPITALS:
        keys = ParticipantKeys.load_or_create(fl_tmp / name)
        hospitals.append(Hospital(name, keys, write_hospital_csv(fl_tmp / name / "data.csv", name)))
    env = FlEnv(fl_tmp, pki, coordinator, fl_pb2_grpc.FLCoordinatorStub(alice), fl_pb2_grpc.FLCoordinatorStub(bob),
                attestation_pb2_grpc.AttestationVerifierStub(av), enclave_ca, hospitals, servers, engine)
    try:
        yield env
    finally:
        env.stop_nodes()
        for channel in (alice, bob, av):
            await channel.close()
        for server in reversed(servers):
            await server.stop(grace=0)
