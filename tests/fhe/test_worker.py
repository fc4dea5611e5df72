"""The sandbox worker's queue, on real worker processes with real OpenFHE: the next request is handed over
before the current one's reply; a crash fails only the request the worker had started (the others run on a
fresh worker); a cancelled request never hands its reply to another caller; a request past the time limit is
killed; the process's address space is capped."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import pickle
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from privmesh.fhe.client import ClientKeys
from privmesh.fhe.convert import PART_NAMES
from privmesh.fhe.inference_service import _rejected, _timed_out
from privmesh.fhe.model import ModelSpec, load_model
from privmesh.fhe.registry import RegisteredModel
from privmesh.fhe.servicer import model_to_proto
from privmesh.fhe.worker import (
    CRYPTO_CONTEXT,
    DEPTH,
    MAX_HANDOVERS,
    KeyPaths,
    Rejected,
    Worker,
    WorkerCrashed,
    WorkerLimits,
    WorkerTimedOut,
    _ReplyUnpickler,
)
from privmesh.runtime.errors import ResourceExhausted
from tests.fhe.conftest import crashing, small_model_files

pytestmark = pytest.mark.insecure_params


@dataclass
class LinearSession:
    """The small linear model's keys on disk, as a session's, and `evaluate` requests on them."""

    keys: ClientKeys
    spec: ModelSpec
    parts: KeyPaths

    def encrypt(self, value: float) -> bytes:
        return self.keys.encrypt(np.full((2, 6), value))

    def request(self, ciphertext: bytes) -> tuple[Any, ...]:
        return ("evaluate", "session", self.keys.key_pair.publicKey.GetKeyTag(), self.parts, self.spec, [ciphertext])

    def assert_scores(self, reply: Any, value: float) -> None:
        outputs, _, evaluator = reply
        assert evaluator == "openfhe-cpu"
        expected = self.spec.predict(np.full((2, 6), value))
        assert np.max(np.abs(self.keys.decrypt(outputs[0], 2) - expected)) < self.spec.tolerance


@pytest.fixture
def linear(tmp_path: Path) -> LinearSession:
    spec = load_model("linear", small_model_files()["linear"])
    keys = ClientKeys.generate(model_to_proto(RegisteredModel(spec, 0)))
    parts = KeyPaths()
    for kind, data in keys.key_parts():
        path = tmp_path / PART_NAMES[kind]
        path.write_bytes(data)
        parts[PART_NAMES[kind]] = str(path)
    return LinearSession(keys, spec, parts)


@pytest.fixture
async def worker(tmp_path: Path) -> AsyncIterator[Worker]:
    started = Worker("test")
    await started.start()
    yield started
    await started.close()


@contextlib.contextmanager
def paused(pid: int) -> Any:
    """The worker process stopped: whatever is submitted meanwhile is handed over before anything starts."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def _handed(worker: Worker) -> list[bool]:
    return [call.handed for call in worker._calls]


async def test_a_crash_fails_only_the_started_request_and_the_queued_ones_run_on_a_fresh_worker(
        worker: Worker, linear: LinearSession) -> None:
    pid = worker.pid
    assert pid is not None
    values = (0.1, -0.5, 0.9)
    with paused(pid):
        crasher = worker.submit(*linear.request(crashing(linear.encrypt(0.3))))
        queued = [worker.submit(*linear.request(linear.encrypt(v))) for v in values]
        assert _handed(worker) == [True] * DEPTH + [False] * (len(values) + 1 - DEPTH)  # the next one is in it
    with pytest.raises(WorkerCrashed):
        await crasher
    for value, reply in zip(values, await asyncio.gather(*queued), strict=True):
        linear.assert_scores(reply, value)
    assert worker.restarts == 1 and worker.pid not in (None, pid)


async def test_a_worker_that_dies_before_starting_its_requests_blames_none(worker: Worker,
                                                                          linear: LinearSession) -> None:
    pid = worker.pid
    assert pid is not None
    with paused(pid):
        handed = [worker.submit(*linear.request(linear.encrypt(v))) for v in (0.1, 0.9)]
        assert _handed(worker) == [True, True]
        os.kill(pid, signal.SIGKILL)  # killed from outside (an OOM kill, an operator) with two requests in it
    for value, reply in zip((0.1, 0.9), await asyncio.gather(*handed), strict=True):
        linear.assert_scores(reply, value)
    assert worker.restarts == 1 and worker.pid not in (None, pid)


async def test_a_dead_worker_is_replaced(worker: Worker) -> None:
    pid = worker.pid
    assert pid is not None
    os.kill(pid, signal.SIGSEGV)  # what OpenFHE does to its process on some corrupted inputs
    assert await worker.call("forget", "nothing") is None
    assert worker.pid not in (None, pid) and worker.restarts == 1


async def test_cancelled_requests_are_withdrawn_or_their_replies_dropped(worker: Worker,
                                                                        linear: LinearSession) -> None:
    pid = worker.pid
    assert pid is not None
    first_value, cancelled_value, later_value = 0.1, -0.5, 0.9
    assert abs(float(linear.spec.predict(np.full((1, 6), cancelled_value))[0, 0])
               - float(linear.spec.predict(np.full((1, 6), later_value))[0, 0])) > 100 * linear.spec.tolerance
    with paused(pid):
        first = worker.submit(*linear.request(linear.encrypt(first_value)))
        in_worker = worker.submit(*linear.request(linear.encrypt(cancelled_value)))
        not_handed = worker.submit(*linear.request(linear.encrypt(cancelled_value)))
        in_worker.cancel()
        not_handed.cancel()
        await asyncio.sleep(0)  # the futures' callbacks run
        assert _handed(worker) == [True, True]  # the handed one stays until its reply is read, the other is gone
    linear.assert_scores(await first, first_value)
    linear.assert_scores(await worker.call(*linear.request(linear.encrypt(later_value))), later_value)
    assert worker.restarts == 0 and not worker._calls


async def test_a_request_queued_behind_a_cancelled_one_that_kills_the_worker_gets_a_fresh_worker(
        worker: Worker) -> None:
    pid = worker.pid
    assert pid is not None
    with paused(pid):  # the first request is still in the worker when its caller gives up
        abandoned = asyncio.create_task(worker.call("forget", "first"))
        await asyncio.sleep(0.1)
        abandoned.cancel()
        with pytest.raises(asyncio.CancelledError):
            await abandoned
        queued = asyncio.create_task(worker.call("forget", "second"))
        await asyncio.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
    assert await queued is None  # a fresh worker serves it: it is never blamed for the one ahead of it
    assert worker.pid not in (None, pid) and worker.restarts == 1


class _ExitOnArrival:
    """Unpickled in the worker, it ends the process before the worker can say it started the request."""

    def __reduce__(self) -> tuple[Any, ...]:
        return os._exit, (3,)


async def test_a_request_that_kills_every_worker_before_it_starts_fails_instead_of_looping(worker: Worker) -> None:
    with pytest.raises(WorkerCrashed):
        await worker.call("forget", _ExitOnArrival())
    assert worker.restarts == MAX_HANDOVERS
    assert await worker.call("forget", "next") is None  # and the worker serves on


def test_a_reply_may_not_name_code_for_the_server_to_run() -> None:
    def load(message: Any) -> Any:
        return _ReplyUnpickler(io.BytesIO(pickle.dumps(message))).load()

    refused = Rejected("CIPHERTEXT_MALFORMED", "no", ("chunk",))
    assert load(("reply", refused)) == ("reply", refused)
    assert load(("reply", ([b"out"], 0.5))) == ("reply", ([b"out"], 0.5))
    with pytest.raises(pickle.UnpicklingError):
        load(("reply", os.system))


async def test_a_request_past_the_time_limit_is_killed_and_the_queued_ones_run_on_a_fresh_worker(
        tmp_path: Path, linear: LinearSession) -> None:
    # Long enough for a fresh worker to load the session and evaluate on a loaded two-core CI machine.
    worker = Worker("test", limits=WorkerLimits(seconds_per_request=4.0))
    await worker.start()
    try:
        pid = worker.pid
        stuck = tmp_path / "stuck"
        os.mkfifo(stuck)  # with a writer that never writes, reading it blocks for ever: a hung network file system
        writer = os.open(stuck, os.O_RDWR)
        hung = worker.submit("evaluate", "another-session", linear.keys.key_pair.publicKey.GetKeyTag(),
                             KeyPaths({**linear.parts, CRYPTO_CONTEXT: str(stuck)}), linear.spec,
                             [linear.encrypt(0.2)])
        queued = worker.submit(*linear.request(linear.encrypt(0.4)))
        with pytest.raises(WorkerTimedOut):
            await hung
        linear.assert_scores(await queued, 0.4)
        assert worker.restarts == 1 and worker.pid not in (None, pid)
    finally:
        os.close(writer)
        await worker.close()
    refusal = _rejected(_timed_out("evaluating the input"), "chunk")  # what the caller of Infer gets
    assert isinstance(refusal, ResourceExhausted) and refusal.reason == "TIME_LIMIT_EXCEEDED"


def _address_space_limit(pid: int) -> str:
    """The soft limit, as /proc shows it: a number of bytes, or "unlimited"."""
    line = next(x for x in Path(f"/proc/{pid}/limits").read_text().splitlines() if x.startswith("Max address space"))
    return line.split()[3]


async def test_the_worker_process_address_space_is_capped_and_it_still_evaluates(linear: LinearSession,
                                                                                 tmp_path: Path) -> None:
    cap = 4 << 30
    worker = Worker("test", limits=WorkerLimits(address_space_bytes=cap))
    await worker.start()
    try:
        assert worker.pid is not None and _address_space_limit(worker.pid) == str(cap)
        assert _address_space_limit(os.getpid()) != str(cap)  # the server process itself is not capped
        linear.assert_scores(await worker.call(*linear.request(linear.encrypt(0.3))), 0.3)
    finally:
        await worker.close()
