"""Field configurations: create (with the field's secret from key-broker), read, list, update, delete.
Changes are audited (who, which field); a forced delete destroys the field's entries and keys."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Sequence

from privmesh.runtime.audit.log import AuditLog
from privmesh.runtime.errors import Aborted, AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from privmesh.tokenvault import profiles
from privmesh.tokenvault.fields import MUTABLE, LoadedField, field_name, validate_mutable
from privmesh.tokenvault.keyring import Keyring
from privmesh.tokenvault.store import EtagMismatch, FieldStore, StoredField, now_us
from privmesh.tokenvault.v1 import tokenvault_pb2 as pb

MAX_FIELD_BYTES = 64 * 1024
OUTPUT_ONLY = ("name", "create_time", "update_time", "etag")
MESSAGE_PARTS = ("detokenize_policy", "default_ttl", "max_ttl")


def _config_bytes(field: pb.Field) -> bytes:
    config = pb.Field()
    config.CopyFrom(field)
    for name in OUTPUT_ONLY:
        config.ClearField(name)
    return config.SerializeToString(deterministic=True)


def _etag_mismatch() -> Aborted:
    return Aborted("ETAG_MISMATCH", "the field changed since the given etag")


class FieldService:
    def __init__(self, store: FieldStore, keyring: Keyring, audit: AuditLog) -> None:
        self.store = store
        self.keyring = keyring
        self.audit = audit

    async def create(self, tenant: str, field_id: str, field: pb.Field, request_id: str) -> LoadedField:
        if field.ByteSize() > MAX_FIELD_BYTES:
            raise InvalidArgument.single("field", "encodes to more than 64 KiB")
        violations = profiles.validate(field.profile) + validate_mutable(field)
        if violations:
            raise InvalidArgument(violations, "PROFILE_INVALID")
        config = _config_bytes(field)
        fingerprint = hashlib.sha256(field_id.encode() + b"\x00" + config).digest()
        if request_id:
            earlier = await self._replayed(tenant, field_id, request_id, fingerprint)
            if earlier is not None:
                return earlier
        if await asyncio.to_thread(self.store.get_field, tenant, field_id) is not None:
            raise AlreadyExists("FIELD_ALREADY_EXISTS", f"{field_name(tenant, field_id)} exists")
        masking = field.profile.WhichOneof("kind") == "masking"
        if masking:  # nothing to derive or encrypt: no key-broker key
            wrapped, key_name, version = b"", "", 0
        else:
            secret = await self.keyring.new_field_secret(tenant, field_id, field.key)
            wrapped, key_name, version = secret.wrapped, secret.key_name, secret.key_version
        now = now_us()
        stored = StoredField(tenant, field_id, config, secrets.token_hex(8), now, now, wrapped, key_name, version)
        await self.audit.append("CreateField", resource=field_name(tenant, field_id),
                                details={"profile": field.profile.WhichOneof("kind") or ""})

        def insert() -> bool:
            with self.store.db.transaction() as cur:
                if not self.store.insert_field(stored, cur):
                    return False
                if request_id:
                    self.store.remember(cur, tenant, "CreateField", request_id, fingerprint, field_id.encode())
                return True

        if not await asyncio.to_thread(insert):
            raise AlreadyExists("FIELD_ALREADY_EXISTS", f"{field_name(tenant, field_id)} exists")
        return LoadedField(stored)

    async def _replayed(self, tenant: str, field_id: str, request_id: str, fingerprint: bytes) -> LoadedField | None:
        def read() -> tuple[bytes, bytes] | None:
            with self.store.db.transaction() as cur:
                return self.store.replay(cur, tenant, "CreateField", request_id)

        found = await asyncio.to_thread(read)
        if found is None:
            return None
        if not secrets.compare_digest(found[0], fingerprint):
            raise InvalidArgument.single("request_id", "used before with a different request", "REQUEST_ID_CONFLICT")
        return await self.get(tenant, field_id)

    async def get(self, tenant: str, field_id: str) -> LoadedField:
        stored = await asyncio.to_thread(self.store.get_field, tenant, field_id)
        if stored is None:
            raise NotFound("FIELD_NOT_FOUND", f"no field {field_name(tenant, field_id)}")
        return LoadedField(stored)

    async def list(self, tenant: str | None, after: str, limit: int) -> list[LoadedField]:
        return [LoadedField(s) for s in await asyncio.to_thread(self.store.list_fields, tenant, after, limit)]

    async def update(self, tenant: str, field_id: str, field: pb.Field, paths: Sequence[str], etag: str) -> LoadedField:
        if not paths:
            raise InvalidArgument.single("update_mask", "required")
        for path in paths:
            if path in ("profile", "subject_key_shredding") or path.startswith("profile."):
                raise InvalidArgument.single("update_mask", f"{path} is immutable", "FIELD_IMMUTABLE")
            if path not in MUTABLE:
                raise InvalidArgument.single("update_mask", f"{path} cannot be updated")
        current = await self.get(tenant, field_id)
        merged = pb.Field()
        merged.CopyFrom(current.config)
        for path in paths:
            if path in MESSAGE_PARTS:
                merged.ClearField(path)
                if field.HasField(path):
                    getattr(merged, path).CopyFrom(getattr(field, path))
            else:
                setattr(merged, path, getattr(field, path))
        violations = validate_mutable(merged)
        if violations:
            raise InvalidArgument(violations)
        await self.audit.append("UpdateField", resource=field_name(tenant, field_id),
                                details={"update_mask": ",".join(paths)})
        try:
            updated = await asyncio.to_thread(self.store.update_field, tenant, field_id, _config_bytes(merged), etag)
        except EtagMismatch:
            raise _etag_mismatch() from None
        if updated is None:
            raise NotFound("FIELD_NOT_FOUND", f"no field {field_name(tenant, field_id)}")
        return LoadedField(updated)

    async def delete(self, tenant: str, field_id: str, force: bool, etag: str) -> int:
        await self.get(tenant, field_id)
        await self.audit.append("DeleteField", resource=field_name(tenant, field_id), details={"force": str(force)})
        try:
            deleted = await asyncio.to_thread(self.store.delete_field, tenant, field_id, force, etag)
        except EtagMismatch:
            raise _etag_mismatch() from None
        if deleted is None:
            raise NotFound("FIELD_NOT_FOUND", f"no field {field_name(tenant, field_id)}")
        if deleted < 0:
            raise FailedPrecondition("FIELD_HAS_TOKENS", "the field has tokens; delete with force to destroy them")
        self.keyring.forget_all_encryption_keys()
        # The field's subject KEKs were moved to the graveyard with the delete; maintenance retries any that
        # key-broker cannot take now.
        await self.keyring.shred_buried()
        return deleted
