"""A local mesh (every service its own process) exporting its spans over OTLP/gRPC to a receiver in the test,
as a platform team configures it: OTEL_TRACES_EXPORTER and OTEL_EXPORTER_OTLP_ENDPOINT, nothing else."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from rich.console import Console

from privmesh.demo import records
from privmesh.demo.context import DemoContext
from privmesh.demo.tokenvault_step import PROFILES, SHREDDED_FIELD, TENANT, _field, _vault_key
from privmesh.mesh.local import LocalMesh, MeshLayout
from privmesh.runtime.client import secure_channel
from privmesh.tokenvault.v1 import tokenvault_pb2 as pb
from privmesh.tokenvault.v1 import tokenvault_pb2_grpc
from tests.observability.otlp_receiver import Received, grpc_receiver


@dataclass
class ObservedMesh:
    mesh: LocalMesh
    received: Received
    sensitive: list[str]  # the demo step's plaintext values

    def scrape(self, service: str) -> str:
        endpoint = next(e for e in self.mesh.endpoints if e.service == service)
        with urllib.request.urlopen(endpoint.metrics, timeout=10) as reply:  # loopback only
            return str(reply.read().decode())

    def log_lines(self, service: str) -> list[str]:
        return (self.mesh.layout.log_dir / f"{service}.log").read_text().splitlines()

    def logs(self, service: str) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.log_lines(service)]


def _context(mesh: LocalMesh, work_dir: Path) -> DemoContext:
    return DemoContext(layout=mesh.layout, console=Console(quiet=True), work_dir=work_dir,
                       targets={e.service: e.target for e in mesh.endpoints},
                       peers={e.service: e.spiffe_id for e in mesh.endpoints})


PATIENTS, BATCH = 12, 6  # the demo's token-vault step, on fewer patients (the CI machine has 2 cores)


async def _demo_requests(ctx: DemoContext) -> list[str]:
    """The demo's token-vault requests: the operator creates the key and fields, the client tokenizes patient
    records in batches (each batch one request); returns the plaintext values sent."""
    key = await _vault_key(ctx)
    services = [pb.DESCRIPTOR.services_by_name["TokenVault"]]
    target, peer = ctx.targets["token-vault"], ctx.peers["token-vault"]
    async with secure_channel(target, ctx.layout.identity("admin"), services, peer=peer) as channel:
        admin = tokenvault_pb2_grpc.TokenVaultStub(channel)
        for field_id, profile in PROFILES.items():
            await admin.CreateField(pb.CreateFieldRequest(parent=TENANT, field_id=field_id, field=_field(
                key, profile, ctx, field_id == SHREDDED_FIELD)))
    items = [pb.TokenizeItem(field=f, value=getattr(p, f), subject_id=p.patient_id)
             for p in records.patients(PATIENTS) for f in PROFILES]
    async with secure_channel(target, ctx.layout.identity("demo-client"), services, peer=peer) as channel:
        client = tokenvault_pb2_grpc.TokenVaultStub(channel)
        step = BATCH * len(PROFILES)
        for start in range(0, len(items), step):
            await client.Tokenize(pb.TokenizeRequest(parent=TENANT, items=items[start:start + step]), timeout=120)
    return [item.value for item in items]


@pytest.fixture(scope="package")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObservedMesh]:
    received = Received()
    receiver, port = grpc_receiver(received)
    mesh = LocalMesh(MeshLayout(tmp_path_factory.mktemp("observed-mesh")))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OTEL_TRACES_EXPORTER", "otlp")
        env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
        env.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
        env.setenv("OTEL_BSP_SCHEDULE_DELAY", "200")
        try:
            asyncio.run(mesh.start())
        except BaseException:
            receiver.stop(None)
            raise
    try:
        sensitive = asyncio.run(_demo_requests(_context(mesh, tmp_path_factory.mktemp("demo"))))
        yield ObservedMesh(mesh, received, sensitive)
    finally:
        mesh.stop()
        receiver.stop(None)
