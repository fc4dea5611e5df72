"""The coordinator's FLARE server: a supervised FLARE server process (started from the kit the coordinator
provisioned, binding the configured address only) and FLARE's admin API (the coordinator's admin kit) to submit
jobs, read their status, abort them and disable revoked sites.

FLARE's admin API is blocking, so every call runs in a worker thread under one lock (a Session is not meant to be
shared between threads).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nvflare.fuel.flare_api.flare_api import Session, new_secure_session

from privmesh.fl.flare.kit import ADMIN, ORG
from privmesh.fl.flare.provision import FlareProvisioner

log = logging.getLogger("privmesh.fl.flare")


ABANDONED = "FINISHED:ABANDONED"  # FLARE's RunStatus.ABANDONED


class FlareError(Exception):
    """The FLARE server is unreachable or refused an admin command."""


@dataclass(frozen=True)
class FlareJob:
    job_id: str
    status: str  # FLARE's RunStatus: SUBMITTED, DISPATCHED, RUNNING, FINISHED:COMPLETED, FINISHED:ABORTED, ...

    @property
    def finished(self) -> bool:
        return self.status.startswith("FINISHED")


@dataclass(frozen=True)
class FlareServerConfig:
    provisioner: FlareProvisioner
    env: dict[str, str] = field(default_factory=dict)  # inherited by FLARE's server job processes


class FlareServer:
    """One supervised FLARE server and an admin session to it."""

    def __init__(self, config: FlareServerConfig) -> None:
        self.config = config
        self.restarts = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._session: Session | None = None
        self._lock = threading.Lock()
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def workspace(self) -> Path:
        return self.config.provisioner.server_dir

    @property
    def address(self) -> str:
        p = self.config.provisioner
        return f"{p.server_host}:{p.port}"

    def _spawn(self) -> None:
        ws = self.workspace
        env = {**os.environ, **self.config.env, "PYTHONUNBUFFERED": "1",
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        command = [sys.executable, "-m", "privmesh.fl.flare.server_main", "-m", str(ws), "-s", "fed_server.json",
                   "--set", "secure_train=true", f"org={ORG}", "config_folder=config"]
        with (ws / "server.log").open("ab") as out:
            # Its own session, so stopping it also stops the job processes it spawned.
            self._process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ws,
                                             start_new_session=True)
        log.info("flare server started", extra={"fields": {"pid": self._process.pid, "address": self.address}})

    def _connect(self, timeout: float) -> Session:
        if self._session is None:
            self._session = new_secure_session(ADMIN, str(self.config.provisioner.admin_dir), timeout=timeout)
        return self._session

    async def start(self, timeout: float = 120.0) -> None:
        self._stopping = False
        await asyncio.to_thread(self.config.provisioner.ensure_server)
        self._spawn()
        deadline = time.monotonic() + timeout
        while True:
            if self._process is None or self._process.poll() is not None:
                raise FlareError("the FLARE server exited during start; see server.log")
            try:
                await self._call(lambda s: s.get_system_info(), connect_timeout=5.0)
                break
            except FlareError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
        self._supervisor = asyncio.create_task(self._supervise())

    async def _supervise(self) -> None:
        """Restarts the FLARE server when it dies (its job store and disabled sites persist in its workspace)."""
        while not self._stopping:
            await asyncio.sleep(0.5)
            process = self._process
            if process is None or process.poll() is None or self._stopping:
                continue
            log.warning("flare server died; restarting", extra={"fields": {"exit": process.returncode}})
            self._kill_group(process)
            self._drop_session()
            self.restarts += 1
            self._spawn()

    def _drop_session(self) -> None:
        with self._lock:
            if self._session is not None:
                with contextlib.suppress(Exception):
                    self._session.close()
                self._session = None

    @staticmethod
    def _kill_group(process: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)

    async def stop(self) -> None:
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            self._supervisor = None
        await asyncio.to_thread(self._drop_session)
        process = self._process
        if process is not None and process.poll() is None:
            self._kill_group(process, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(process.wait, 10)
        if process is not None:
            self._kill_group(process)
            await asyncio.to_thread(process.wait)

    async def _call(self, command: Any, connect_timeout: float = 30.0) -> Any:
        def run() -> Any:
            with self._lock:
                try:
                    return command(self._connect(connect_timeout))
                except Exception as exc:
                    if self._session is not None:
                        with contextlib.suppress(Exception):
                            self._session.close()
                    self._session = None
                    raise FlareError(f"{type(exc).__name__}: {exc}") from None
        return await asyncio.to_thread(run)

    def audit_segment(self) -> tuple[int, bytes] | None:
        """FLARE's own audit log (the server's audit.log) after the part already folded into the mesh's audit:
        (start offset, whole lines), or None when nothing new was written."""
        path = self.workspace / "audit.log"
        if not path.exists():
            return None
        folded = self.workspace / "audit.folded"
        start = int(folded.read_text()) if folded.exists() else 0
        with path.open("rb") as handle:
            handle.seek(start)
            data = handle.read()
        data = data[:data.rfind(b"\n") + 1]
        return (start, data) if data else None

    def mark_folded(self, end: int) -> None:
        (self.workspace / "audit.folded").write_text(str(end))

    async def submit(self, job_dir: Path) -> str:
        return str(await self._call(lambda s: s.submit_job(str(job_dir))))

    async def job(self, job_id: str) -> FlareJob:
        """The job's status in FLARE's job store, except that a job submitted before the running server process
        started and not run by it is FINISHED:ABANDONED: FLARE 2.9 never revisits a dead server's jobs, so their
        stored status would say RUNNING for ever."""
        def read(session: Session) -> tuple[dict[str, Any], Any]:
            return session.get_job_meta(job_id), session.get_system_info()

        meta, info = await self._call(read)
        status = str(meta.get("status", ""))
        server_start = float(info.server_info.start_time or 0)
        if (status in ("DISPATCHED", "RUNNING") and float(meta.get("submit_time") or 0) < server_start
                and job_id not in {j.job_id for j in info.job_info}):
            status = ABANDONED
        return FlareJob(job_id, status)

    async def abort(self, job_id: str) -> None:
        with contextlib.suppress(FlareError):  # a finished job cannot be aborted
            await self._call(lambda s: s.abort_job(job_id))

    async def disable_site(self, site: str) -> None:
        """FLARE refuses the site's registration and heartbeats from now on (persisted by the server)."""
        await self._call(lambda s: s.disable_client(site))

    async def connected_sites(self) -> dict[str, float]:
        """site -> last connect time of every client connected now."""
        info = await self._call(lambda s: s.get_system_info())
        return {c.name: float(c.last_connect_time or 0) for c in info.client_info}
