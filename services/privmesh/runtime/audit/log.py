"""The audit log a service writes to. Fail closed: an operation awaits its entry's commit, and if the
entry cannot be written the operation gets an error and must not proceed.

Appends from concurrent calls are committed together (group commit), so auditing every call costs one
transaction per batch rather than per call. Under load (the previous commit ended less than
`commit_delay` ago) a commit first waits `commit_delay` for more calls to join it, as PostgreSQL's
commit_delay does; an idle log commits at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from privmesh.runtime.audit.chain import Checkpoint, Entry, Event
from privmesh.runtime.audit.store import AuditStore
from privmesh.runtime.context import current_principal, refusal_audited
from privmesh.runtime.errors import Unavailable

log = logging.getLogger("privmesh.audit")


class AuditUnavailable(Unavailable):
    def __init__(self) -> None:
        super().__init__("AUDIT_UNAVAILABLE",
                         "the audit record could not be written, so the operation was not performed")


def load_or_create_signing_key(path: Path) -> Ed25519PrivateKey:
    """The service's checkpoint-signing key; created with mode 0600 on first start."""
    path = Path(path)
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} does not hold an Ed25519 private key")
        return key
    key = Ed25519PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = path.open("xb")
    path.chmod(0o600)
    with fd:
        fd.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    return key


class AuditObserver(Protocol):
    """Told of every record written and every one that could not be (the server's metrics)."""

    def audit_recorded(self, operation: str, outcome: str) -> None: ...

    def audit_failed(self, count: int) -> None: ...


class AuditLog:
    def __init__(self, store: AuditStore, public_key: Ed25519PublicKey, commit_delay: float = 0.002,
                 observer: AuditObserver | None = None) -> None:
        self.store = store
        self._observer = observer
        self._commit_delay = commit_delay
        self._last_commit = 0.0
        self.service = store.service
        self.public_key = public_key
        self._pending: list[tuple[Event, asyncio.Future[Entry]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def append(self, operation: str, *, resource: str = "", outcome: str = "SUCCESS",
                     details: Mapping[str, str] | None = None, principal: str | None = None) -> Entry:
        """Records an operation; raises AuditUnavailable (UNAVAILABLE) when the record cannot be written."""
        event = Event(self.service, principal or current_principal.get(), operation, resource, outcome,
                      {k: str(v) for k, v in (details or {}).items()})
        future: asyncio.Future[Entry] = asyncio.get_running_loop().create_future()
        self._pending.append((event, future))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush())
        entry = await future
        if outcome == "DENIED":
            refusal_audited.set(True)
        return entry

    async def _flush(self) -> None:
        try:
            while self._pending:
                if self._commit_delay and time.monotonic() - self._last_commit < self._commit_delay:
                    await asyncio.sleep(self._commit_delay)
                batch, self._pending = self._pending, []
                try:
                    entries = await self.store.db.call_from_loop(self.store.append_batch, [event for event, _ in batch])
                except Exception as exc:  # any storage failure must fail the operations closed
                    log.error("audit append failed: %s", type(exc).__name__)
                    if self._observer is not None:
                        self._observer.audit_failed(len(batch))
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(AuditUnavailable())
                    continue
                finally:
                    self._last_commit = time.monotonic()
                for (event, future), entry in zip(batch, entries, strict=True):
                    if self._observer is not None:
                        self._observer.audit_recorded(event.operation, event.outcome)
                    if not future.done():
                        future.set_result(entry)
        finally:
            self._flusher = None

    async def checkpoint(self) -> Checkpoint:
        return await asyncio.to_thread(self.store.checkpoint_head)

    async def entries(self, after: int, limit: int) -> list[Entry]:
        return await asyncio.to_thread(self.store.entries, after, limit)

    async def checkpoints(self, after: int, limit: int) -> list[Checkpoint]:
        return await asyncio.to_thread(self.store.checkpoints, after, limit)
