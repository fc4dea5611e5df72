"""The coordinator's Flower SuperLink: started as a process with TLS and SuperNode authentication, supervised
(restarted with its state database when it dies), and driven through its Control API.

Flower's runtime dependency installation stays disabled (its default; the flag is never passed), so nothing is
fetched at run time. The Control API and ServerAppIo API listen on loopback only: Flower's Control API has no
client authentication in its open-source build, so only processes on the coordinator's host can reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from flwr.proto import control_pb2, control_pb2_grpc, fab_pb2
from flwr.supercore.constant import NOOP_FEDERATION

from privmesh.runtime.client import pinned_options
from privmesh.runtime.identity import own_principal
from privmesh.runtime.ports import free_loopback_port

log = logging.getLogger("privmesh.fl.superlink")
CONTROL_TIMEOUT = 30.0


class SuperLinkError(Exception):
    """The SuperLink is unreachable or refused an operation; `code` is the gRPC code it answered."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class SuperLinkConfig:
    state_dir: Path  # its database, FLWR_HOME and log
    fleet_host: str
    fleet_port: int
    ca_file: Path
    cert_file: Path
    key_file: Path
    env: dict[str, str] = field(default_factory=dict)  # inherited by the ServerApp processes
    control_port: int = 0
    serverappio_port: int = 0

    @property
    def fleet_address(self) -> str:
        return f"{self.fleet_host}:{self.fleet_port}"


@dataclass(frozen=True)
class FlowerRun:
    run_id: int
    status: str  # "pending", "starting", "running", "finished"
    sub_status: str  # "completed", "failed", "stopped" once finished
    details: str


class SuperLink:
    """One supervised flower-superlink process and a Control API client to it."""

    def __init__(self, config: SuperLinkConfig, restart_delay: float = 0.5) -> None:
        self.config = config
        self.control_port = config.control_port or free_loopback_port()
        self.serverappio_port = config.serverappio_port or free_loopback_port()
        self.restart_delay = restart_delay
        self.restarts = 0
        self.restarted_at = 0.0  # wall-clock time of the last restart: ServerApps running then died with it
        self._process: subprocess.Popen[bytes] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()  # set by stop(); read after each await, so not a plain flag
        target = f"127.0.0.1:{self.control_port}"
        self._channel = grpc.secure_channel(  # the SuperLink presents the certificate it was started with
            target, grpc.ssl_channel_credentials(root_certificates=config.ca_file.read_bytes()),
            options=pinned_options(target, own_principal(config.cert_file)))
        self._control = control_pb2_grpc.ControlStub(self._channel)

    @property
    def database(self) -> Path:
        return self.config.state_dir / "superlink.db"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None and self._process.poll() is None else None

    def _command(self) -> list[str]:
        c = self.config
        return [sys.executable, "-m", "privmesh.fl.coordinator.superlink_main",  # flower-superlink, one fix
                "--ssl-ca-certfile", str(c.ca_file), "--ssl-certfile", str(c.cert_file),
                "--ssl-keyfile", str(c.key_file), "--enable-supernode-auth",
                "--database", str(self.database), "--fleet-api-address", c.fleet_address,
                "--control-api-address", f"127.0.0.1:{self.control_port}",
                "--serverappio-api-address", f"127.0.0.1:{self.serverappio_port}"]

    @property
    def pid_file(self) -> Path:
        return self.config.state_dir / "superlink.pid"

    def _stop_orphan(self) -> None:
        """A coordinator killed with SIGKILL leaves its SuperLink (own session) running, holding the Fleet
        port and the database: the next start ends that process group first, if it is still that SuperLink."""
        try:
            pid = int(self.pid_file.read_text())
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return
        if b"privmesh.fl.coordinator.superlink_main" not in command or str(self.database).encode() not in command:
            return
        log.warning("stopping the SuperLink a previous run left behind", extra={"fields": {"pid": pid}})
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    def _spawn(self) -> None:
        c = self.config
        c.state_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **c.env, "FLWR_HOME": str(c.state_dir / "flwr-home"),
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               "FLWR_TELEMETRY_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
        with (c.state_dir / "superlink.log").open("ab") as out:
            # Its own session, so stopping it also stops the SuperExec and ServerApp processes it spawned.
            self._process = subprocess.Popen(self._command(), stdout=out, stderr=subprocess.STDOUT, env=env,
                                             start_new_session=True)
        self.pid_file.write_text(str(self._process.pid))
        log.info("superlink started", extra={"fields": {"pid": self._process.pid, "fleet": c.fleet_address}})

    async def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self._process is None or self._process.poll() is not None:
                raise SuperLinkError("flower-superlink exited during start; see superlink.log")
            try:
                await asyncio.to_thread(self._control.ListNodes, control_pb2.ListNodesRequest(), timeout=2.0)
                return
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise SuperLinkError("flower-superlink did not become ready") from None
                await asyncio.sleep(0.2)

    async def start(self, timeout: float = 60.0) -> None:
        self._stopping.clear()
        self._stop_orphan()
        self._spawn()
        await self._wait_ready(timeout)
        self._supervisor = asyncio.create_task(self._supervise())

    async def _supervise(self) -> None:
        """Restarts the SuperLink whenever it dies; its SQLite state (nodes, runs) survives."""
        while not self._stopping.is_set():
            await asyncio.sleep(0.2)
            process = self._process
            if process is None or process.poll() is None or self._stopping.is_set():
                continue
            log.warning("superlink died; restarting", extra={"fields": {"exit": process.returncode}})
            self._kill_group(process)
            await asyncio.sleep(self.restart_delay)
            if self._stopping.is_set():
                return
            self.restarts += 1
            self.restarted_at = time.time()
            try:
                self._spawn()
                await self._wait_ready(60.0)
            except SuperLinkError:
                log.exception("superlink restart failed")

    @staticmethod
    def _kill_group(process: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)

    async def stop(self) -> None:
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.cancel()
            self._supervisor = None
        process = self._process
        if process is not None and process.poll() is None:
            self._kill_group(process, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(process.wait, 10)
        if process is not None:
            self._kill_group(process)  # whatever of its group is left
            await asyncio.to_thread(process.wait)
        self._channel.close()

    async def _call(self, method: str, request: object) -> object:
        try:
            return await asyncio.to_thread(getattr(self._control, method), request, timeout=CONTROL_TIMEOUT)
        except grpc.RpcError as exc:
            raise SuperLinkError(f"Control.{method}: {exc.code().name}", exc.code()) from None

    async def register_node(self, public_key_pem: bytes) -> int:
        """Registers a SuperNode's public key (Flower's SuperNode authentication); returns its node id."""
        reply = await self._call("RegisterNode", control_pb2.RegisterNodeRequest(public_key=public_key_pem))
        node_id = int(reply.node_id)  # type: ignore[attr-defined]
        if not node_id:
            raise SuperLinkError("Control.RegisterNode returned no node id")
        return node_id

    async def unregister_node(self, node_id: int) -> None:
        try:
            await self._call("UnregisterNode", control_pb2.UnregisterNodeRequest(node_id=node_id))
        except SuperLinkError as exc:
            if exc.code != grpc.StatusCode.NOT_FOUND:
                raise

    async def node_status(self) -> dict[int, tuple[str, str]]:
        """node id -> (status, last activation time) of every registered node."""
        reply = await self._call("ListNodes", control_pb2.ListNodesRequest())
        return {int(n.node_id): (n.status, n.last_activated_at) for n in reply.nodes_info}  # type: ignore[attr-defined]

    async def start_run(self, fab: bytes, fab_hash: str) -> int:
        reply = await self._call("StartRun", control_pb2.StartRunRequest(
            fab=fab_pb2.Fab(hash_str=fab_hash, content=fab), federation=NOOP_FEDERATION))
        run_id = int(reply.run_id)  # type: ignore[attr-defined]
        if not run_id:
            raise SuperLinkError("Control.StartRun refused the run")
        return run_id

    async def stop_run(self, run_id: int) -> None:
        try:
            await self._call("StopRun", control_pb2.StopRunRequest(run_id=run_id))
        except SuperLinkError as exc:
            if exc.code not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION):
                raise

    async def run_status(self, run_id: int) -> FlowerRun | None:
        reply = await self._call("ListRuns", control_pb2.ListRunsRequest(run_id=run_id))
        run = reply.run_dict.get(run_id)  # type: ignore[attr-defined]
        if run is None:
            return None
        return FlowerRun(run_id, run.status.status, run.status.sub_status, run.status.details)
