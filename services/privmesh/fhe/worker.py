"""The sandbox where untrusted bytes meet OpenFHE: a child process that checks key uploads and evaluates.

OpenFHE deserializes with cereal and trusts its input: truncated bytes raise, but flipped bits can make it
allocate wildly or crash the process (SIGSEGV, heap corruption). So the gRPC server never deserializes a key
or a ciphertext itself; it hands the bytes to a worker process and, if the worker dies, reports the input as
malformed and starts a fresh worker. A worker serves one request at a time, so the request that was running
when it died is the one that killed it; requests queued behind it go to the new worker.

Key checks run in their own worker, apart from the evaluation workers, because OpenFHE keeps evaluation keys
in process-wide maps indexed by key tag: checking an upload must never overwrite the keys another session is
using. Evaluation workers only ever load keys that passed the check and whose tag no other live session has.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("privmesh.fhe.worker")

CRYPTO_CONTEXT, PUBLIC_KEY, RELINEARIZATION_KEY, ROTATION_KEYS = "crypto_context", "public_key", \
    "relinearization_key", "rotation_keys"


@dataclass(frozen=True)
class Rejected:
    """Why a worker refused an input: an ErrorReason name (without prefix), a message, the fields involved."""

    reason: str
    message: str
    fields: tuple[str, ...] = ()


class WorkerCrashed(Exception):
    """The worker process died while serving the request."""


# --- inside the worker process ------------------------------------------------------------------------------

def _context_differences(uploaded: Any, reference: Any) -> tuple[str, ...]:
    checks = {"ring_dimension": "GetRingDimension", "batch_size": "GetBatchSize",
              "scaling_technique": "GetScalingTechnique", "key_switch_technique": "GetKeySwitchTechnique"}
    found = tuple(name for name, getter in checks.items()
                  if getattr(uploaded, getter)() != getattr(reference, getter)())
    return found or ("multiplicative_depth", "scaling_mod_size", "first_mod_size", "security_level")


class _Sandbox:
    """The worker's state: the sessions whose keys are loaded (LRU) and the circuits bound to them."""

    def __init__(self, max_sessions: int) -> None:
        import openfhe

        self.openfhe = openfhe
        self.max_sessions = max_sessions
        self.sessions: OrderedDict[str, Any] = OrderedDict()
        self.circuits: dict[tuple[str, str], Any] = {}

    def _clear_keys(self) -> None:
        self.openfhe.ClearEvalMultKeys()
        for context in list(self.sessions.values()):
            context.ClearEvalAutomorphismKeys()
        self.sessions.clear()
        self.circuits.clear()

    def check_keys(self, params_json: dict[str, Any], parts: dict[str, str]) -> dict[str, Any] | Rejected:
        from privmesh.fhe.params import CkksParams, create_context

        o = self.openfhe
        params = CkksParams.from_json(params_json)
        reference = create_context(params)
        self._clear_keys()
        try:
            try:
                uploaded = o.DeserializeCryptoContextString(Path(parts[CRYPTO_CONTEXT]).read_bytes(), o.BINARY)
            except Exception:
                return Rejected("KEY_MALFORMED", "the crypto context could not be deserialized", (CRYPTO_CONTEXT,))
            if uploaded != reference:
                fields = _context_differences(uploaded, reference)
                return Rejected("PARAMETERS_MISMATCH", "the uploaded crypto context has other parameters than the "
                                "model's", fields)
            raw_public = Path(parts[PUBLIC_KEY]).read_bytes()
            try:
                public = o.DeserializePublicKeyString(raw_public, o.BINARY)
            except Exception:
                return self._identify(raw_public)
            if public.GetCryptoContext() != reference:
                return Rejected("KEY_CONTEXT_MISMATCH", "the public key belongs to another crypto context",
                                (PUBLIC_KEY,))
            tag = public.GetKeyTag()
            if RELINEARIZATION_KEY in parts:
                try:
                    o.DeserializeEvalMultKeyString(Path(parts[RELINEARIZATION_KEY]).read_bytes(), o.BINARY)
                except Exception:
                    return Rejected("KEY_MALFORMED", "the relinearization key could not be deserialized",
                                    (RELINEARIZATION_KEY,))
                if set(reference.GetAllEvalMultKeys()) != {tag}:
                    return Rejected("KEY_CONTEXT_MISMATCH", "the relinearization key was made for another key pair",
                                    (RELINEARIZATION_KEY,))
            if ROTATION_KEYS in parts:
                try:
                    o.DeserializeEvalAutomorphismKeyString(Path(parts[ROTATION_KEYS]).read_bytes(), o.BINARY)
                except Exception:
                    return Rejected("KEY_MALFORMED", "the rotation keys could not be deserialized", (ROTATION_KEYS,))
                if set(reference.GetAllEvalAutomorphismKeys()) != {tag}:
                    return Rejected("KEY_CONTEXT_MISMATCH", "the rotation keys were made for another key pair",
                                    (ROTATION_KEYS,))
                present = set(reference.GetExistingEvalAutomorphismKeyIndices(tag))
                missing = [str(step) for step in params.rotation_indices
                           if reference.FindAutomorphismIndex(step) not in present]
                if missing:
                    return Rejected("KEYS_INCOMPLETE", "rotation keys are missing for steps " + ",".join(missing),
                                    ("rotation:" + ",".join(missing),))
            return {"key_tag": tag}
        finally:
            self.openfhe.ClearEvalMultKeys()
            reference.ClearEvalAutomorphismKeys()

    def _identify(self, raw: bytes) -> Rejected:
        """A public-key part that is not a public key: refuse it, and say so plainly if it is a secret key."""
        try:
            self.openfhe.DeserializePrivateKeyString(raw, self.openfhe.BINARY)
        except Exception:
            return Rejected("KEY_MALFORMED", "the public key could not be deserialized", (PUBLIC_KEY,))
        return Rejected("KEY_TYPE_MISMATCH", "the public-key part holds a secret key; it was discarded, never send "
                        "it", (PUBLIC_KEY,))

    def _session(self, session_id: str, parts: dict[str, str]) -> Any:
        o = self.openfhe
        if session_id in self.sessions:
            self.sessions.move_to_end(session_id)
            return self.sessions[session_id]
        if len(self.sessions) >= self.max_sessions:
            self._clear_keys()  # OpenFHE has no per-tag eviction: drop all, live sessions reload on use
        context = o.DeserializeCryptoContextString(Path(parts[CRYPTO_CONTEXT]).read_bytes(), o.BINARY)
        for feature in (o.PKE, o.KEYSWITCH, o.LEVELEDSHE):
            context.Enable(feature)
        if RELINEARIZATION_KEY in parts:
            o.DeserializeEvalMultKeyString(Path(parts[RELINEARIZATION_KEY]).read_bytes(), o.BINARY)
        if ROTATION_KEYS in parts:
            o.DeserializeEvalAutomorphismKeyString(Path(parts[ROTATION_KEYS]).read_bytes(), o.BINARY)
        self.sessions[session_id] = context
        return context

    def evaluate(self, session_id: str, key_tag: str, parts: dict[str, str], spec: Any,
                 ciphertexts: list[bytes]) -> tuple[list[bytes], float] | Rejected:
        from privmesh.fhe.circuit import Circuit
        from privmesh.fhe.openfhe_evaluator import OpenFheEvaluator

        o = self.openfhe
        context = self._session(session_id, parts)
        inputs = []
        for index, raw in enumerate(ciphertexts):
            try:
                ciphertext = o.DeserializeCiphertextString(raw, o.BINARY)
            except Exception:
                return Rejected("CIPHERTEXT_MALFORMED", f"ciphertext {index} could not be deserialized")
            if ciphertext.GetCryptoContext() != context or ciphertext.GetKeyTag() != key_tag:
                return Rejected("CIPHERTEXT_CONTEXT_MISMATCH",
                                f"ciphertext {index} was made under another crypto context or key pair")
            if (ciphertext.GetLevel() != 0 or ciphertext.GetNoiseScaleDeg() != 1
                    or ciphertext.NumberCiphertextElements() != 2):
                return Rejected("CIPHERTEXT_CONTEXT_MISMATCH", f"ciphertext {index} is not a fresh encryption")
            inputs.append(ciphertext)
        key = (session_id, spec.etag)
        if key not in self.circuits:
            self.circuits[key] = Circuit(spec, OpenFheEvaluator(context))
        started = time.perf_counter()
        try:
            output = self.circuits[key](inputs[0])
        except Exception:
            return Rejected("EVALUATION_FAILED", "the evaluator could not compute the model on this input")
        elapsed = time.perf_counter() - started
        return [o.Serialize(output, o.BINARY)], elapsed

    def forget(self, session_id: str) -> None:
        if session_id in self.sessions:
            self._clear_keys()


def _serve(connection: multiprocessing.connection.Connection, max_sessions: int) -> None:
    sandbox = _Sandbox(max_sessions)
    connection.send(("ready",))
    while True:
        try:
            request = connection.recv()
        except EOFError:
            return
        operation, args = request[0], request[1:]
        try:
            reply: Any = getattr(sandbox, operation)(*args)
        except Exception as exc:  # a bug, not an input problem: report it without the input's bytes
            reply = Rejected("EVALUATION_FAILED", f"worker error ({type(exc).__name__})")
        connection.send(reply)


# --- in the server process ----------------------------------------------------------------------------------

class Worker:
    """One sandbox process, restarted after a crash; requests are served one at a time."""

    def __init__(self, label: str, max_sessions: int = 32) -> None:
        self.label = label
        self.max_sessions = max_sessions
        self._lock = asyncio.Lock()
        self._process: multiprocessing.process.BaseProcess | None = None
        self._connection: multiprocessing.connection.Connection | None = None
        self.restarts = 0

    def _spawn(self) -> None:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        process = context.Process(target=_serve, args=(child, self.max_sessions), name=f"fhe-{self.label}",
                                  daemon=True)
        process.start()
        child.close()
        if parent.recv() != ("ready",):
            raise RuntimeError("the FHE worker did not start")
        self._process, self._connection = process, parent

    def _roundtrip(self, request: tuple[Any, ...]) -> Any:
        if self._process is None or not self._process.is_alive():
            self._spawn()
        assert self._connection is not None
        try:
            self._connection.send(request)
            return self._connection.recv()
        except (EOFError, OSError):
            self._reap()
            raise WorkerCrashed from None

    def _reap(self) -> None:
        if self._process is not None:
            self._process.join(timeout=5)
            log.warning("FHE worker %s died (exit code %s); a new one starts with the next request",
                        self.label, self._process.exitcode)
        if self._connection is not None:
            self._connection.close()
        self._process = self._connection = None
        self.restarts += 1

    async def start(self) -> None:
        async with self._lock:
            await asyncio.to_thread(self._spawn)

    async def call(self, operation: str, *args: Any) -> Any:
        """One request and its reply. A cancelled caller stops waiting, but the worker stays taken until the
        reply has been read, so the next request can never receive this one's reply."""
        await self._lock.acquire()
        roundtrip = asyncio.ensure_future(asyncio.to_thread(self._roundtrip, (operation, *args)))
        roundtrip.add_done_callback(self._release)
        return await asyncio.shield(roundtrip)

    def _release(self, roundtrip: asyncio.Future[Any]) -> None:
        self._lock.release()
        if not roundtrip.cancelled():
            roundtrip.exception()  # retrieved here, so an abandoned call's WorkerCrashed is not logged as lost

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
        if self._process is not None:
            self._process.join(timeout=5)
            if self._process.is_alive():
                self._process.kill()
                self._process.join(timeout=5)
        self._process = self._connection = None
