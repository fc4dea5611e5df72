"""Key rotation in the background: new data keys for a tenant's fields, then every entry re-encrypted
under them batch by batch, with progress stored so that any server process can report it.

Resumable: the process running a rotation holds a lease in its row, renewed with every batch (each batch,
its progress and the renewal are one transaction). When the process stops, its lease expires and any vault
process (at start and every purge interval) takes the rotation over and continues where it stopped: the
steps already done are recorded in the rotation's body, and the entries left are those still under the
data keys it retired. A process that lost its lease stops at its next write.

No window without detokenization: the old data keys are only retired (they take no new entries) and keep
decrypting until the last entry under them has moved; each entry moves in its own atomic update, guarded
by the key it was read under. Token-derivation keys never change (tokens stay the same); their wrap is
moved to the key-broker key's current version.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from privmesh.runtime.audit.log import AuditLog
from privmesh.runtime.context import current_principal
from privmesh.runtime.errors import FailedPrecondition, InvalidArgument, NotFound, ServiceError
from privmesh.tokenvault.fields import LoadedField
from privmesh.tokenvault.keyring import Keyring, call, context
from privmesh.tokenvault.store import Lease, LeaseLost, Store, now_us
from privmesh.tokenvault.vault import aad

log = logging.getLogger("privmesh.tokenvault.rotation")
ACTIVE = ("PENDING", "RUNNING")


@dataclass(frozen=True)
class RotationView:
    tenant: str
    id: str
    body: dict[str, Any]
    state: str
    total: int
    done: int


class Rotations:
    def __init__(self, store: Store, keyring: Keyring, audit: AuditLog, batch_size: int = 200,
                 lease_seconds: float = 30.0) -> None:
        self.store = store
        self.keyring = keyring
        self.audit = audit
        self.batch_size = batch_size
        self.lease_seconds = lease_seconds
        self.owner = secrets.token_hex(8)  # this process, as the holder of rotation leases
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}

    def lease(self) -> Lease:
        return Lease(self.owner, now_us() + int(self.lease_seconds * 1_000_000))

    async def start(self, tenant: str, field_ids: Sequence[str], rotate_master: bool,
                    request_id: str) -> RotationView:
        fields = {f.field: LoadedField(f) for f in await asyncio.to_thread(self.store.tenant_fields, tenant)}
        unknown = [i for i, name in enumerate(field_ids) if name not in fields]
        if unknown:
            raise NotFound("FIELD_NOT_FOUND", "unknown field", {"indices": ",".join(map(str, unknown))})
        chosen = sorted(set(field_ids) or fields)
        chosen = [name for name in chosen if fields[name].profile.reversible]
        if not chosen:
            raise InvalidArgument.single("fields", "no field with keys to rotate")
        rotation_id = f"{now_us():016x}{secrets.token_hex(4)}"
        body = {"fields": chosen, "rotate_master_keys": rotate_master, "create_us": now_us(),
                "requested_by": current_principal.get()}
        fingerprint = repr((chosen, rotate_master)).encode()

        def insert() -> str:
            with self.store.db.transaction() as cur:
                if request_id:
                    found = self.store.replay(cur, tenant, "RotateKeys", request_id)
                    if found is not None:
                        if not secrets.compare_digest(found[0], fingerprint):
                            raise InvalidArgument.single("request_id", "used before with a different request",
                                                         "REQUEST_ID_CONFLICT")
                        return found[1].decode()
                for other, other_fields in self.store.running_rotations(cur, tenant):
                    if set(other_fields) & set(chosen):
                        raise FailedPrecondition("ROTATION_ALREADY_RUNNING", "a rotation of these fields is running",
                                                 {"rotation": f"tenants/{tenant}/rotations/{other}"})
                self.store.insert_rotation(cur, tenant, rotation_id, body, request_id, self.lease())
                if request_id:
                    self.store.remember(cur, tenant, "RotateKeys", request_id, fingerprint, rotation_id.encode())
            return rotation_id

        started = await asyncio.to_thread(insert)
        if started == rotation_id:
            await self.audit.append("RotateKeys", resource=f"tenants/{tenant}/rotations/{rotation_id}",
                                    details={"fields": ",".join(chosen), "rotate_master_keys": str(rotate_master)})
            self._spawn(tenant, rotation_id)
        return await self.get(tenant, started)

    def _spawn(self, tenant: str, rotation_id: str) -> None:
        ident = (tenant, rotation_id)
        if ident in self._tasks:
            return  # still running here (its lease lapsed while a batch took long): it renews at its next batch
        task = asyncio.create_task(self._run(tenant, rotation_id))
        self._tasks[ident] = task
        task.add_done_callback(lambda _: self._tasks.pop(ident, None))

    async def resume_abandoned(self) -> None:
        """Takes over the rotations whose process stopped renewing its lease, and continues them here."""
        for tenant, rotation_id in await asyncio.to_thread(self.store.claim_abandoned_rotations, self.lease(),
                                                           now_us()):
            await self.audit.append("RotationResumed", resource=f"tenants/{tenant}/rotations/{rotation_id}",
                                    principal="system")
            self._spawn(tenant, rotation_id)

    async def get(self, tenant: str, rotation_id: str) -> RotationView:
        found = await asyncio.to_thread(self.store.get_rotation, tenant, rotation_id)
        if found is None:
            raise NotFound("ROTATION_NOT_FOUND", "no such rotation")
        return RotationView(tenant, rotation_id, *found)

    async def list(self, tenant: str, before: str, limit: int) -> list[RotationView]:
        ids = await asyncio.to_thread(self.store.list_rotations, tenant, before, limit)
        return [await self.get(tenant, i) for i in ids]

    async def cancel(self, tenant: str, rotation_id: str) -> RotationView:
        await self.get(tenant, rotation_id)
        await asyncio.to_thread(self.store.set_rotation, tenant, rotation_id, state="CANCELLED",
                                body_updates={"end_us": now_us()}, only_from=ACTIVE)
        return await self.get(tenant, rotation_id)

    async def wait(self) -> None:
        """Lets running rotations finish (tests, shutdown)."""
        if self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def stop(self) -> None:
        """Stops this process's rotations and hands their leases back, so that another process resumes them
        at its next check instead of after the lease."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await asyncio.to_thread(self.store.release_rotations, self.owner)
        except Exception:
            log.exception("could not release rotation leases; they expire on their own")

    async def _run(self, tenant: str, rotation_id: str) -> None:
        try:
            await self._steps(tenant, rotation_id)
        except LeaseLost:
            log.info("rotation %s continues in another process", rotation_id)
        except ServiceError as error:
            log.warning("rotation failed: %s", error.reason)
            await self._finish(tenant, rotation_id, "FAILED", error.reason, error.message)
        except Exception as exc:  # a rotation must end in a state, never hang in RUNNING
            log.exception("rotation failed")
            await self._finish(tenant, rotation_id, "FAILED", "INTERNAL", type(exc).__name__)

    async def _set(self, tenant: str, rotation_id: str, **changes: Any) -> str:
        return await asyncio.to_thread(lambda: self.store.set_rotation(tenant, rotation_id, lease=self.lease(),
                                                                       **changes))

    async def _steps(self, tenant: str, rotation_id: str) -> None:
        """The rotation from wherever it stopped: each step records in the body that it is done."""
        current = await self.get(tenant, rotation_id)
        if current.state == "PENDING":
            if await self._set(tenant, rotation_id, state="RUNNING", body_updates={"start_us": now_us()},
                               only_from=("PENDING",)) != "RUNNING":
                return
        elif current.state != "RUNNING":
            return
        body = current.body
        stored = {f.field: LoadedField(f) for f in await asyncio.to_thread(self.store.tenant_fields, tenant)}
        fields = [stored[name] for name in body["fields"] if name in stored]  # deleted fields have nothing left
        if body["rotate_master_keys"] and not body.get("master_keys_rotated"):
            keys = sorted({f.config.key for f in fields})
            keys += await asyncio.to_thread(self.store.subject_keks_of, tenant,
                                            [f.stored.field for f in fields if f.config.subject_key_shredding])
            for key in keys:
                await call(lambda key=key: self.keyring.source.rotate_master_key(key))  # type: ignore[misc]
            await self._set(tenant, rotation_id, body_updates={"master_keys_rotated": True})
        if not body.get("data_keys_retired"):
            await asyncio.to_thread(self.store.retire_data_keys, tenant, rotation_id,
                                    [f.stored.field for f in fields], self.lease())
            await self._set(tenant, rotation_id, body_updates={"data_keys_retired": True})
        self.keyring.forget_all_encryption_keys()
        for loaded in fields:
            await self._rewrap_secret(loaded)
            if not await self._move_field(tenant, rotation_id, loaded):
                return  # cancelled
        await asyncio.to_thread(self.store.drop_unused_data_keys, rotation_id)
        await self._finish(tenant, rotation_id, "SUCCEEDED")

    async def _rewrap_secret(self, loaded: LoadedField) -> None:
        stored = loaded.stored
        rewrapped = await call(lambda: self.keyring.source.rewrap(
            stored.secret_wrapped, context(stored.tenant, stored.field, "field-secret"), loaded.config.key))
        await asyncio.to_thread(self.store.rewrap_secret, stored.tenant, stored.field, stored.secret_wrapped,
                                rewrapped.wrapped, rewrapped.key_name, rewrapped.key_version)

    async def _move_field(self, tenant: str, rotation_id: str, loaded: LoadedField) -> bool:
        """Re-encrypts the field's entries still under retired keys; False when the rotation was cancelled."""
        name = loaded.stored.field
        shredding = loaded.config.subject_key_shredding
        if shredding:
            await self.keyring.field_keys(loaded.stored)  # new subject KEKs get the field key's caching limits
        while True:
            batch = await asyncio.to_thread(self.store.entries_under, tenant, name, rotation_id, self.batch_size)
            if not batch:
                return True
            wanted: dict[str, tuple[str, str, bytes, int]] = {}
            for _, _, key_id, _, _, key_name, wrapped in batch:
                uses = wanted.get(key_id, (name, key_name, wrapped, 0))[3]
                wanted[key_id] = (name, key_name, wrapped, uses + 1)
            old_keys = await self.keyring.decryption_keys(tenant, wanted)
            plaintexts = [AESGCM(old_keys[key_id]).decrypt(nonce, ciphertext, aad(tenant, name, entry_id))
                          for entry_id, _, key_id, nonce, ciphertext, _, _ in batch]
            groups: dict[bytes | None, list[int]] = {}
            for position, row in enumerate(batch):
                groups.setdefault(row[1] if shredding and row[1] else None, []).append(position)
            moves = []
            for subject_hash, positions in groups.items():
                runs = await self.keyring.encryption_keys(tenant, name, loaded.config.key, subject_hash,
                                                          [len(plaintexts[p]) for p in positions])
                assigned = [(key_id, key) for key_id, key, count in runs for _ in range(count)]
                for position, (key_id, key) in zip(positions, assigned, strict=True):
                    entry_id, _, old_key, _, _, _, _ = batch[position]
                    nonce = secrets.token_bytes(12)
                    moves.append((entry_id, nonce, AESGCM(key).encrypt(nonce, plaintexts[position],
                                                                       aad(tenant, name, entry_id)), key_id, old_key))
            if not await asyncio.to_thread(self.store.move_entries, tenant, rotation_id, self.lease(), moves):
                return False

    async def _finish(self, tenant: str, rotation_id: str, state: str, reason: str = "", message: str = "") -> None:
        updates: dict[str, Any] = {"end_us": now_us()}
        if reason:
            updates.update(error_reason=reason, error_message=message)
        try:
            final = await self._set(tenant, rotation_id, state=state, body_updates=updates, only_from=("RUNNING",))
        except LeaseLost:
            return  # another process runs it now and will end it
        await self.audit.append("RotationFinished", resource=f"tenants/{tenant}/rotations/{rotation_id}",
                                outcome="SUCCESS" if final == "SUCCEEDED" else "FAILURE",
                                details={"state": final, "reason": reason}, principal="system")
