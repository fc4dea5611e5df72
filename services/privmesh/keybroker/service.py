"""The key broker's domain logic (no gRPC): key lifecycle, the key policy on every call, data keys, messages,
attested release, and due deletions / expiries / rotations. Every key operation is audited (principal, key,
version, operation, encryption-context key names; never key material) before its result is returned."""

from __future__ import annotations

import asyncio
import hmac
import io
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

import grpc

from privmesh.keybroker.backends.base import (
    Backend,
    BackendError,
    ImportParameters,
    ImportRejected,
    InvalidCiphertext,
    KeyRef,
    MaterialMismatch,
    MaterialUnavailable,
    Unsupported,
)
from privmesh.keybroker.cache import RecordCache
from privmesh.keybroker.policy import CompiledPolicy, Decision, check_lockout, decide, default_policy, validate
from privmesh.keybroker.release import Evidence, RecipientJudge, Released, encrypt_for_recipient
from privmesh.keybroker.store import AliasTaken, Caching, KeyRecord, KeyStore, VersionRecord, now_us
from privmesh.keybroker.v1 import keybroker_pb2 as pb
from privmesh.runtime.audit.log import AuditLog
from privmesh.runtime.authz import Authorizer
from privmesh.runtime.context import SYSTEM_PRINCIPAL, current_principal
from privmesh.runtime.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ServiceError,
    Unavailable,
)
from privmesh.sdk.keybroker import context as contexts
from privmesh.sdk.keybroker import messages

T = TypeVar("T")
log = logging.getLogger("privmesh.keybroker")
MAX_PAYLOAD = 1024 * 1024
MAX_MESSAGE = MAX_PAYLOAD + 64 * 1024
MAX_BLOB = 6 * 1024
MAX_WAITING = timedelta(days=30)
DEFAULT_WAITING = timedelta(days=30)
STATE_ERRORS: dict[int, tuple[str, str]] = {
    pb.KEY_STATE_DISABLED: ("KEY_DISABLED", "the key is disabled"),
    pb.KEY_STATE_PENDING_DELETION: ("KEY_PENDING_DELETION", "the key is scheduled for deletion"),
    pb.KEY_STATE_PENDING_IMPORT: ("KEY_PENDING_IMPORT", "the key's imported material is missing or expired"),
    pb.KEY_STATE_DESTROYED: ("KEY_DESTROYED", "the key's material has been destroyed"),
}


class Unimplemented(ServiceError):
    """UNIMPLEMENTED with a reason: a backend without an operation or option."""

    code = grpc.StatusCode.UNIMPLEMENTED


def invalid_ciphertext(field: str = "ciphertext_blob") -> InvalidArgument:
    return InvalidArgument.single(field, "malformed, not made by this broker, for another key, or fails "
                                  "authentication", "INVALID_CIPHERTEXT")


def _state_error(state: int) -> FailedPrecondition:
    reason, message = STATE_ERRORS[state]
    return FailedPrecondition(reason, message)


@dataclass(frozen=True)
class DataKeyResult:
    key: KeyRecord
    version: int
    plaintext: bytes  # empty when released to a recipient
    blob: bytes
    for_recipient: bytes = b""
    recipient: Released | None = None
    cms: bool = False  # for_recipient is KMS's CMS EnvelopedData rather than the broker's RSA-OAEP


@dataclass(frozen=True)
class MessageResult:
    key: KeyRecord
    version: int
    payload: bytes
    encryption_context: dict[str, str]
    algorithm: str


class KeyBrokerService:
    def __init__(self, store: KeyStore, backends: dict[str, Backend], default_backend: str, audit: AuditLog,
                 judge: RecipientJudge, min_waiting: timedelta, authorizer: Authorizer) -> None:
        self.store = store
        self.authorizer = authorizer  # the service policy's layer: "keys/{key_id}" as resolved from a name or blob
        self.backends = backends
        self.default_backend = default_backend
        self.audit = audit
        self.judge = judge
        self.min_waiting = min_waiting
        self.cache = RecordCache()
        self._caches: dict[tuple[str, int, Caching], tuple[Any, list[int]]] = {}

    # --- plumbing ---

    def _backend(self, record: KeyRecord) -> Backend:
        backend = self.backends.get(record.backend)
        if backend is None:
            raise Unavailable("BACKEND_UNAVAILABLE", f"the {record.backend} backend is not configured")
        return backend

    async def _call(self, fn: Callable[..., T], *args: Any, inline: bool = False) -> T:
        """A backend call in a worker thread (inline: on the loop, for microsecond in-memory cryptography),
        with its failures as the contract's errors."""
        try:
            return fn(*args) if inline else await asyncio.to_thread(fn, *args)
        except BackendError:
            raise Unavailable("BACKEND_UNAVAILABLE", "the key backend could not be reached; retry later") from None
        except Unsupported as exc:
            raise Unimplemented("BACKEND_UNSUPPORTED", str(exc) or "not supported by the backend") from None

    async def _audit(self, operation: str, record: KeyRecord | str, outcome: str = "SUCCESS",
                     principal: str | None = None, **details: object) -> None:
        resource = record if isinstance(record, str) else record.name
        await self.audit.append(operation, resource=resource, outcome=outcome, principal=principal,
                                details={k: str(v) for k, v in details.items() if v is not None and v != ""})

    async def resolve(self, name: str, field: str = "name") -> KeyRecord:
        """The key named "keys/{id}" or "aliases/{alias}", with due deletions/expiries/rotations applied."""
        if name.startswith("keys/") and len(name) <= 300:
            record = await self._record("id", name[len("keys/"):], self.store.get)
        elif name.startswith("aliases/") and len(name) <= 80:
            record = await self._record("alias", name[len("aliases/"):], self.store.by_alias)
        else:
            raise InvalidArgument.single(field, "must be keys/{key_id} or aliases/{alias}")
        if record is None:
            raise NotFound("KEY_NOT_FOUND", f"no key named {name[:300]!r}")
        return await self.settle(record)

    async def _record(self, kind: str, ident: str, read: Callable[[str], KeyRecord | None]) -> KeyRecord | None:
        record: KeyRecord | None = self.cache.get(kind, ident)
        if record is None:
            record = await asyncio.to_thread(read, ident)
            if record is not None:
                self.cache.put(kind, ident, record.key_id, record)
        return record

    async def _policy(self, key_id: str) -> CompiledPolicy:
        policy: CompiledPolicy | None = self.cache.get("policy", key_id)
        if policy is None:
            policy = CompiledPolicy((await asyncio.to_thread(self.store.policy, key_id))[0])
            self.cache.put("policy", key_id, key_id, policy)
        return policy

    async def _authorize(self, operation: str, record: KeyRecord, op: int, context: dict[str, str],
                         has_recipient: bool = False) -> Decision:
        self.authorizer.require(record.name)
        policy = await self._policy(record.key_id)
        try:
            return decide(policy, current_principal.get(), op, context, has_recipient)
        except PermissionDenied as exc:
            await self._audit(operation, record, "DENIED", reason=exc.reason,
                              context_keys=contexts.audit_keys(context))
            raise

    async def _mutate(self, record: KeyRecord,
                      change: Callable[[KeyRecord], tuple[KeyRecord, T]]) -> tuple[KeyRecord, T]:
        try:
            return await asyncio.to_thread(self.store.mutate, record.key_id, change)
        except AliasTaken:
            raise AlreadyExists("ALIAS_ALREADY_EXISTS", "another key has this alias") from None
        finally:
            self.cache.drop(record.key_id)

    @staticmethod
    def _usable(record: KeyRecord) -> None:
        if record.state != pb.KEY_STATE_ENABLED:
            raise _state_error(record.state)

    # --- due transitions (the sweeper and every lookup apply them) ---

    async def settle(self, record: KeyRecord) -> KeyRecord:
        now = now_us()
        if record.state == pb.KEY_STATE_PENDING_DELETION and record.deletion_us is not None \
                and record.deletion_us <= now:
            return await self._destroy(record)
        expired = [v.version for v in record.versions
                   if v.state == pb.KEY_VERSION_STATE_AVAILABLE and v.material_expire_us is not None
                   and v.material_expire_us <= now]
        if expired:
            record = await self._drop_imported(record, expired, "ImportedMaterialExpired", SYSTEM_PRINCIPAL)
        if record.next_rotation_us is not None and record.next_rotation_us <= now \
                and record.state == pb.KEY_STATE_ENABLED and record.origin != pb.KEY_ORIGIN_EXTERNAL:
            record, _ = await self._rotate(record, "AutomaticRotation", SYSTEM_PRINCIPAL)
        return record

    async def sweep(self) -> int:
        """Applies every due transition; returns how many keys it looked at."""
        due = await asyncio.to_thread(self.store.due, now_us())
        for key_id in due:
            record = await asyncio.to_thread(self.store.get, key_id)
            if record is not None:
                await self.settle(record)
        return len(due)

    async def _destroy(self, record: KeyRecord) -> KeyRecord:
        versions = [v.version for v in record.versions]
        await self._audit("DestroyKey", record, principal=SYSTEM_PRINCIPAL, versions=len(versions))
        await self._call(self._backend(record).destroy, KeyRef(record.key_id, record.arn), versions)
        now = now_us()

        def change(current: KeyRecord) -> tuple[KeyRecord, None]:
            gone = tuple(replace(v, state=pb.KEY_VERSION_STATE_DESTROYED, destroy_us=now) for v in current.versions)
            return current.changed(state=pb.KEY_STATE_DESTROYED, destroy_us=now, versions=gone,
                                   next_rotation_us=None), None

        return (await self._mutate(record, change))[0]

    async def _drop_imported(self, record: KeyRecord, versions: list[int], operation: str,
                             principal: str | None) -> KeyRecord:
        await self._audit(operation, record, principal=principal, versions=",".join(map(str, versions)))
        for version in versions:
            await self._call(self._backend(record).delete_imported, KeyRef(record.key_id, record.arn), version)
        now = now_us()

        def change(current: KeyRecord) -> tuple[KeyRecord, None]:
            updated = tuple(replace(v, state=pb.KEY_VERSION_STATE_PENDING_IMPORT, material_expire_us=None,
                                    destroy_us=now) if v.version in versions else v for v in current.versions)
            state = current.state
            if state == pb.KEY_STATE_ENABLED and current.primary_version in versions:
                state = pb.KEY_STATE_PENDING_IMPORT
            return current.changed(state=state, versions=updated), None

        return (await self._mutate(record, change))[0]

    # --- keys ---

    async def create_key(self, alias: str, description: str, backend_name: str | None, external: bool,
                         policy: pb.KeyPolicy | None, rotation_period: timedelta | None, caching: Caching | None,
                         request: tuple[str, str] | None) -> KeyRecord:
        if request is not None:
            remembered = await self._remembered(request)
            if remembered is not None:
                return await self.resolve(f"keys/{remembered[0]}")
        principal = current_principal.get()
        if policy is None:
            policy = default_policy(principal)
        validate(policy)
        backend_name = backend_name or self.default_backend
        backend = self.backends.get(backend_name)
        if backend is None:
            raise InvalidArgument.single("backend", f"the {backend_name} backend is not configured on this server")
        if alias and await asyncio.to_thread(self.store.by_alias, alias) is not None:
            raise AlreadyExists("ALIAS_ALREADY_EXISTS", "another key has this alias")
        ref = await self._call(backend.create_key, str(uuid.uuid4()), description, external)
        await self._audit("CreateKey", f"keys/{ref.key_id}", backend=backend_name, alias=alias,
                          origin="EXTERNAL" if external else "BACKEND", statements=len(policy.statements))
        now = now_us()
        versions = () if external else (VersionRecord(1, pb.KEY_VERSION_STATE_AVAILABLE, now),)
        period = None if rotation_period is None else rotation_period // timedelta(microseconds=1)
        record = KeyRecord(
            key_id=ref.key_id, alias=alias, description=description, backend=backend_name,
            origin=pb.KEY_ORIGIN_EXTERNAL if external else pb.KEY_ORIGIN_BACKEND,
            state=pb.KEY_STATE_PENDING_IMPORT if external else pb.KEY_STATE_ENABLED,
            primary_version=0 if external else 1, create_us=now, update_us=now, etag=uuid.uuid4().hex[:16],
            arn=ref.arn, rotation_period_us=period, next_rotation_us=None if period is None else now + period,
            caching=caching, versions=versions)
        policy = pb.KeyPolicy(statements=policy.statements)
        try:
            await asyncio.to_thread(self.store.create, record, policy, request)
        except AliasTaken:
            await self._call(backend.destroy, ref, [1])
            raise AlreadyExists("ALIAS_ALREADY_EXISTS", "another key has this alias") from None
        return record

    async def _remembered(self, request: tuple[str, str]) -> tuple[str, str] | None:
        """(key id, result) of an earlier call with this request id; REQUEST_ID_CONFLICT if it differed."""
        found = await asyncio.to_thread(self.store.recall, request[0])
        if found is None:
            return None
        fingerprint, key_id, result = found
        if not hmac.compare_digest(fingerprint, request[1]):
            raise InvalidArgument.single("request_id", "used before with a different request", "REQUEST_ID_CONFLICT")
        return key_id, result

    async def get_key(self, name: str) -> KeyRecord:
        record = await self.resolve(name)
        await self._authorize("GetKey", record, pb.KEY_OPERATION_DESCRIBE, {})
        return record

    async def list_keys(self, after_seq: int, limit: int, backend: str | None,
                        show_destroyed: bool) -> tuple[list[KeyRecord], int | None]:
        """A page of the keys the caller may DESCRIBE, and the seq to continue after (None: last page)."""
        rows = await asyncio.to_thread(self.store.page, after_seq, limit + 1, backend, show_destroyed)
        page, more = rows[:limit], len(rows) > limit
        visible = []
        principal = current_principal.get()
        for _, key_id in page:
            if not self.authorizer.allows_resource(f"keys/{key_id}"):
                continue
            record = await asyncio.to_thread(self.store.get, key_id)
            policy, _, _ = await asyncio.to_thread(self.store.policy, key_id)
            try:
                decide(policy, principal, pb.KEY_OPERATION_DESCRIBE, {})
            except PermissionDenied:
                continue
            if record is not None:
                visible.append(record)
        return visible, page[-1][0] if more else None

    async def update_key(self, name: str, mask: set[str], alias: str, description: str,
                         rotation_period: timedelta | None, caching: Caching | None, etag: str) -> KeyRecord:
        record = await self.resolve(name, "key.name")
        await self._authorize("UpdateKey", record, pb.KEY_OPERATION_UPDATE, {})
        if record.state == pb.KEY_STATE_DESTROYED:
            raise _state_error(record.state)

        def change(current: KeyRecord) -> tuple[KeyRecord, None]:
            if etag and not hmac.compare_digest(current.etag, etag):
                raise Aborted("ETAG_MISMATCH", "the key changed since the given etag")
            values: dict[str, Any] = {}
            if "alias" in mask:
                values["alias"] = alias
            if "description" in mask:
                values["description"] = description
            if "rotation_period" in mask:
                period = None if rotation_period is None else rotation_period // timedelta(microseconds=1)
                values["rotation_period_us"] = period
                values["next_rotation_us"] = None if period is None else now_us() + period
            if "data_key_caching" in mask:
                values["caching"] = caching
            return current.changed(**values), None

        await self._audit("UpdateKey", record, fields=",".join(sorted(mask)))
        return (await self._mutate(record, change))[0]

    async def _rotate(self, record: KeyRecord, operation: str, principal: str | None) -> tuple[KeyRecord, int]:
        version = max((v.version for v in record.versions), default=0) + 1
        await self._audit(operation, record, principal=principal, key_version=version)
        await self._call(self._backend(record).rotate, KeyRef(record.key_id, record.arn), version)
        now = now_us()

        def change(current: KeyRecord) -> tuple[KeyRecord, int]:
            period = current.rotation_period_us
            return current.changed(
                primary_version=version, next_rotation_us=None if period is None else now + period,
                versions=(*current.versions, VersionRecord(version, pb.KEY_VERSION_STATE_AVAILABLE, now))), version

        return await self._mutate(record, change)

    async def rotate_key(self, name: str, request: tuple[str, str] | None) -> tuple[KeyRecord, int]:
        record = await self.resolve(name)
        await self._authorize("RotateKey", record, pb.KEY_OPERATION_ROTATE, {})
        if request is not None:
            remembered = await self._remembered(request)
            if remembered is not None:
                return record, int(remembered[1])
        if record.origin == pb.KEY_ORIGIN_EXTERNAL:
            raise FailedPrecondition("ORIGIN_MISMATCH", "rotate an external key by importing material with "
                                     "new_version")
        self._usable(record)
        record, version = await self._rotate(record, "RotateKey", None)
        if request is not None:
            await asyncio.to_thread(self.store.mutate_remembered, record.key_id, lambda r: (r, version), request, str)
            self.cache.drop(record.key_id)
        return record, version

    async def enable_key(self, name: str) -> KeyRecord:
        record = await self.resolve(name)
        await self._authorize("EnableKey", record, pb.KEY_OPERATION_ENABLE, {})
        if record.state in (pb.KEY_STATE_PENDING_DELETION, pb.KEY_STATE_DESTROYED):
            raise _state_error(record.state)
        if record.state != pb.KEY_STATE_DISABLED:
            return record
        await self._audit("EnableKey", record)
        await self._call(self._backend(record).set_enabled, KeyRef(record.key_id, record.arn), True)

        def change(current: KeyRecord) -> tuple[KeyRecord, None]:
            primary = current.version(current.primary_version)
            ready = primary is not None and primary.state == pb.KEY_VERSION_STATE_AVAILABLE
            return current.changed(state=pb.KEY_STATE_ENABLED if ready else pb.KEY_STATE_PENDING_IMPORT), None

        return (await self._mutate(record, change))[0]

    async def disable_key(self, name: str) -> KeyRecord:
        record = await self.resolve(name)
        await self._authorize("DisableKey", record, pb.KEY_OPERATION_DISABLE, {})
        if record.state in (pb.KEY_STATE_PENDING_DELETION, pb.KEY_STATE_DESTROYED):
            raise _state_error(record.state)
        if record.state == pb.KEY_STATE_DISABLED:
            return record
        await self._audit("DisableKey", record)
        await self._call(self._backend(record).set_enabled, KeyRef(record.key_id, record.arn), False)
        return (await self._mutate(record, lambda r: (r.changed(state=pb.KEY_STATE_DISABLED), None)))[0]

    async def schedule_deletion(self, name: str, waiting: timedelta | None) -> KeyRecord:
        waiting = DEFAULT_WAITING if waiting is None else waiting
        if not self.min_waiting <= waiting <= MAX_WAITING:
            raise InvalidArgument.single("waiting_period", f"must be between {self.min_waiting} and {MAX_WAITING}")
        record = await self.resolve(name)
        await self._authorize("ScheduleKeyDeletion", record, pb.KEY_OPERATION_SCHEDULE_DELETION, {})
        if record.state == pb.KEY_STATE_DESTROYED:
            raise _state_error(record.state)
        if record.state == pb.KEY_STATE_PENDING_DELETION:
            return record
        when = now_us() + waiting // timedelta(microseconds=1)
        await self._audit("ScheduleKeyDeletion", record, deletion_time=datetime.fromtimestamp(
            when / 1e6, timezone.utc).isoformat())
        await self._call(self._backend(record).schedule_destruction, KeyRef(record.key_id, record.arn),
                         datetime.fromtimestamp(when / 1e6, timezone.utc))
        record = (await self._mutate(record, lambda r: (r.changed(state=pb.KEY_STATE_PENDING_DELETION,
                                                                   deletion_us=when), None)))[0]
        return await self.settle(record)

    async def cancel_deletion(self, name: str) -> KeyRecord:
        record = await self.resolve(name)
        await self._authorize("CancelKeyDeletion", record, pb.KEY_OPERATION_CANCEL_DELETION, {})
        if record.state == pb.KEY_STATE_DESTROYED:
            raise _state_error(record.state)
        if record.state != pb.KEY_STATE_PENDING_DELETION:
            return record
        await self._audit("CancelKeyDeletion", record)
        await self._call(self._backend(record).cancel_destruction, KeyRef(record.key_id, record.arn))
        return (await self._mutate(record, lambda r: (r.changed(state=pb.KEY_STATE_DISABLED, deletion_us=None),
                                                      None)))[0]

    # --- imported material ---

    async def _external(self, name: str, operation: str) -> KeyRecord:
        record = await self.resolve(name, "key")
        await self._authorize(operation, record, pb.KEY_OPERATION_IMPORT_KEY_MATERIAL, {})
        if record.origin != pb.KEY_ORIGIN_EXTERNAL:
            raise FailedPrecondition("ORIGIN_MISMATCH", "the key's material was made by its backend, not imported")
        if record.state == pb.KEY_STATE_DESTROYED:
            raise _state_error(record.state)
        return record

    async def import_parameters(self, name: str) -> tuple[KeyRecord, ImportParameters]:
        record = await self._external(name, "GetImportParameters")
        await self._audit("GetImportParameters", record)
        return record, await self._call(self._backend(record).import_parameters, KeyRef(record.key_id, record.arn))

    async def import_material(self, name: str, token: bytes, wrapped: bytes, expire: datetime | None,
                              new_version: bool) -> tuple[KeyRecord, int]:
        record = await self._external(name, "ImportKeyMaterial")
        newest = max((v.version for v in record.versions), default=0)
        version = newest + 1 if new_version or newest == 0 else (record.primary_version or 1)
        await self._audit("ImportKeyMaterial", record, key_version=version,
                          expire_time=expire.isoformat() if expire else "never")
        try:
            await self._call(self._backend(record).import_material, KeyRef(record.key_id, record.arn), version,
                             token, wrapped, expire)
        except ImportRejected:
            raise InvalidArgument.single("import_token", "expired, issued for another key, or the material does "
                                         "not unwrap under it", "IMPORT_TOKEN_INVALID") from None
        except MaterialMismatch:
            raise InvalidArgument.single("encrypted_key_material", "differs from the material this version had",
                                         "KEY_MATERIAL_MISMATCH") from None
        now = now_us()
        expire_us = None if expire is None else int(expire.timestamp() * 1e6)

        def change(current: KeyRecord) -> tuple[KeyRecord, int]:
            fresh = VersionRecord(version, pb.KEY_VERSION_STATE_AVAILABLE, now, expire_us)
            others = tuple(v for v in current.versions if v.version != version)
            old = current.version(version)
            if old is not None:
                fresh = replace(fresh, create_us=old.create_us)
            primary = version if new_version or current.primary_version == 0 else current.primary_version
            state = pb.KEY_STATE_ENABLED if current.state == pb.KEY_STATE_PENDING_IMPORT else current.state
            return current.changed(versions=tuple(sorted((*others, fresh), key=lambda v: v.version)),
                                   primary_version=primary, state=state), version

        return await self._mutate(record, change)

    async def delete_imported(self, name: str) -> KeyRecord:
        record = await self._external(name, "DeleteImportedKeyMaterial")
        versions = [v.version for v in record.versions if v.state == pb.KEY_VERSION_STATE_AVAILABLE]
        return await self._drop_imported(record, versions, "DeleteImportedKeyMaterial", None)

    # --- policies ---

    async def get_policy(self, name: str) -> tuple[KeyRecord, pb.KeyPolicy, str, int]:
        record = await self.resolve(name, "key")
        await self._authorize("GetKeyPolicy", record, pb.KEY_OPERATION_GET_KEY_POLICY, {})
        policy, etag, updated = await asyncio.to_thread(self.store.policy, record.key_id)
        return record, policy, etag, updated

    async def put_policy(self, name: str, policy: pb.KeyPolicy, etag: str, bypass: bool) -> tuple[KeyRecord, str, int]:
        policy = pb.KeyPolicy(statements=policy.statements)
        validate(policy)
        record = await self.resolve(name, "key")
        await self._authorize("PutKeyPolicy", record, pb.KEY_OPERATION_PUT_KEY_POLICY, {})
        check_lockout(policy, current_principal.get(), bypass)
        await self._audit("PutKeyPolicy", record, statements=len(policy.statements), bypass_lockout=bypass)
        try:
            stored = await asyncio.to_thread(self.store.put_policy, record.key_id, policy, etag)
        finally:
            self.cache.drop(record.key_id)
        if stored is None:
            raise Aborted("ETAG_MISMATCH", "the policy changed since the given etag")
        return record, stored[0], stored[1]

    # --- data keys ---

    async def generate_data_key(self, name: str, context: dict[str, str], evidence: Evidence | None,
                                with_plaintext: bool = True) -> DataKeyResult:
        context = contexts.validate(context)
        operation = "GenerateDataKey" if with_plaintext else "GenerateDataKeyWithoutPlaintext"
        op = pb.KEY_OPERATION_GENERATE_DATA_KEY if with_plaintext else \
            pb.KEY_OPERATION_GENERATE_DATA_KEY_WITHOUT_PLAINTEXT
        record = await self.resolve(name, "key")
        decision = await self._authorize(operation, record, op, context, evidence is not None)
        self._usable(record)
        released = await self._release_target(operation, record, context, evidence, decision)
        version = record.primary_version
        backend, ref = self._backend(record), KeyRef(record.key_id, record.arn)
        if released is not None and evidence is not None and evidence.document is not None \
                and backend.releases_to_recipients:
            blob, for_recipient = await self._call(backend.generate_for_recipient, ref, context, evidence.document)
            await self._audit_release(operation, record, version, context, decision, released)
            return DataKeyResult(record, version, b"", blob, for_recipient, released, cms=True)
        plaintext, blob = await self._call(backend.generate_data_key, ref, version, context,
                                           inline=not backend.blocking)
        return await self._hand_out(operation, record, version, plaintext, blob, context, decision, released,
                                    with_plaintext)

    async def _release_target(self, operation: str, record: KeyRecord, context: dict[str, str],
                              evidence: Evidence | None, decision: Decision) -> Released | None:
        if evidence is None:
            return None
        try:
            return await self.judge.judge(evidence, decision.attestation)
        except PermissionDenied as exc:
            await self._audit(operation, record, "DENIED", reason=exc.reason, refusals=exc.metadata.get("refusals"),
                              context_keys=contexts.audit_keys(context))
            raise

    async def _audit_release(self, operation: str, record: KeyRecord, version: int, context: dict[str, str],
                             decision: Decision, released: Released | None) -> None:
        details: dict[str, str] = {"key_version": str(version), "context_keys": contexts.audit_keys(context),
                                      "statements": ",".join(decision.sids)}
        if released is not None:
            details.update(recipient_module_id=released.module_id, recipient_document_sha256=released.document_sha256,
                           recipient_public_key_sha256=released.public_key_sha256,
                           verifier_policy=released.verifier_policy)
        await self._audit(operation, record, **details)

    async def _hand_out(self, operation: str, record: KeyRecord, version: int, plaintext: bytes, blob: bytes,
                        context: dict[str, str], decision: Decision, released: Released | None,
                        with_plaintext: bool) -> DataKeyResult:
        wrapped = b""
        if released is not None:  # wrapped before the release is recorded: the entry states what happened
            try:
                wrapped = await asyncio.to_thread(encrypt_for_recipient, released.public_key_der, plaintext)
            except Exception:
                await self._audit(operation, record, "FAILURE", reason="RECIPIENT_WRAP_FAILED", key_version=version,
                                  recipient_module_id=released.module_id)
                raise Internal("RECIPIENT_WRAP_FAILED", "the data key could not be wrapped to the recipient") from None
        await self._audit_release(operation, record, version, context, decision, released)
        if released is not None:
            return DataKeyResult(record, version, b"", blob, wrapped, released)
        return DataKeyResult(record, version, plaintext if with_plaintext else b"", blob)

    async def _blob_owner(self, blob: bytes, field: str, expected: str, key_field: str) -> KeyRecord:
        """The key that wrapped a blob, found without decrypting anything, so that the policy is checked before
        any plaintext exists: the key its header names (local blobs), else the `expected` key the caller names
        (required then: KMS's CiphertextBlob format is not documented, and the backend's decrypt is then held
        to that key, as KMS's KeyId holds it). A blob that names another key than `expected` is refused."""
        if not blob or len(blob) > MAX_BLOB:
            raise InvalidArgument.single(field, f"1..{MAX_BLOB} bytes required")
        expected_record = await self.resolve(expected, key_field) if expected else None
        for backend in self.backends.values():
            try:
                named = backend.blob_key(blob)
            except InvalidCiphertext:
                raise invalid_ciphertext(field) from None
            if named is not None:
                owner = await self._record("id", named[0], self.store.get)
                if owner is None or (expected_record is not None and owner.key_id != expected_record.key_id):
                    raise invalid_ciphertext(field)
                return await self.settle(owner)
        if expected_record is not None and self._backend(expected_record).opaque_blobs:
            return expected_record
        if expected_record is None and any(backend.opaque_blobs for backend in self.backends.values()):
            raise InvalidArgument.single(key_field, "required for a ciphertext that does not name its key (an "
                                         "aws-kms blob): the broker authorizes before anything is decrypted")
        raise invalid_ciphertext(field)

    async def _unwrap(self, record: KeyRecord, blob: bytes, context: dict[str, str], field: str) -> tuple[bytes, int]:
        try:
            backend = self._backend(record)
            return await self._call(backend.unwrap, KeyRef(record.key_id, record.arn), blob, context,
                                    inline=not backend.blocking)
        except InvalidCiphertext:
            raise invalid_ciphertext(field) from None
        except MaterialUnavailable:
            raise _state_error(pb.KEY_STATE_PENDING_IMPORT if record.origin == pb.KEY_ORIGIN_EXTERNAL
                               else pb.KEY_STATE_DESTROYED) from None

    async def decrypt(self, blob: bytes, context: dict[str, str], key: str, evidence: Evidence | None) -> DataKeyResult:
        context = contexts.validate(context)
        record = await self._blob_owner(blob, "ciphertext_blob", key, "key")
        decision = await self._authorize("Decrypt", record, pb.KEY_OPERATION_DECRYPT, context, evidence is not None)
        self._usable(record)
        released = await self._release_target("Decrypt", record, context, evidence, decision)
        backend, ref = self._backend(record), KeyRef(record.key_id, record.arn)
        if released is not None and evidence is not None and evidence.document is not None \
                and backend.releases_to_recipients:
            for_recipient = await self._call(backend.decrypt_for_recipient, ref, blob, context, evidence.document)
            await self._audit_release("Decrypt", record, 0, context, decision, released)
            return DataKeyResult(record, 0, b"", blob, for_recipient, released, cms=True)
        plaintext, version = await self._unwrap(record, blob, context, "ciphertext_blob")
        return await self._hand_out("Decrypt", record, version, plaintext, blob, context, decision, released, True)

    async def re_encrypt(self, blob: bytes, source_context: dict[str, str], source_key: str, destination: str,
                         destination_context: dict[str, str]) -> tuple[KeyRecord, int, KeyRecord, int, bytes]:
        source_context = contexts.validate(source_context, "source_encryption_context")
        destination_context = contexts.validate(destination_context, "destination_encryption_context")
        if not destination:
            raise InvalidArgument.single("destination_key", "required")
        source = await self._blob_owner(blob, "ciphertext_blob", source_key, "source_key")
        target = await self.resolve(destination, "destination_key")
        from_decision = await self._authorize("ReEncrypt", source, pb.KEY_OPERATION_RE_ENCRYPT_FROM, source_context)
        to_decision = await self._authorize("ReEncrypt", target, pb.KEY_OPERATION_RE_ENCRYPT_TO, destination_context)
        self._usable(source)
        self._usable(target)
        version = target.primary_version
        if source.backend == target.backend:
            try:
                new_blob, source_version = await self._call(
                    self._backend(source).re_encrypt, KeyRef(source.key_id, source.arn), blob, source_context,
                    KeyRef(target.key_id, target.arn), version, destination_context)
            except InvalidCiphertext:
                raise invalid_ciphertext() from None
        else:
            plaintext, source_version = await self._unwrap(source, blob, source_context, "ciphertext_blob")
            new_blob = await self._call(self._backend(target).wrap, KeyRef(target.key_id, target.arn), version,
                                        plaintext, destination_context)
        await self._audit("ReEncrypt", source, source_version=source_version, destination=target.name,
                          key_version=version, source_context_keys=contexts.audit_keys(source_context),
                          context_keys=contexts.audit_keys(destination_context),
                          statements=",".join((*from_decision.sids, *to_decision.sids)))
        return source, source_version, target, version, new_blob

    # --- Encryption SDK messages ---

    def _wrapping(self, record: KeyRecord, used: list[int]) -> messages.Wrapping:
        """The backend as an SDK master key's operations; `used` collects the versions it touched."""
        backend, ref = self._backend(record), KeyRef(record.key_id, record.arn)

        def generate(context: dict[str, str]) -> tuple[bytes, bytes]:
            used.append(record.primary_version)
            return backend.generate_data_key(ref, record.primary_version, context)

        def wrap(plaintext: bytes, context: dict[str, str]) -> bytes:
            used.append(record.primary_version)
            return backend.wrap(ref, record.primary_version, plaintext, context)

        def unwrap(blob: bytes, context: dict[str, str]) -> bytes:
            plaintext, version = backend.unwrap(ref, blob, context)
            used.append(version)
            return plaintext

        return messages.Wrapping(generate, wrap, unwrap)

    def _materials(self, record: KeyRecord) -> tuple[dict[str, Any], list[int]]:
        """What the SDK encrypts with, and the list its data-key generations are recorded in. With caching, one
        caching materials manager per key, primary version and limits (a rotation starts a fresh cache)."""
        if record.caching is None:
            used: list[int] = []
            return {"key_provider": messages.master_key(record.name, self._wrapping(record, used))}, used
        cache_key = (record.key_id, record.primary_version, record.caching)
        cached = self._caches.get(cache_key)
        if cached is None:
            used = []
            limits = record.caching
            manager = messages.caching_manager(messages.master_key(record.name, self._wrapping(record, used)),
                                               limits.max_age_us / 1e6, limits.max_messages, limits.max_bytes)
            cached = self._caches[cache_key] = (manager, used)
        return {"materials_manager": cached[0]}, cached[1]

    async def encrypt_message(self, name: str, payload: bytes, context: dict[str, str], suite: str,
                              frame_length: int) -> MessageResult:
        if len(payload) > MAX_PAYLOAD:
            raise InvalidArgument.single("plaintext", f"at most {MAX_PAYLOAD} bytes", "PAYLOAD_TOO_LARGE")
        if frame_length > MAX_PAYLOAD or frame_length % 128:
            raise InvalidArgument.single("frame_length", f"a multiple of 128 (the SDK's rule), at most {MAX_PAYLOAD}")
        context = contexts.validate(context)
        record = await self.resolve(name, "key")
        decision = await self._authorize("EncryptMessage", record, pb.KEY_OPERATION_ENCRYPT, context)
        self._usable(record)
        materials, used = self._materials(record)
        generated = len(used)

        def encrypt() -> bytes:
            ciphertext, _ = messages.SDK.encrypt(source=payload, encryption_context=context,
                                                 algorithm=messages.SUITES[suite], frame_length=frame_length or 4096,
                                                 **materials)
            return bytes(ciphertext)

        ciphertext = await self._call(encrypt)
        version = record.primary_version
        await self._audit("EncryptMessage", record, key_version=version, context_keys=contexts.audit_keys(context),
                          bytes=len(payload), data_key_reused=str(len(used) == generated).lower(),
                          statements=",".join(decision.sids))
        return MessageResult(record, version, ciphertext, context, suite)

    async def decrypt_message(self, ciphertext: bytes, required: dict[str, str], key: str) -> MessageResult:
        if not ciphertext or len(ciphertext) > MAX_MESSAGE:
            raise InvalidArgument.single("ciphertext", f"1..{MAX_MESSAGE} bytes required", "PAYLOAD_TOO_LARGE")
        try:
            found = messages.read_message_key(io.BytesIO(ciphertext))
        except messages.MessageError:
            raise invalid_ciphertext("ciphertext") from None
        if not found.key_name.startswith("keys/"):
            raise invalid_ciphertext("ciphertext")
        try:
            record = await self.resolve(found.key_name, "ciphertext")
        except NotFound:
            raise invalid_ciphertext("ciphertext") from None
        if key and (await self.resolve(key, "key")).key_id != record.key_id:
            raise invalid_ciphertext("ciphertext")
        context = found.encryption_context
        if any(context.get(k) != v for k, v in required.items()):
            raise invalid_ciphertext("encryption_context")
        user_context = contexts.user_entries(context)
        decision = await self._authorize("DecryptMessage", record, pb.KEY_OPERATION_DECRYPT, user_context)
        self._usable(record)
        used: list[int] = []
        master_key = messages.master_key(record.name, self._wrapping(record, used))

        def decrypt() -> bytes:
            plaintext, _ = messages.SDK.decrypt(source=ciphertext, key_provider=master_key)
            return bytes(plaintext)

        try:
            payload = await self._call(decrypt)
        except ServiceError:
            raise
        except Exception:  # the SDK's errors: the message does not authenticate or its data key does not unwrap
            raise invalid_ciphertext("ciphertext") from None
        version = used[-1] if used else 0
        await self._audit("DecryptMessage", record, key_version=version, context_keys=contexts.audit_keys(context),
                          bytes=len(payload), statements=",".join(decision.sids))
        return MessageResult(record, version, payload, context, found.algorithm)


async def run_periodically(interval: float, job: Callable[[], Awaitable[object]]) -> None:
    """Runs `job` every `interval` seconds until cancelled; a failing run is logged and retried next time."""
    while True:
        await asyncio.sleep(interval)
        try:
            await job()
        except Exception as exc:
            log.warning("sweep failed: %s", type(exc).__name__)
