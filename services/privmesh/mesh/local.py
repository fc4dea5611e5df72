"""Runs the local mesh: prepares a state directory (PKI, configs, authorization policy), starts every
catalogued service as a process, waits for health over mTLS, and stops them cleanly."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from privmesh.console.inventory import AUDITOR_VIEWS
from privmesh.console.inventory import METHODS as CONSOLE_METHODS
from privmesh.mesh.catalog import CATALOG, ServiceSpec
from privmesh.runtime.client import ClientIdentity, secure_channel
from privmesh.runtime.pki import DevPki
from privmesh.runtime.ports import free_loopback_port

CLIENTS = ("admin", "auditor", "demo-client")
RENEW_MARGIN_HOURS = 2
START_TIMEOUT_SECONDS = 600.0  # a loaded CI machine can take minutes; a service that exits is reported at once
PROGRESS_EVERY_SECONDS = 10.0
LOG_TAIL_LINES = 20
#: Per caller identity, on every service of a local mesh: far above what the demo, the tests or the soak
#: send, far below what a runaway client can.
LOCAL_RATE_LIMITS = [{"name": "all-methods", "methods": ["*"], "per_second": 500, "burst": 1000}]


class MeshStartError(RuntimeError):
    """A service of the mesh exited or did not become healthy; the message names it and quotes its log."""


@dataclass(frozen=True)
class Endpoint:
    service: str
    target: str
    metrics: str
    pid: int
    spiffe_id: str  # what clients pin: the identity the service's certificate must carry


class MeshLayout:
    """Where a local mesh keeps everything, under one state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.root = Path(state_dir).resolve()
        self.pki = DevPki(self.root / "pki")
        self.config_dir = self.root / "config"
        self.data_dir = self.root / "data"
        self.log_dir = self.root / "logs"
        self.mesh_file = self.root / "mesh.json"
        self.policy_file = self.config_dir / "authz-policy.yaml"

    def identity(self, name: str) -> ClientIdentity:
        bundle = self.pki.bundle(name)
        return ClientIdentity(bundle.ca_file, bundle.cert_file, bundle.key_file)

    def audit_key_ids(self, services: Iterable[str]) -> dict[str, str]:
        """The operator's pins: each service's audit key id, from the key files the mesh was deployed with."""
        from privmesh.runtime.audit.checkpoint import raw_public_key
        from privmesh.runtime.audit.log import load_or_create_signing_key

        return {s: hashlib.sha256(raw_public_key(load_or_create_signing_key(
            self.data_dir / s / "audit-signing-key.pem").public_key())).hexdigest() for s in services}

    def endpoints(self) -> list[Endpoint]:
        if not self.mesh_file.exists():
            return []
        return [Endpoint(**e) for e in json.loads(self.mesh_file.read_text())["endpoints"]]


def _policy(pki: DevPki, specs: tuple[ServiceSpec, ...]) -> dict[str, Any]:
    rules: list[dict[str, Any]] = [
        {"name": "admin", "principals": [pki.spiffe_id("admin")], "methods": ["*"]},
        {"name": "auditor", "principals": [pki.spiffe_id("auditor")], "methods": ["privmesh.common.v1.AuditLog/*"]},
        {"name": "auditor-read", "principals": [pki.spiffe_id("auditor")], "methods": list(CONSOLE_METHODS)},
        {"name": "auditor-views", "principals": [pki.spiffe_id("auditor")], "methods": list(CONSOLE_METHODS),
         "resources": list(AUDITOR_VIEWS)},
        {"name": "receipts", "principals": [pki.spiffe_id(c) for c in CLIENTS],
         "methods": ["privmesh.common.v1.AuditLog/GetAuditReceipt"]},
        {"name": "witnesses", "principals": [pki.spiffe_id(s.name) for s in specs],
         "methods": ["privmesh.common.v1.AuditWitness/AddCheckpoint"]},
    ]
    views = [view for spec in specs for view in spec.admin_views]
    if views:
        rules.append({"name": "admin-views", "principals": [pki.spiffe_id("admin")], "methods": ["*"],
                      "resources": views})
    for spec in specs:
        if spec.client_methods:
            rules.append({"name": f"demo-client-{spec.name}", "principals": [pki.spiffe_id("demo-client")],
                          "methods": list(spec.client_methods)})
        for peer, methods in spec.peer_methods.items():
            rules.append({"name": f"{peer}-to-{spec.name}", "principals": [pki.spiffe_id(peer)],
                          "methods": list(methods)})
    return {"rules": rules}


def prepare(layout: MeshLayout, specs: tuple[ServiceSpec, ...] = CATALOG) -> dict[str, Path]:
    """Creates or refreshes the state directory; returns each service's config file."""
    import datetime as dt

    for directory in (layout.root, layout.config_dir, layout.data_dir, layout.log_dir):
        directory.mkdir(parents=True, exist_ok=True)
    if not layout.pki.exists():
        layout.pki.init()
    for name in (*[s.name for s in specs], *CLIENTS):
        if layout.pki.expires_within(name, dt.timedelta(hours=RENEW_MARGIN_HOURS)):
            layout.pki.issue(name)
    layout.policy_file.write_text(yaml.safe_dump(_policy(layout.pki, specs), sort_keys=False))
    configs = {}
    listen = {spec.name: f"127.0.0.1:{free_loopback_port()}" for spec in specs}
    for spec in specs:
        bundle = layout.pki.bundle(spec.name)
        data_dir = layout.data_dir / spec.name
        data_dir.mkdir(exist_ok=True)
        config = {
            "server": {
                "listen": listen[spec.name],
                "tls": {"ca_file": str(bundle.ca_file), "cert_file": str(bundle.cert_file),
                        "key_file": str(bundle.key_file)},
                "authz_policy": str(layout.policy_file),
                "audit": {"database": f"sqlite:///{data_dir / 'audit.db'}",
                          "signing_key_file": str(data_dir / "audit-signing-key.pem"),
                          "witnesses": [{"service": peer, "target": target} for peer, target in listen.items()
                                        if peer != spec.name]},
                "metrics": {"enabled": True, "port": free_loopback_port()},
                "state_dir": str(data_dir),
                "rate_limits": LOCAL_RATE_LIMITS,
            },
            "service": spec.local_settings(layout.root),
        }
        path = layout.config_dir / f"{spec.name}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        configs[spec.name] = path
    return configs


async def check_health(target: str, identity: ClientIdentity, service: str = "", timeout: float = 2.0, *,
                       peer: str) -> str:
    """The health status name of `service` at `target` ("UNREACHABLE" when the call fails, or when the server
    is not `peer`)."""
    try:
        async with secure_channel(target, identity, timeout_seconds=timeout, peer=peer) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service))
            return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
    except Exception:
        return "UNREACHABLE"


class LocalMesh:
    """The running processes of a local mesh."""

    def __init__(self, layout: MeshLayout, specs: tuple[ServiceSpec, ...] = CATALOG) -> None:
        self.layout = layout
        self.specs = specs
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.endpoints: list[Endpoint] = []

    def _launch(self, name: str, config: Path) -> subprocess.Popen[bytes]:
        module = next(s.module for s in self.specs if s.name == name)
        with (self.layout.log_dir / f"{name}.log").open("ab") as log:
            return subprocess.Popen([sys.executable, "-m", module, "--config", str(config)],
                                    stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def _spawn(self) -> None:
        configs = prepare(self.layout, self.specs)
        for spec in self.specs:
            self.processes[spec.name] = self._launch(spec.name, configs[spec.name])
            server = yaml.safe_load(configs[spec.name].read_text())["server"]
            self.endpoints.append(Endpoint(spec.name, server["listen"],
                                           f"http://127.0.0.1:{server['metrics']['port']}/metrics",
                                           self.processes[spec.name].pid, self.layout.pki.spiffe_id(spec.name)))
        self.layout.mesh_file.write_text(json.dumps({"endpoints": [e.__dict__ for e in self.endpoints]}, indent=2))

    async def start(self, timeout: float = START_TIMEOUT_SECONDS,
                    progress: Callable[[str], None] | None = None) -> list[Endpoint]:
        """Starts every service and returns once each reports SERVING. Waits as long as a busy machine needs
        (up to `timeout`), telling `progress` every PROGRESS_EVERY_SECONDS what it still waits for; a service
        that exits, or is not SERVING by then, stops them all and raises MeshStartError with its log's tail."""
        self._spawn()
        await self._wait_serving([s.name for s in self.specs], timeout, progress)
        return self.endpoints

    async def restart(self, name: str, timeout: float = START_TIMEOUT_SECONDS) -> Endpoint:
        """Starts one service again (e.g. after it was killed) on its configuration and port; waits as `start`."""
        process = self.processes[name]
        if process.poll() is None:
            raise RuntimeError(f"{name} is still running")
        self.processes[name] = self._launch(name, self.layout.config_dir / f"{name}.yaml")
        index = [s.name for s in self.specs].index(name)
        self.endpoints[index] = Endpoint(**{**self.endpoints[index].__dict__, "pid": self.processes[name].pid})
        await self._wait_serving([name], timeout, None)
        return self.endpoints[index]

    async def _wait_serving(self, names: list[str], timeout: float, progress: Callable[[str], None] | None) -> None:
        admin = self.layout.identity("admin")
        started = time.monotonic()
        next_report = started + PROGRESS_EVERY_SECONDS
        specs = {s.name: s for s in self.specs}
        endpoints = {e.service: e for e in self.endpoints}
        waiting = list(names)
        statuses = {name: "UNREACHABLE" for name in waiting}
        while waiting:
            for name in list(waiting):
                process = self.processes[name]
                if process.poll() is not None:
                    self._fail(name, f"{name} exited with status {process.returncode} while starting")
                endpoint = endpoints[name]
                statuses[name] = await check_health(endpoint.target, admin, specs[name].grpc_service,
                                                    peer=endpoint.spiffe_id)
                if statuses[name] == "SERVING":
                    waiting.remove(name)
            if not waiting:
                break
            now = time.monotonic()
            if now - started > timeout:
                self._fail(waiting[0], f"{waiting[0]} did not become healthy within {timeout:.0f} s "
                                       f"({statuses[waiting[0]]})")
            if progress is not None and now >= next_report:
                progress(f"waiting for {', '.join(waiting)} ({now - started:.0f} s)")
                next_report = now + PROGRESS_EVERY_SECONDS
            await asyncio.sleep(0.2)

    def log_tail(self, name: str, lines: int = LOG_TAIL_LINES) -> str:
        log_file = self.layout.log_dir / f"{name}.log"
        if not log_file.exists():
            return ""
        return "\n".join(log_file.read_text(errors="replace").splitlines()[-lines:])

    def _fail(self, name: str, problem: str) -> NoReturn:
        self.stop()
        log_file = self.layout.log_dir / f"{name}.log"
        raise MeshStartError(f"{problem}; the last lines of {log_file}:\n{self.log_tail(name)}")

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM (each service drains), then SIGKILL whatever is still running after `grace` seconds."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()
        if self.layout.mesh_file.exists():
            self.layout.mesh_file.unlink()
