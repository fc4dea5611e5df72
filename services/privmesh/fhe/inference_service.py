"""fhe-inference's domain logic (no gRPC): key registration into sessions, encrypted inference, models.

Every size is checked against the model's limits before a byte is read; uploaded keys are checked in a
sandbox worker before a session exists (on any error nothing is kept); every inference is audited with the
model, the session and the sample count only, before its output is released (fail closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from privmesh.fhe.model import InvalidModel, ModelSpec
from privmesh.fhe.params import CkksParams
from privmesh.fhe.registry import ModelRegistry, RegisteredModel, TestModelsDisabled
from privmesh.fhe.store import KeyFiles, KeyPart, KeyTagInUse, Session, SessionStore, now_us
from privmesh.fhe.worker import (
    CRYPTO_CONTEXT,
    PUBLIC_KEY,
    RELINEARIZATION_KEY,
    ROTATION_KEYS,
    KeyPaths,
    Rejected,
    Worker,
    WorkerCrashed,
    WorkerTimedOut,
)
from privmesh.runtime.audit.log import AuditLog
from privmesh.runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    ServiceError,
)

log = logging.getLogger("privmesh.fhe")

MAX_CHUNK_BYTES = 1024 * 1024
DEFAULT_TTL = timedelta(hours=1)
MIN_TTL, MAX_TTL = timedelta(minutes=1), timedelta(hours=24)


@dataclass(frozen=True)
class DeclaredPart:
    kind: str
    size: int
    sha256: bytes  # empty when the client did not declare one


@dataclass(frozen=True)
class KeyUpload:
    model_id: str
    params: CkksParams | None
    parts: tuple[DeclaredPart, ...]
    ttl: timedelta | None
    request_id: str


@dataclass(frozen=True)
class Chunk:
    kind: str
    offset: int
    data: bytes


def required_parts(spec: ModelSpec) -> tuple[str, ...]:
    """The key parts the model's circuit uses: dense layers rotate, non-identity activations multiply."""
    parts = [CRYPTO_CONTEXT, PUBLIC_KEY]
    if any(layer.activation.kind != "identity" for layer in spec.layers):
        parts.append(RELINEARIZATION_KEY)
    if spec.params.rotation_indices:
        parts.append(ROTATION_KEYS)
    return tuple(parts)


def check_input(spec: ModelSpec, sample_count: int, sizes: Sequence[int], field: str = "input") -> None:
    """An input's declared shape against the model, before any of its bytes is read (Infer and jobs)."""
    if len(sizes) != 1 or not 1 <= sample_count <= spec.samples_per_ciphertext:
        raise InvalidArgument.single(field, f"one ciphertext of 1..{spec.samples_per_ciphertext} samples",
                                     "INPUT_SHAPE_MISMATCH")
    for index, size in enumerate(sizes):
        if not 0 < size <= spec.limits.max_ciphertext_bytes:
            raise InvalidArgument.single(f"{field}.ciphertexts[{index}].size_bytes", "must be 1.."
                                         f"{spec.limits.max_ciphertext_bytes}", "CIPHERTEXT_TOO_LARGE")


def _timed_out(what: str) -> Rejected:
    return Rejected("TIME_LIMIT_EXCEEDED", f"{what} ran past the server's time limit per request; it was stopped")


def _rejected(found: Rejected, field_prefix: str) -> ServiceError:
    if found.reason == "PARAMETERS_MISMATCH":
        return FailedPrecondition(found.reason, found.message, {"fields": ",".join(found.fields)})
    if found.reason == "EVALUATION_FAILED":
        return FailedPrecondition(found.reason, found.message)
    if found.reason in ("TIME_LIMIT_EXCEEDED", "DEVICE_MEMORY_EXHAUSTED"):
        return ResourceExhausted(found.reason, found.message)
    if found.reason == "KEYS_INCOMPLETE":
        return _incomplete(list(found.fields), found.message)
    field = f"{field_prefix}.{found.fields[0]}" if found.fields else field_prefix
    return InvalidArgument.single(field, found.message, found.reason)


class FheService:
    def __init__(self, registry: ModelRegistry, sessions: SessionStore, keys: KeyFiles, checker: Worker,
                 evaluators: list[Worker], audit: AuditLog, max_sessions_per_principal: int) -> None:
        self.registry = registry
        self.sessions = sessions
        self.keys = keys
        self.checker = checker
        self.evaluators = evaluators
        self.audit = audit
        self.max_sessions = max_sessions_per_principal
        self._worker_specs: dict[str, ModelSpec] = {}

    # --- models ---------------------------------------------------------------------------------------------

    async def model(self, model_id: str) -> RegisteredModel:
        found = await self.registry.get(model_id)
        if found is None:
            raise NotFound("MODEL_NOT_FOUND", f"no model named models/{model_id}")
        return found

    async def create_model(self, model_id: str, model_file: bytes) -> RegisteredModel:
        try:
            created = await self.registry.create(model_id, model_file)
        except InvalidModel as exc:
            text = str(exc)
            if text.startswith("model_id: "):  # the id, not the file: its own field, named once
                raise InvalidArgument.single("model_id", text.removeprefix("model_id: "), "MODEL_INVALID") from None
            raise InvalidArgument.single("model_file", text, "MODEL_INVALID") from None
        except TestModelsDisabled:
            raise FailedPrecondition("TEST_MODELS_DISABLED", "this server serves only models with 128-bit security "
                                     "(HEStd_128_classic)") from None
        if created is None:
            raise AlreadyExists("MODEL_ALREADY_EXISTS", f"models/{model_id} already exists")
        await self.audit.append("CreateModel", resource=created.spec.name,
                                details={"weights_sha256": created.spec.weights_sha256, "etag": created.spec.etag,
                                         "kind": created.spec.kind})
        return created

    async def delete_model(self, model_id: str) -> None:
        await self.model(model_id)
        await self.audit.append("DeleteModel", resource=f"models/{model_id}")
        await self.registry.delete(model_id)

    # --- sessions -------------------------------------------------------------------------------------------

    async def session(self, session_id: str, owner: str) -> Session:
        """The caller's live session (NOT_FOUND for another principal's, without saying it exists)."""
        found = await asyncio.to_thread(self.sessions.get, session_id) if session_id else None
        if found is None or not hmac.compare_digest(found.owner, owner):
            raise NotFound("SESSION_NOT_FOUND", f"no session named sessions/{session_id}")
        if found.expire_us <= now_us():
            raise NotFound("SESSION_EXPIRED", "the session expired; register the keys again")
        return found

    async def delete_session(self, session_id: str, owner: str, authorize: Callable[[str], None]) -> None:
        """Deletes the caller's session once `authorize` accepted its model (expired sessions too)."""
        found = await asyncio.to_thread(self.sessions.get, session_id) if session_id else None
        if found is None or not hmac.compare_digest(found.owner, owner):
            raise NotFound("SESSION_NOT_FOUND", f"no session named sessions/{session_id}")
        authorize(f"models/{found.model_id}")
        await self.audit.append("DeleteSession", resource=found.name, details={"model": f"models/{found.model_id}"})
        await asyncio.to_thread(self.sessions.delete, session_id)
        await self._forget(found)

    async def _forget(self, session: Session) -> None:
        await asyncio.to_thread(self.keys.discard, session.session_id)
        for worker in self.evaluators:
            with contextlib.suppress(WorkerCrashed):  # a dead worker holds no keys
                await worker.call("forget", session.session_id)

    async def sweep(self) -> int:
        """Deletes the keys of expired sessions; forgets their rows once the request_id memory has lapsed."""
        now = now_us()
        expired = await asyncio.to_thread(self.sessions.expired, now)
        for session_id in expired:
            found = await asyncio.to_thread(self.sessions.get, session_id)
            if found is None:
                continue
            if self.keys.exists(session_id):
                await self._forget(found)
            if found.expire_us + (found.expire_us - found.create_us) < now:
                await asyncio.to_thread(self.sessions.delete, session_id)
        return len(expired)

    # --- RegisterKeys ---------------------------------------------------------------------------------------

    def _check_header(self, upload: KeyUpload, spec: ModelSpec) -> timedelta:
        if upload.params is not None:
            differing = spec.params.differences(upload.params)
            if differing:
                raise FailedPrecondition("PARAMETERS_MISMATCH", "the parameters differ from the model's: "
                                         + ", ".join(differing), {"fields": ",".join(differing)})
        kinds = [p.kind for p in upload.parts]
        if len(set(kinds)) != len(kinds):
            raise InvalidArgument.single("header.key_parts", "each part may be declared once", "STREAM_OUT_OF_ORDER")
        missing = [k for k in required_parts(spec) if k not in kinds]
        if missing:
            raise _incomplete(missing)
        extra = [k for k in kinds if k not in required_parts(spec)]
        if extra:
            raise InvalidArgument.single("header.key_parts", "the model does not use " + ", ".join(extra))
        for index, part in enumerate(upload.parts):
            if part.size <= 0:
                raise InvalidArgument.single(f"header.key_parts[{index}].size_bytes", "must be positive")
            if part.sha256 and len(part.sha256) != 32:
                raise InvalidArgument.single(f"header.key_parts[{index}].sha256", "must be 32 bytes when set")
        total = sum(p.size for p in upload.parts)
        if total > spec.limits.max_total_key_bytes:
            raise InvalidArgument.single("header.key_parts", f"{total} bytes declared, the model allows "
                                         f"{spec.limits.max_total_key_bytes}", "KEYS_TOO_LARGE")
        ttl = DEFAULT_TTL if upload.ttl is None else upload.ttl
        if not MIN_TTL <= ttl <= MAX_TTL:
            raise InvalidArgument.single("header.ttl", "must be between 1 minute and 24 hours")
        if len(upload.request_id) > 64:
            raise InvalidArgument.single("header.request_id", "at most 64 characters")
        return ttl

    @staticmethod
    def _request_digest(upload: KeyUpload) -> str:
        text = "|".join([upload.model_id, *(f"{p.kind}:{p.size}:{p.sha256.hex()}" for p in upload.parts)])
        return hashlib.sha256(text.encode()).hexdigest()

    async def register_keys(self, owner: str, upload: KeyUpload, chunks: AsyncIterator[Chunk]) -> Session:
        spec = (await self.model(upload.model_id)).spec
        ttl = self._check_header(upload, spec)
        digest = self._request_digest(upload)
        if upload.request_id:
            earlier = await asyncio.to_thread(self.sessions.by_request_id, owner, upload.request_id)
            if earlier is not None:
                if not hmac.compare_digest(earlier.request_digest, digest):
                    raise AlreadyExists("REQUEST_ID_CONFLICT", "the request_id was used for another upload")
                return earlier
        if await asyncio.to_thread(self.sessions.live_count, owner) >= self.max_sessions:
            raise ResourceExhausted("TOO_MANY_SESSIONS", f"at most {self.max_sessions} live sessions per principal")
        directory = await asyncio.to_thread(self.keys.new_upload)
        try:
            received = await self._receive(upload, chunks, directory)
            paths = KeyPaths({kind: str(KeyFiles.part_path(directory, kind)) for kind in received})
            try:
                verdict = await self.checker.call("check_keys", spec.params.to_json(), paths)
            except WorkerTimedOut:
                raise _rejected(_timed_out("checking the keys"), "key_parts") from None
            except WorkerCrashed:
                raise InvalidArgument.single("chunk", "the keys could not be deserialized", "KEY_MALFORMED") from None
            if isinstance(verdict, Rejected):
                raise _rejected(verdict, "key_parts")
            return await self._open_session(owner, upload, spec, received, verdict["key_tag"], ttl, digest, directory)
        finally:
            await asyncio.to_thread(self.keys.discard, directory)  # a committed upload was moved away already

    async def _receive(self, upload: KeyUpload, chunks: AsyncIterator[Chunk], directory: Path) -> dict[str, KeyPart]:
        received: dict[str, KeyPart] = {}
        pending = list(upload.parts)
        current: DeclaredPart | None = None
        handle = None
        hasher = hashlib.sha256()
        written = 0
        try:
            async for chunk in chunks:
                if current is None:
                    if not pending:
                        raise InvalidArgument.single("chunk", "more bytes than the header declared",
                                                     "STREAM_OUT_OF_ORDER")
                    current, written, hasher = pending.pop(0), 0, hashlib.sha256()
                    handle = KeyFiles.part_path(directory, current.kind).open("xb")
                if chunk.kind != current.kind or chunk.offset != written:
                    raise InvalidArgument.single("chunk", f"expected {current.kind} at offset {written}",
                                                 "STREAM_OUT_OF_ORDER")
                if not 1 <= len(chunk.data) <= MAX_CHUNK_BYTES or written + len(chunk.data) > current.size:
                    raise InvalidArgument.single("chunk.data", "1 byte .. 1 MiB, within the declared size",
                                                 "CHUNK_TOO_LARGE")
                assert handle is not None
                await asyncio.to_thread(handle.write, chunk.data)
                hasher.update(chunk.data)
                written += len(chunk.data)
                if written == current.size:
                    handle.close()
                    handle = None
                    actual = hasher.digest()
                    if current.sha256 and not hmac.compare_digest(actual, current.sha256):
                        raise InvalidArgument.single(f"key_parts.{current.kind}", "SHA-256 differs from the header's",
                                                     "KEY_DIGEST_MISMATCH")
                    received[current.kind] = KeyPart(current.kind, current.size, actual)
                    current = None
        finally:
            if handle is not None:
                handle.close()
        if current is not None or pending:
            raise InvalidArgument.single("chunk", "the stream ended before every declared byte arrived",
                                         "STREAM_OUT_OF_ORDER")
        return received

    async def _open_session(self, owner: str, upload: KeyUpload, spec: ModelSpec, parts: dict[str, KeyPart],
                            key_tag: str, ttl: timedelta, digest: str, directory: Path) -> Session:
        session_id = secrets.token_hex(16)
        created = now_us()
        session = Session(session_id, spec.model_id, spec.etag, owner, key_tag,
                          tuple(parts[p.kind] for p in upload.parts), parts[PUBLIC_KEY].sha256.hex(), created,
                          created + ttl // timedelta(microseconds=1), request_id=upload.request_id,
                          request_digest=digest)
        await self.audit.append("RegisterKeys", resource=session.name, details={
            "model": spec.name, "model_etag": spec.etag, "public_key_fingerprint": session.public_key_fingerprint,
            "key_bytes": str(sum(p.size for p in session.key_parts)), "ttl_seconds": str(int(ttl.total_seconds()))})
        final = await asyncio.to_thread(self.keys.commit, directory, session_id)
        try:
            await asyncio.to_thread(self.sessions.create, session)
        except KeyTagInUse:
            await asyncio.to_thread(self.keys.discard, final)
            raise InvalidArgument.single("key_parts.public_key", "this key pair already backs a live session; "
                                         "generate a fresh key pair per session", "KEY_CONTEXT_MISMATCH") from None
        except BaseException:
            await asyncio.to_thread(self.keys.discard, final)
            raise
        return session

    # --- Infer ----------------------------------------------------------------------------------------------

    async def open_inference(self, session_id: str, owner: str) -> tuple[Session, ModelSpec]:
        session = await self.session(session_id, owner)
        spec = (await self.model(session.model_id)).spec
        if spec.etag != session.model_etag:
            raise FailedPrecondition("PARAMETERS_MISMATCH", "the model changed since the session was created; "
                                     "register new keys", {"fields": "model_etag"})
        return session, spec

    def _worker_spec(self, spec: ModelSpec) -> ModelSpec:
        """The spec without its source file: what a worker needs, smaller to send."""
        if spec.etag not in self._worker_specs:
            self._worker_specs[spec.etag] = dataclasses.replace(spec, source=b"")
        return self._worker_specs[spec.etag]

    async def start_evaluation(self, session: Session, spec: ModelSpec, ciphertexts: list[bytes]) \
            -> tuple[Session, asyncio.Future[tuple[list[bytes], float, str] | Rejected]]:
        """Checks that the session is still live (not deleted or expired mid-stream) and queues one input on the
        session's worker without waiting for it, so the worker has the next input at hand when it finishes this
        one. Returns the evaluation to pass to `release`; cancel it to withdraw the input."""
        current = await self.session(session.session_id, session.owner)
        worker = self.evaluators[int(current.session_id[:8], 16) % len(self.evaluators)]
        return current, worker.submit("evaluate", current.session_id, current.key_tag,
                                      KeyPaths(self.keys.parts(current)), self._worker_spec(spec), ciphertexts)

    async def release(self, session: Session, spec: ModelSpec, sample_count: int,
                      evaluation: asyncio.Future[tuple[list[bytes], float, str] | Rejected]) \
            -> tuple[list[bytes], float, str]:
        """Waits for an input's evaluation, audits it (model, session, sample count), and only then returns its
        outputs, the seconds it took and the evaluator that computed it."""
        try:
            result = await evaluation
        except WorkerTimedOut:
            result = _timed_out("evaluating the input")
        except WorkerCrashed:
            result = Rejected("CIPHERTEXT_MALFORMED", "the input could not be processed (the evaluator process "
                              "failed on it and was restarted)")
        details = {"model": spec.name, "session": session.name, "sample_count": str(sample_count)}
        if isinstance(result, Rejected):
            await self.audit.append("Infer", resource=session.name, outcome="FAILURE", details=details)
            raise _rejected(result, "chunk")
        await self.audit.append("Infer", resource=session.name, details=details)
        await asyncio.to_thread(self.sessions.record_inference, session.session_id, now_us())
        return result


def _incomplete(missing: list[str], message: str = "") -> InvalidArgument:
    error = InvalidArgument.single("header.key_parts", message or "missing: " + ", ".join(missing), "KEYS_INCOMPLETE")
    error.metadata["missing"] = ",".join(missing)
    return error
