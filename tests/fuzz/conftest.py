"""One local mesh (every service as its own process, real mTLS on loopback) for the fuzz tests, and a
synchronous caller per service with the admin identity, whom the policy allows every method."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from privmesh.mesh.catalog import CATALOG, FL_REPORTER
from privmesh.mesh.local import LocalMesh, MeshLayout, check_health
from privmesh.runtime.tls import channel_credentials


@dataclass
class Target:
    """A service process of the mesh and a channel to it."""

    name: str
    grpc_services: tuple[str, ...]
    address: str
    channel: grpc.Channel
    log_file: Path
    spiffe_id: str


class Mesh:
    def __init__(self, mesh: LocalMesh, targets: dict[str, Target]) -> None:
        self.local = mesh
        self.targets = targets

    def by_grpc_service(self, full_name: str) -> Target:
        return next(t for t in self.targets.values() if full_name in t.grpc_services)

    def alive(self, target: Target) -> str | None:
        """None while the service's process runs and reports SERVING; otherwise why not, with its log's tail."""
        process = self.local.processes[target.name]
        admin = self.local.layout.identity("admin")
        if process.poll() is not None:
            problem = f"{target.name} exited with {process.returncode}"
        else:
            status = asyncio.run(check_health(target.address, admin, timeout=10, peer=target.spiffe_id))
            if status == "SERVING":
                return None
            problem = f"{target.name} reports {status}"
        tail = target.log_file.read_text(errors="replace").splitlines()[-40:]
        return problem + "\n" + "\n".join(tail)


@pytest.fixture(scope="session")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    layout = MeshLayout(tmp_path_factory.mktemp("fuzz-mesh"))
    local = LocalMesh(layout)
    endpoints = asyncio.run(local.start(timeout=600))
    admin = layout.identity("admin")
    credentials = channel_credentials(admin.ca_file, admin.cert_file, admin.key_file)
    targets = {}
    for endpoint, spec in zip(endpoints, CATALOG, strict=True):
        services = (spec.grpc_service, FL_REPORTER) if spec.name == "fl-coordinator" else (spec.grpc_service,)
        targets[spec.name] = Target(spec.name, (*services, "privmesh.common.v1.AuditLog"), endpoint.target,
                                    grpc.secure_channel(endpoint.target, credentials),
                                    layout.log_dir / f"{spec.name}.log", endpoint.spiffe_id)
    try:
        yield Mesh(local, targets)
    finally:
        for target in targets.values():
            target.channel.close()
        local.stop()
