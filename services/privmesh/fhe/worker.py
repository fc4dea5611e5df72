"""The sandbox where untrusted bytes meet OpenFHE: a child process that checks key uploads and evaluates.

OpenFHE deserializes with cereal and trusts its input: truncated bytes raise, but flipped bits can make it
allocate wildly or crash the process (SIGSEGV, heap corruption). So the gRPC server never deserializes a key
or a ciphertext itself; it hands the bytes to a worker process and, if the worker dies, reports the input as
malformed and starts a fresh worker.

A worker is handed the next request while it still runs the current one (it waits in the worker's socket), so
it never idles between two inputs; it runs them one at a time, in order, and says as it starts each one. If it
dies, the request it had started is the one that killed it; the requests it had not started go, in order, to
the fresh worker, as if nothing had happened.

The transport is a socket pair with length-prefixed pickles, written here rather than multiprocessing's Pipe
because the server reads it on its event loop (asyncio streams), so queueing a request needs no thread; the
server unpickles replies with an unpickler that admits only plain data and `Rejected`, so a worker that
corrupted bytes took over cannot make the server run code. The worker may open no file (sandbox.py): the session
key files a request names (`KeyPaths`) are opened read-only by the server and passed as descriptors
(SCM_RIGHTS) on a second socket pair, one message per such request, in the order of the requests.

Limits: each process's address space is capped (RLIMIT_AS), so bytes that make OpenFHE allocate wildly fail in
the sandbox instead of pushing the node into the OOM killer; and a request that runs past the time limit gets
its process killed and fails with WorkerTimedOut, so an input that makes the evaluator loop cannot hold a
worker forever (a gRPC deadline only bounds the caller's wait, not the worker's work).

With `evaluator.backend: torch` the evaluation workers run the circuits with the torch evaluator
(privmesh.fhe.gpu) on the device chosen at start (CUDA when visible, else the CPU, the reason logged): a session's
evaluation keys go to the device once, when its first input arrives, and leave with the session; a session whose
keys would exceed the per-session device memory is refused (DEVICE_MEMORY_EXHAUSTED), as is an input that runs the
device out of memory. A CUDA worker has no address-space cap (CUDA reserves far more address space than it uses).

Key checks run in their own worker, apart from the evaluation workers, because OpenFHE keeps evaluation keys
in process-wide maps indexed by key tag: checking an upload must never overwrite the keys another session is
using. Evaluation workers only ever load keys that passed the check and whose tag no other live session has.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import logging
import multiprocessing
import os
import pickle
import resource
import socket
import struct
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

from privmesh.fhe.settings import EvaluatorSettings
from privmesh.runtime.logs import configure_logging

log = logging.getLogger("privmesh.fhe.worker")

CRYPTO_CONTEXT, PUBLIC_KEY, RELINEARIZATION_KEY, ROTATION_KEYS = "crypto_context", "public_key", \
    "relinearization_key", "rotation_keys"

DEPTH = 2  # requests in a worker at once: the one it runs and the next, waiting in its socket
MAX_HANDOVERS = 3  # workers a request may be handed to that die before starting it; then it fails as a crash
MAX_REPLY_BYTES = 1 << 30  # a reply's length is checked before the server reads it
SOCKET_BUFFER_BYTES = 8 << 20  # asked for; Linux caps it at net.core.wmem_max (x2)
_HEADER = struct.Struct("!Q")  # every message: its length, then its pickle
_READY, _STARTED, _REPLY = "ready", "started", "reply"  # what a worker says


@dataclass(frozen=True)
class Rejected:
    """Why a worker refused an input: an ErrorReason name (without prefix), a message, the fields involved."""

    reason: str
    message: str
    fields: tuple[str, ...] = ()


class WorkerCrashed(Exception):
    """The worker process died while serving the request."""


class WorkerTimedOut(WorkerCrashed):
    """The worker ran past the time limit on the request and was killed."""


@dataclass(frozen=True)
class WorkerLimits:
    """What one sandbox process may use: seconds per request, bytes of address space (0: no cap), and the user
    and group it becomes when the server runs as root (see sandbox.py)."""

    seconds_per_request: float = 300.0
    address_space_bytes: int = 0
    uid: int = 65534
    gid: int = 65534


class KeyPaths(dict[str, str]):
    """A request argument: key part name -> file. The server opens the files; the worker gets `PassedFile`s."""


@dataclass(frozen=True)
class _Passed:
    """Where a KeyPaths was: the part names, and which of them could be opened (their descriptors follow)."""

    names: tuple[str, ...]
    opened: tuple[bool, ...]


class PassedFile:
    """A key file the server opened for the worker; reading it needs no open()."""

    def __init__(self, name: str, fd: int | None) -> None:
        self.name = name
        self.fd = fd

    def read_bytes(self) -> bytes:
        if self.fd is None:
            raise FileNotFoundError(self.name)
        with contextlib.suppress(OSError):  # a pipe cannot seek (and is read once)
            os.lseek(self.fd, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(self.fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)


# --- inside the worker process ------------------------------------------------------------------------------

def _context_differences(uploaded: Any, reference: Any) -> tuple[str, ...]:
    checks = {"ring_dimension": "GetRingDimension", "batch_size": "GetBatchSize",
              "scaling_technique": "GetScalingTechnique", "key_switch_technique": "GetKeySwitchTechnique"}
    found = tuple(name for name, getter in checks.items()
                  if getattr(uploaded, getter)() != getattr(reference, getter)())
    return found or ("multiplicative_depth", "scaling_mod_size", "first_mod_size", "security_level")


class _Sandbox:
    """The worker's state: the sessions whose keys are loaded (LRU) and the circuits bound to them."""

    def __init__(self, max_sessions: int, evaluator: EvaluatorSettings | None = None, device: Any = None) -> None:
        import openfhe

        self.openfhe = openfhe
        self.max_sessions = max_sessions
        self.evaluator = evaluator or EvaluatorSettings()
        self.device = device  # the torch device, with the torch backend
        self.sessions: OrderedDict[str, Any] = OrderedDict()
        self.circuits: dict[tuple[str, str], Any] = {}

    def _clear_keys(self) -> None:
        self.openfhe.ClearEvalMultKeys()
        for context in list(self.sessions.values()):
            context.ClearEvalAutomorphismKeys()
        self.sessions.clear()
        self.circuits.clear()  # drops the torch evaluators, and with them the keys on the device
        if self.device is not None and self.device.type == "cuda":
            import torch

            torch.cuda.empty_cache()

    def check_keys(self, params_json: dict[str, Any], parts: dict[str, PassedFile]) -> dict[str, Any] | Rejected:
        from privmesh.fhe.params import CkksParams, create_context

        o = self.openfhe
        params = CkksParams.from_json(params_json)
        reference = create_context(params)
        self._clear_keys()
        try:
            try:
                uploaded = o.DeserializeCryptoContextString(parts[CRYPTO_CONTEXT].read_bytes(), o.BINARY)
            except Exception:
                return Rejected("KEY_MALFORMED", "the crypto context could not be deserialized", (CRYPTO_CONTEXT,))
            if uploaded != reference:
                fields = _context_differences(uploaded, reference)
                return Rejected("PARAMETERS_MISMATCH", "the uploaded crypto context has other parameters than the "
                                "model's", fields)
            raw_public = parts[PUBLIC_KEY].read_bytes()
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
                    o.DeserializeEvalMultKeyString(parts[RELINEARIZATION_KEY].read_bytes(), o.BINARY)
                except Exception:
                    return Rejected("KEY_MALFORMED", "the relinearization key could not be deserialized",
                                    (RELINEARIZATION_KEY,))
                if set(reference.GetAllEvalMultKeys()) != {tag}:
                    return Rejected("KEY_CONTEXT_MISMATCH", "the relinearization key was made for another key pair",
                                    (RELINEARIZATION_KEY,))
            if ROTATION_KEYS in parts:
                try:
                    o.DeserializeEvalAutomorphismKeyString(parts[ROTATION_KEYS].read_bytes(), o.BINARY)
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

    def _session(self, session_id: str, parts: dict[str, PassedFile]) -> Any:
        o = self.openfhe
        if session_id in self.sessions:
            self.sessions.move_to_end(session_id)
            return self.sessions[session_id]
        if len(self.sessions) >= self.max_sessions:
            self._clear_keys()  # OpenFHE has no per-tag eviction: drop all, live sessions reload on use
        context = o.DeserializeCryptoContextString(parts[CRYPTO_CONTEXT].read_bytes(), o.BINARY)
        for feature in (o.PKE, o.KEYSWITCH, o.LEVELEDSHE):
            context.Enable(feature)
        if RELINEARIZATION_KEY in parts:
            o.DeserializeEvalMultKeyString(parts[RELINEARIZATION_KEY].read_bytes(), o.BINARY)
        if ROTATION_KEYS in parts:
            o.DeserializeEvalAutomorphismKeyString(parts[ROTATION_KEYS].read_bytes(), o.BINARY)
        self.sessions[session_id] = context
        return context

    def evaluate(self, session_id: str, key_tag: str, parts: dict[str, PassedFile], spec: Any,
                 ciphertexts: list[bytes]) -> tuple[list[bytes], float, str] | Rejected:
        from privmesh.fhe.circuit import Circuit

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
            evaluator = self._evaluator(context, parts)
            if isinstance(evaluator, Rejected):
                return evaluator
            self.circuits[key] = Circuit(spec, evaluator)
        circuit = self.circuits[key]
        started = time.perf_counter()
        try:
            if self.evaluator.backend == "torch":
                output = circuit.ev.dump(circuit(circuit.ev.load(ciphertexts[0])))
            else:
                output = o.Serialize(circuit(inputs[0]), o.BINARY)
        except MemoryError:  # torch.cuda.OutOfMemoryError is one
            del self.circuits[key]
            return _memory_exhausted("evaluating the input ran the device out of memory")
        except Exception:
            return Rejected("EVALUATION_FAILED", "the evaluator could not compute the model on this input")
        elapsed = time.perf_counter() - started
        return [output], elapsed, self.evaluator_name

    @property
    def evaluator_name(self) -> str:
        """What InferOutput.evaluator reports: openfhe-cpu, torch-cuda or torch-cpu."""
        return "openfhe-cpu" if self.evaluator.backend == "openfhe" else f"torch-{self.device.type}"

    def _evaluator(self, context: Any, parts: dict[str, PassedFile]) -> Any:
        """The session's evaluator: OpenFHE's, or the torch one with the session's keys moved to the device."""
        from privmesh.fhe.openfhe_evaluator import OpenFheEvaluator

        if self.evaluator.backend == "openfhe":
            return OpenFheEvaluator(context)
        from privmesh.fhe.gpu.evaluator import DeviceMemoryExceeded, TorchEvaluator

        o = self.openfhe
        public = o.DeserializePublicKeyString(parts[PUBLIC_KEY].read_bytes(), o.BINARY)
        keys = {part: parts[part].read_bytes() if part in parts else None
                for part in (RELINEARIZATION_KEY, ROTATION_KEYS)}
        try:
            return TorchEvaluator(context, public, keys[RELINEARIZATION_KEY], keys[ROTATION_KEYS], self.device,
                                  self.evaluator.memory_bytes_per_session)
        except (DeviceMemoryExceeded, MemoryError) as exc:
            return _memory_exhausted(str(exc) if isinstance(exc, DeviceMemoryExceeded) else
                                     "the session's evaluation keys do not fit in the device's memory")

    def forget(self, session_id: str) -> None:
        if session_id in self.sessions:
            self._clear_keys()


def _read(stream: io.BufferedIOBase) -> Any | None:
    """The next message from the server, None once the server closed the socket."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    payload = stream.read(size)
    return pickle.loads(payload) if len(payload) == size else None  # noqa: S301 (the server is trusted)


def _write(stream: io.BufferedIOBase, message: tuple[str, Any]) -> None:
    payload = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(payload)))
    stream.write(payload)
    stream.flush()


def _memory_exhausted(message: str) -> Rejected:
    return Rejected("DEVICE_MEMORY_EXHAUSTED", message)


def _receive_parts(passed: _Passed, fd_channel: socket.socket) -> dict[str, PassedFile]:
    """The descriptors the server sent with the request, in the order of `passed.names`."""
    count = sum(passed.opened)
    _, fds, flags, _ = socket.recv_fds(fd_channel, 1, max(count, 1))
    if flags & socket.MSG_CTRUNC or len(fds) != count:
        for fd in fds:
            os.close(fd)
        raise RuntimeError("the key files did not arrive")
    received = iter(fds)
    return {name: PassedFile(name, next(received) if opened else None)
            for name, opened in zip(passed.names, passed.opened, strict=True)}


def _serve(channel: socket.socket, fd_channel: socket.socket, max_sessions: int, limits: WorkerLimits,
           evaluator: EvaluatorSettings | None = None, log_level: str = "INFO") -> None:
    # A spawned process starts without the server's logging: without this its warnings would reach the
    # service's log as bare text lines among the JSON ones.
    configure_logging("fhe-inference", log_level)
    evaluator = evaluator or EvaluatorSettings()
    device = None
    if evaluator.backend == "torch":
        from privmesh.fhe.gpu.evaluator import pick_device

        device, reason = pick_device(evaluator.device)
        (log.warning if evaluator.device == "cuda" and device.type != "cuda" else log.info)(
            "FHE torch evaluator on %s: %s", device, reason)
    if limits.address_space_bytes and (device is None or device.type != "cuda"):
        resource.setrlimit(resource.RLIMIT_AS, (limits.address_space_bytes, limits.address_space_bytes))
    stream = channel.makefile("rwb")
    sandbox = _Sandbox(max_sessions, evaluator, device)
    # Everything a request runs is imported before the process is confined (imports read files).
    import privmesh.fhe.circuit
    import privmesh.fhe.model
    import privmesh.fhe.openfhe_evaluator
    import privmesh.fhe.params
    from privmesh.fhe.sandbox import confine

    if device is not None:
        import torch

        import privmesh.fhe.gpu.evaluator  # noqa: F401
        # CUDA opens its device files, and the CPU kernels read the CPU's description, now, before confinement.
        torch.ones(2, 2, device=device) @ torch.ones(2, 2, device=device)
    cuda = device is not None and device.type == "cuda"
    layers = confine([channel.fileno(), fd_channel.fileno()], limits.uid, limits.gid, ("ioctl",) if cuda else ())
    log.info("FHE worker confined: %s", ", ".join(f"{k} {'on' if v else 'OFF'}" for k, v in layers.items()))
    _write(stream, (_READY, None))
    while True:
        request = _read(stream)
        if request is None:
            return
        _write(stream, (_STARTED, None))
        operation = request[0]
        args = [_receive_parts(arg, fd_channel) if isinstance(arg, _Passed) else arg for arg in request[1:]]
        try:
            reply: Any = getattr(sandbox, operation)(*args)
        except Exception as exc:  # a bug, not an input problem: report it without the input's bytes
            reply = Rejected("EVALUATION_FAILED", f"worker error ({type(exc).__name__})")
        finally:
            for parts in args:
                if isinstance(parts, dict):
                    for part in parts.values():
                        if isinstance(part, PassedFile) and part.fd is not None:
                            os.close(part.fd)
        _write(stream, (_REPLY, reply))


# --- in the server process ----------------------------------------------------------------------------------

def _open_part(path: str) -> int | None:
    """A key file opened read-only for a worker (None if it is gone: the worker reports it missing). A FIFO
    does not block the server here (O_NONBLOCK, cleared once open)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    os.set_blocking(fd, True)
    return fd


class _ReplyUnpickler(pickle.Unpickler):
    """Plain data and Rejected only: nothing a worker sends can name a function for the server to call."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == (Rejected.__module__, Rejected.__name__):
            return Rejected
        raise pickle.UnpicklingError(f"a worker reply may not hold {module}.{name}")


class _Process:
    """One running sandbox process and the socket to it, read on the event loop."""

    def __init__(self, process: multiprocessing.process.BaseProcess, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, fd_channel: socket.socket) -> None:
        self.process = process
        self._reader = reader
        self._writer = writer
        self._fd_channel = fd_channel

    @classmethod
    async def start(cls, label: str, max_sessions: int, limits: WorkerLimits,
                    evaluator: EvaluatorSettings | None = None) -> _Process:
        """A new process, once it has said it is ready (OpenFHE imported)."""
        parent, child = socket.socketpair()
        for end in (parent, child):  # a whole request or reply fits: neither side waits for the other to read
            end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER_BYTES)
        # At most DEPTH messages wait in it (one per handed request), so sending never blocks.
        fd_parent, fd_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        log_level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
        process = multiprocessing.get_context("spawn").Process(target=_serve, args=(child, fd_child, max_sessions,
                                                                                    limits, evaluator, log_level),
                                                               name=f"fhe-{label}", daemon=True)
        try:
            await asyncio.to_thread(process.start)
        except BaseException:
            parent.close()
            fd_parent.close()
            raise
        finally:
            child.close()
            fd_child.close()
        reader, writer = await asyncio.open_unix_connection(sock=parent, limit=SOCKET_BUFFER_BYTES)  # no pausing
        started = cls(process, reader, writer, fd_parent)
        try:
            ready = (await started.receive())[0] == _READY
        except WorkerCrashed:
            ready = False
        if not ready:
            await started.end(5.0)
            raise RuntimeError("the FHE worker did not start")
        return started

    def send(self, request: tuple[Any, ...]) -> None:
        """Queues a request on the socket without waiting (a dead process shows up in `receive`); the files of
        its KeyPaths go as descriptors on the other socket."""
        fds: list[int] = []
        try:
            args = []
            for arg in request:
                if isinstance(arg, KeyPaths):
                    opened = [_open_part(path) for path in arg.values()]
                    fds += [fd for fd in opened if fd is not None]
                    arg = _Passed(tuple(arg), tuple(fd is not None for fd in opened))
                args.append(arg)
            payload = pickle.dumps(tuple(args), pickle.HIGHEST_PROTOCOL)
            if any(isinstance(arg, _Passed) for arg in args):
                with contextlib.suppress(OSError):  # a dead process: shows up in `receive`
                    socket.send_fds(self._fd_channel, [b"k"], fds)
        finally:
            for fd in fds:
                os.close(fd)
        self._writer.write(_HEADER.pack(len(payload)))
        self._writer.write(payload)

    async def receive(self) -> tuple[str, Any]:
        """The next (kind, value) the process says; WorkerCrashed once it died or sent something malformed."""
        try:
            (size,) = _HEADER.unpack(await self._reader.readexactly(_HEADER.size))
            if size > MAX_REPLY_BYTES:
                raise ValueError("reply too large")
            kind, value = _ReplyUnpickler(io.BytesIO(await self._reader.readexactly(size))).load()
        except Exception:  # EOF, a reset socket, or bytes that are not a reply
            raise WorkerCrashed from None
        if kind not in (_READY, _STARTED, _REPLY):
            raise WorkerCrashed
        return kind, value

    async def end(self, grace: float) -> int | None:
        """Closes the socket and ends the process: it may exit by itself within `grace` seconds, then it is
        killed (it keeps nothing that needs a clean exit). Returns its exit code."""
        self._writer.transport.abort()
        self._fd_channel.close()
        return await asyncio.to_thread(self._reap, grace)

    def _reap(self, grace: float) -> int | None:
        self.process.join(timeout=grace)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)
        return self.process.exitcode


@dataclass(eq=False)
class _Call:
    request: tuple[Any, ...]
    future: asyncio.Future[Any]
    handed: bool = False  # written to the current process
    started: bool = False  # the process said it started it: if the process dies now, this call killed it
    handovers: int = 0  # processes it was written to


class Worker:
    """One sandbox process, replaced when it dies, fed DEPTH requests at once (see the module docstring)."""

    def __init__(self, label: str, max_sessions: int = 32, limits: WorkerLimits = WorkerLimits(),
                 evaluator: EvaluatorSettings | None = None) -> None:
        self.label = label
        self.max_sessions = max_sessions
        self.limits = limits
        self.evaluator = evaluator
        self._calls: deque[_Call] = deque()  # unanswered, oldest first; the handed ones come first
        self._process: _Process | None = None
        self._driver: asyncio.Task[None] | None = None
        self.restarts = 0

    async def start(self) -> None:
        """Starts the process before the first request (it is started on demand otherwise)."""
        if self._process is None:
            self._process = await _Process.start(self.label, self.max_sessions, self.limits, self.evaluator)

    def submit(self, operation: str, *args: Any) -> asyncio.Future[Any]:
        """Queues one request and returns its reply's future at once, so a caller can queue the next request
        before this one is done. Cancelling the future withdraws a request the worker was not handed yet; one
        already handed still runs, and its reply is dropped, so a reply never reaches another caller."""
        call = _Call((operation, *args), asyncio.get_running_loop().create_future())
        call.future.add_done_callback(lambda _: self._withdraw(call))
        self._calls.append(call)
        self._hand_over()
        if self._driver is None or self._driver.done():
            self._driver = asyncio.create_task(self._drive(), name=f"fhe-{self.label}")
        return call.future

    async def call(self, operation: str, *args: Any) -> Any:
        """One request's reply (WorkerCrashed if this request killed the worker)."""
        return await self.submit(operation, *args)

    def _withdraw(self, call: _Call) -> None:
        if call.future.cancelled() and not call.handed:
            with contextlib.suppress(ValueError):  # already dropped after a crash
                self._calls.remove(call)
            self._hand_over()

    def _hand_over(self) -> None:
        """Writes the oldest calls not handed over yet to the process, up to DEPTH in it at once. The handed
        calls stay the first ones in `_calls`, in the order the process answers them."""
        if self._process is None:
            return
        for call in itertools.islice(self._calls, DEPTH):
            if call.handed:
                continue
            if call.future.done():
                return  # withdrawn: its callback removes it, then hands over the ones behind it
            self._process.send(call.request)
            call.handed, call.handovers = True, call.handovers + 1

    async def _drive(self) -> None:
        """While calls are unanswered: starts a process if there is none, reads what it says, replaces it when
        it dies. Any other failure fails every waiting call rather than leaving it waiting."""
        while self._calls:
            try:
                if self._process is None:
                    self._process = await _Process.start(self.label, self.max_sessions, self.limits, self.evaluator)
                    self._hand_over()
                # The process answers each message within the limit: STARTED at once, the reply once it ran.
                kind, value = await asyncio.wait_for(self._process.receive(), self.limits.seconds_per_request)
                self._take(kind, value)
            except asyncio.TimeoutError:
                log.warning("FHE worker %s ran past %s s on one request; it is killed", self.label,
                            self.limits.seconds_per_request)
                await self._replace(WorkerTimedOut)
            except WorkerCrashed:
                await self._replace(WorkerCrashed)
            except Exception as exc:
                log.exception("FHE worker %s failed", self.label)
                await self._abandon(exc)

    def _take(self, kind: str, value: Any) -> None:
        head = self._calls[0] if self._calls else None
        if head is None or not head.handed or kind != (_REPLY if head.started else _STARTED):
            raise WorkerCrashed  # said something out of turn: treated as broken
        if kind == _STARTED:
            head.started = True
            return
        self._calls.popleft()
        if not head.future.done():
            head.future.set_result(value)
        self._hand_over()

    async def _replace(self, failure: type[WorkerCrashed]) -> None:
        """The process died or was killed: the call it had started fails with `failure`, one handed to
        MAX_HANDOVERS processes that all died before starting it with WorkerCrashed; the others go to the next
        process."""
        process, self._process = self._process, None
        assert process is not None
        exit_code = await process.end(0.0 if failure is WorkerTimedOut else 5.0)  # a late one is still running
        log.warning("FHE worker %s died (exit code %s); a new one takes over", self.label, exit_code)
        self.restarts += 1
        remaining = []
        for call in self._calls:
            if call.started or (call.handed and call.handovers >= MAX_HANDOVERS):
                if not call.future.done():
                    call.future.set_exception(failure() if call.started else WorkerCrashed())
            elif not call.future.done():
                call.handed = False
                remaining.append(call)
        self._calls.clear()
        self._calls.extend(remaining)

    async def _abandon(self, error: BaseException) -> None:
        """Fails every waiting call and ends the process, so no stale reply is read later."""
        calls = list(self._calls)
        self._calls.clear()
        for call in calls:
            if not call.future.done():
                call.future.set_exception(error)
        if self._process is not None:
            process, self._process = self._process, None
            await process.end(0.0)

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.process.pid

    async def close(self) -> None:
        if self._driver is not None:
            self._driver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._driver
        calls = list(self._calls)
        self._calls.clear()
        for call in calls:
            call.future.cancel()
        if self._process is not None:
            process, self._process = self._process, None
            await process.end(0.0)
