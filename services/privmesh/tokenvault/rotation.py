"""Key rotation in the background: new data keys for a tenant's fields, then every entry re-encrypted
under them batch by batch, with progress stored so that any server process can report it.

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
from privmesh.tokenvault.store import Store, now_us
from privmesh.tokenvault.vault import aad

log = logging.getLogger("privmesh.tokenvault.rotation")
BATCH = 200
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
    def __init__(self, store: Store, keyring: Keyring, audit: AuditLog) -> None:
        self.store = store
        self.keyring = keyring
        self.audit = audit
        self._tasks: set[asyncio.Task[None]] = set()

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
                self.store.insert_rotation(cur, tenant, rotation_id, body, 0, request_id)
                if request_id:
                    self.store.remember(cur, tenant, "RotateKeys", request_id, fingerprint, rotation_id.encode())
            return rotation_id

        started = await asyncio.to_thread(insert)
        if started == rotation_id:
            await self.audit.append("RotateKeys", resource=f"tenants/{tenant}/rotations/{rotation_id}",
                                    details={"fields": ",".join(chosen), "rotate_master_keys": str(rotate_master)})
            task = asyncio.create_task(self._run(tenant, rotation_id, [fields[n] for n in chosen], rotate_master))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await self.get(tenant, started)

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
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(self, tenant: str, rotation_id: str, fields: list[LoadedField], rotate_master: bool) -> None:
        state = await asyncio.to_thread(self.store.set_rotation, tenant, rotation_id, state="RUNNING",
                                        body_updates={"start_us": now_us()}, only_from=("PENDING",))
        if state != "RUNNING":
            return
        try:
            if rotate_master:
                for key in sorted({f.config.key for f in fields}):
                    await call(lambda key=key: self.keyring.source.rotate_master_key(key))  # type: ignore[misc]
            retired: dict[str, list[str]] = {}
            for loaded in fields:
                retired[loaded.stored.field] = await asyncio.to_thread(self.store.retire_data_keys, tenant,
                                                                       loaded.stored.field)
            self.keyring.forget_all_encryption_keys()
            total = sum([await asyncio.to_thread(self.store.count_under, tenant, name, ids)
                         for name, ids in retired.items()])
            await asyncio.to_thread(self.store.set_rotation, tenant, rotation_id, total=total)
            done = 0
            for loaded in fields:
                await self._rewrap_secret(loaded)
                moved = await self._move_field(tenant, rotation_id, loaded, retired[loaded.stored.field], done)
                if moved is None:
                    return  # cancelled
                done = moved
            for ids in retired.values():
                await asyncio.to_thread(self.store.drop_unused_data_keys, ids)
            await self._finish(tenant, rotation_id, "SUCCEEDED")
        except ServiceError as error:
            log.warning("rotation failed: %s", error.reason)
            await self._finish(tenant, rotation_id, "FAILED", error.reason, error.message)
        except Exception as exc:  # a rotation must end in a state, never hang in RUNNING
            log.exception("rotation failed")
            await self._finish(tenant, rotation_id, "FAILED", "INTERNAL", type(exc).__name__)

    async def _rewrap_secret(self, loaded: LoadedField) -> None:
        stored = loaded.stored
        rewrapped = await call(lambda: self.keyring.source.rewrap(
            stored.secret_wrapped, context(stored.tenant, stored.field, "field-secret"), loaded.config.key))
        await asyncio.to_thread(self.store.rewrap_secret, stored.tenant, stored.field, stored.secret_wrapped,
                                rewrapped.wrapped, rewrapped.key_name, rewrapped.key_version)

    async def _move_field(self, tenant: str, rotation_id: str, loaded: LoadedField, old_ids: list[str],
                          done: int) -> int | None:
        name = loaded.stored.field
        shredding = loaded.config.subject_key_shredding
        while True:
            current = await asyncio.to_thread(self.store.get_rotation, tenant, rotation_id)
            if current is None or current[1] != "RUNNING":
                return None
            batch = await asyncio.to_thread(self.store.entries_under, tenant, name, old_ids, BATCH)
            if not batch:
                return done
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
                assigned = await self.keyring.encryption_keys(tenant, name, loaded.config.key, subject_hash,
                                                              [len(plaintexts[p]) for p in positions])
                for position, (key_id, key) in zip(positions, assigned, strict=True):
                    entry_id, _, old_key, _, _, _, _ = batch[position]
                    nonce = secrets.token_bytes(12)
                    moves.append((entry_id, nonce, AESGCM(key).encrypt(nonce, plaintexts[position],
                                                                       aad(tenant, name, entry_id)), key_id, old_key))
            done += await asyncio.to_thread(self.store.move_entries, moves)
            await asyncio.to_thread(self.store.set_rotation, tenant, rotation_id, done=done)

    async def _finish(self, tenant: str, rotation_id: str, state: str, reason: str = "", message: str = "") -> None:
        updates: dict[str, Any] = {"end_us": now_us()}
        if reason:
            updates.update(error_reason=reason, error_message=message)
        final = await asyncio.to_thread(self.store.set_rotation, tenant, rotation_id, state=state,
                                        body_updates=updates, only_from=("RUNNING",))
        await self.audit.append("RotationFinished", resource=f"tenants/{tenant}/rotations/{rotation_id}",
                                outcome="SUCCESS" if final == "SUCCEEDED" else "FAILURE",
                                details={"state": final, "reason": reason}, principal="system")
