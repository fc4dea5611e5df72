"""Asynchronous jobs over real mTLS with real OpenFHE: submit, progress, streamed results that decrypt to the
plaintext model's outputs, cancellation, the per-principal queue bound, result retention, bad input refused with
nothing stored, every step audited, and the same on PostgreSQL."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from privmesh.fhe import server as fhe_server
from privmesh.fhe.client import (
    ClientKeys,
    JobFailed,
    infer_job,
    job_result,
    register_keys,
    submit_job,
    wait_for_job,
)
from privmesh.fhe.jobs import InputInfo, Job, JobState, JobStore
from privmesh.fhe.model import load_model
from privmesh.fhe.v1 import fhe_pb2 as pb
from privmesh.fhe.v1 import fhe_pb2_grpc
from privmesh.runtime.client import secure_channel
from privmesh.runtime.db import Database
from privmesh.runtime.errors import read_error
from privmesh.runtime.pki import DevPki
from tests.conftest import identity, server_config, spiffe
from tests.fhe.conftest import RULES, crashing, fhe_settings, keys_for, small_model_files

pytestmark = pytest.mark.insecure_params
RETRY_ID = "6c1d0f3e-0000-4000-8000-000000000001"


async def _server(start_server: Any, tmp: Path, pki: DevPki, database: str | None = None, **jobs: Any) \
        -> AsyncIterator[tuple[fhe_pb2_grpc.FHEInferenceStub, fhe_pb2_grpc.FHEInferenceStub]]:
    settings = fhe_settings(tmp, database, jobs=jobs, sweep_seconds=0.2)
    server = await start_server(fhe_server.DEFINITION, server_config(tmp, pki, RULES, settings))
    target = f"127.0.0.1:{server.port}"
    async with secure_channel(target, identity(pki, "alice"), peer=spiffe("server")) as alice, \
            secure_channel(target, identity(pki, "bob"), peer=spiffe("server")) as bob:
        yield fhe_pb2_grpc.FHEInferenceStub(alice), fhe_pb2_grpc.FHEInferenceStub(bob)


def _jobs_rows(tmp: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(tmp / "fhe.db") as conn:
        return conn.execute("SELECT job_id, state, completed FROM fhe_jobs ORDER BY job_id").fetchall()


def _job_dirs(tmp: Path) -> list[str]:
    return sorted(p.name for p in (tmp / "jobs").iterdir() if not p.name.startswith("."))


def _audit(tmp: Path) -> list[tuple[str, str, str, str]]:
    with sqlite3.connect(tmp / "audit.db") as conn:
        return conn.execute("SELECT operation, resource, outcome, details FROM audit_entries "
                            "ORDER BY sequence").fetchall()


def _expected(name: str, keys: ClientKeys, raw: np.ndarray) -> np.ndarray:
    spec = load_model(name, small_model_files()[name])
    return np.asarray(spec.predict(keys.preprocess(raw)))


async def _session(stub: fhe_pb2_grpc.FHEInferenceStub, name: str) -> tuple[ClientKeys, pb.Session]:
    keys = await keys_for(stub, name)
    return keys, await register_keys(stub, keys)


async def test_a_job_evaluates_in_the_background_and_its_result_decrypts(start_server, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                          pki: DevPki) -> None:
    async for alice, bob in _server(start_server, tmp_path, pki):
        keys, session = await _session(bob, "logistic-3")
        raw = np.random.default_rng(3).uniform(-1, 1, (300, 6))  # 3 inputs of at most 128 samples
        scores = await infer_job(bob, session.name, keys, raw, progress=False, poll_seconds=0.1)
        assert np.allclose(scores, _expected("logistic-3", keys, raw), atol=1e-2)
        [job] = (await bob.ListJobs(pb.ListJobsRequest())).jobs
        assert job.state == pb.JOB_STATE_SUCCEEDED and job.input_count == job.completed_input_count == 3
        assert job.owner == spiffe("bob") and job.model == "models/logistic-3" and job.HasField("expire_time")
        second = await job_result(bob, job.name)  # readable again until it expires
        assert len(second) == 3
        operations = [(op, outcome) for op, resource, outcome, _ in _audit(tmp_path) if job.name in resource
                      or op == "Infer"]
        assert operations == [("SubmitJob", "SUCCESS"), ("Infer", "SUCCESS"), ("Infer", "SUCCESS"),
                              ("Infer", "SUCCESS"), ("CompleteJob", "SUCCESS"), ("GetJobResult", "SUCCESS"),
                              ("GetJobResult", "SUCCESS")]

        retried = await submit_job(bob, session.name, [(keys.encrypt(keys.preprocess(raw[:2])), 2)],
                                   request_id=RETRY_ID)
        again = await submit_job(bob, session.name, [(b"not read", 1)], request_id=RETRY_ID)  # same header: same job
        assert again.name == retried.name and len(_jobs_rows(tmp_path)) == 2
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await alice.GetJob(pb.GetJobRequest(name=job.name))  # alice: another principal's job does not exist
        assert read_error(caught.value).reason == "JOB_NOT_FOUND"


async def _progressed(stub: fhe_pb2_grpc.FHEInferenceStub, name: str, timeout: float = 60.0) -> pb.Job:
    """The job once at least one input was evaluated."""
    for _ in range(int(timeout / 0.05)):
        job = (await stub.GetJob(pb.GetJobRequest(name=name))).job
        if job.completed_input_count >= 1:
            return job
        await asyncio.sleep(0.05)
    raise TimeoutError(name)


async def _submit_raw(stub: fhe_pb2_grpc.FHEInferenceStub, messages: list[pb.SubmitJobRequest]) -> pb.Job:
    async def stream() -> AsyncIterator[pb.SubmitJobRequest]:
        for message in messages:
            yield message

    return (await stub.SubmitJob(stream())).job


async def test_cancel_the_queue_bound_and_a_failing_input(start_server, tmp_path: Path, pki: DevPki) -> None:  # type: ignore[no-untyped-def]
    async for _, bob in _server(start_server, tmp_path, pki, max_queued_per_principal=1, poll_seconds=0.1):
        keys, session = await _session(bob, "mlp")
        ciphertext = keys.encrypt(keys.preprocess(np.full((4, 6), 0.3)))
        job = await submit_job(bob, session.name, [(ciphertext, 4)] * 40)
        running = await _progressed(bob, job.name)
        assert running.state == pb.JOB_STATE_RUNNING and running.attempt_count == 1
        rows, dirs = _jobs_rows(tmp_path), _job_dirs(tmp_path)
        with pytest.raises(grpc.aio.AioRpcError) as caught:  # the queue holds one unfinished job per principal
            await submit_job(bob, session.name, [(ciphertext, 4)])
        error = read_error(caught.value)
        assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED and error.reason == "JOB_QUEUE_FULL"
        assert error.quota_violations == (spiffe("bob"),)
        assert _jobs_rows(tmp_path) == rows and _job_dirs(tmp_path) == dirs  # nothing stored
        cancelled = (await bob.CancelJob(pb.CancelJobRequest(name=job.name))).job
        assert cancelled.state == pb.JOB_STATE_CANCELLED and cancelled.completed_input_count < 40
        assert (await bob.CancelJob(pb.CancelJobRequest(name=job.name))).job.state == pb.JOB_STATE_CANCELLED
        assert _job_dirs(tmp_path) == []  # its ciphertexts are deleted at once
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await job_result(bob, job.name)
        error = read_error(caught.value)
        assert error.code == grpc.StatusCode.FAILED_PRECONDITION and error.reason == "JOB_NOT_SUCCEEDED"
        assert error.metadata == {"state": "JOB_STATE_CANCELLED"}

        broken = await submit_job(bob, session.name, [(ciphertext, 4), (crashing(ciphertext), 4)])  # a place again
        with pytest.raises(JobFailed) as failed:
            await wait_for_job(bob, broken.name, poll_seconds=0.1, progress=False)
        assert failed.value.job.failure_reason == pb.ERROR_REASON_CIPHERTEXT_MALFORMED
        assert failed.value.job.completed_input_count == 1 and broken.name.removeprefix("jobs/") not in \
            _job_dirs(tmp_path)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await bob.CancelJob(pb.CancelJobRequest(name=broken.name))
        assert read_error(caught.value).reason == "JOB_FINISHED"
    audited = [(op, outcome, resource) for op, resource, outcome, _ in _audit(tmp_path) if "Job" in op]
    assert audited == [("SubmitJob", "SUCCESS", job.name), ("SubmitJob", "DENIED", session.name),
                       ("CancelJob", "SUCCESS", job.name), ("GetJobResult", "DENIED", job.name),
                       ("SubmitJob", "SUCCESS", broken.name), ("CompleteJob", "FAILURE", broken.name),
                       ("CancelJob", "DENIED", broken.name)]


async def test_finished_jobs_are_deleted_after_their_ttl(start_server, tmp_path: Path, pki: DevPki) -> None:  # type: ignore[no-untyped-def]
    async for _, bob in _server(start_server, tmp_path, pki, result_ttl_seconds=1.0, poll_seconds=0.1):
        keys, session = await _session(bob, "linear")
        job = await submit_job(bob, session.name, [(keys.encrypt(keys.preprocess(np.ones((2, 6)))), 2)])
        done = await wait_for_job(bob, job.name, poll_seconds=0.1, progress=False)
        assert done.expire_time.ToMicroseconds() - done.end_time.ToMicroseconds() == 1_000_000
        assert len(await job_result(bob, job.name)) == 1 and _job_dirs(tmp_path)
        await asyncio.sleep(1.6)  # past the TTL and a sweep
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await bob.GetJob(pb.GetJobRequest(name=job.name))
        assert read_error(caught.value).code == grpc.StatusCode.NOT_FOUND
        assert _jobs_rows(tmp_path) == [] and _job_dirs(tmp_path) == []
        assert (await bob.ListJobs(pb.ListJobsRequest())).jobs == []


def _start(session: str, count: int = 1) -> pb.SubmitJobRequest:
    return pb.SubmitJobRequest(start=pb.JobStart(session=session, input_count=count))


def _input(size: int, input_id: int = 0, samples: int = 1) -> pb.SubmitJobRequest:
    return pb.SubmitJobRequest(input=pb.InferInput(input_id=input_id, sample_count=samples,
                                                   ciphertexts=[pb.CiphertextInfo(size_bytes=size)]))


def _chunk(data: bytes, input_id: int = 0) -> pb.SubmitJobRequest:
    return pb.SubmitJobRequest(chunk=pb.CiphertextChunk(input_id=input_id, data=data))


async def test_bad_submissions_are_refused_with_the_field_named_and_nothing_stored(  # type: ignore[no-untyped-def]
        start_server, tmp_path: Path, pki: DevPki) -> None:
    async for _, bob in _server(start_server, tmp_path, pki, max_inputs_per_job=3):
        keys, session = await _session(bob, "linear")
        good = keys.encrypt(keys.preprocess(np.ones((1, 6))))
        limit = (await bob.GetModel(pb.GetModelRequest(name="models/linear"))).model.limits.max_ciphertext_bytes
        cases = {
            "start.input_count": [_start(session.name, 0)],
            "start.session": [_start("sessions/")],
            "input.ciphertexts[0].size_bytes": [_start(session.name), _input(limit + 1)],
            "input": [_start(session.name), _input(len(good), samples=0)],
            "chunk": [_start(session.name, 2), _input(len(good)), _chunk(good)],  # one input of two: truncated
            "chunk.data": [_start(session.name), _input(4), _chunk(b"12345")],
            "payload": [_start(session.name), _start(session.name)],
        }
        cases["start.input_count"].append(_start(session.name, 4))
        for field, messages in cases.items():
            for start in ([messages[0]] if field != "start.input_count" else messages):
                sent = [start] if field == "start.input_count" else messages
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await _submit_raw(bob, sent)
                error = read_error(caught.value)
                assert error.code == grpc.StatusCode.INVALID_ARGUMENT, (field, error)
                assert [v.field for v in error.violations] == [field], (field, error)
        assert _jobs_rows(tmp_path) == [] and _job_dirs(tmp_path) == []
        assert list((tmp_path / "jobs" / ".incoming").iterdir()) == []
    refusals = [(op, outcome) for op, _, outcome, _ in _audit(tmp_path) if op == "SubmitJob"]
    assert refusals == [("SubmitJob", "DENIED")] * 8


async def test_jobs_on_postgresql(start_server, tmp_path: Path, pki: DevPki, postgres_db: str) -> None:  # type: ignore[no-untyped-def]
    async for _, bob in _server(start_server, tmp_path, pki, postgres_db, poll_seconds=0.1):
        keys, session = await _session(bob, "linear")
        raw = np.random.default_rng(5).uniform(-1, 1, (2, 6))
        first = await submit_job(bob, session.name, [(keys.encrypt(keys.preprocess(raw)), 2)])
        scores = await infer_job(bob, session.name, keys, raw, progress=False, poll_seconds=0.1)
        assert np.allclose(scores, _expected("linear", keys, raw), atol=1e-3)
        page = await bob.ListJobs(pb.ListJobsRequest(page_size=1))
        assert [j.name for j in page.jobs] == [first.name] and page.next_page_token
        rest = await bob.ListJobs(pb.ListJobsRequest(page_size=1, page_token=page.next_page_token))
        assert len(rest.jobs) == 1 and rest.jobs[0].name > first.name and not rest.next_page_token
        succeeded = await bob.ListJobs(pb.ListJobsRequest(state=pb.JOB_STATE_SUCCEEDED))
        assert len(succeeded.jobs) == 2


def test_a_job_interrupted_too_often_fails_instead_of_resuming(tmp_path: Path) -> None:
    """The store's recovery rule: a running job whose lease lapsed is claimed again (resumed) until it was started
    max_attempts times; then it is failed with JOB_INTERRUPTED, never silently dropped."""
    store = JobStore(Database(f"sqlite:///{tmp_path / 'jobs.db'}"))
    job = Job("0" * 16 + "a" * 16, spiffe("bob"), "s" * 32, "linear", JobState.QUEUED, (InputInfo(0, 1, (10,)),), 10,
              1)
    assert store.create(job, max_unfinished=1) and not store.create(job, max_unfinished=1)
    now = 1_000_000
    for attempt in (1, 2, 3):
        claimed, interrupted = store.claim(f"runner-{attempt}", now, lease_us=10, max_attempts=3, ttl_us=5)
        assert claimed is not None and claimed.attempts == attempt and interrupted == []
        assert store.claim("other", now, lease_us=10, max_attempts=3, ttl_us=5) == (None, [])  # leased: not taken
        now += 11  # the runner was killed: its lease lapses
    claimed, [failed] = store.claim("runner-4", now, lease_us=10, max_attempts=3, ttl_us=5)
    assert claimed is None and failed.state == JobState.FAILED and failed.failure_reason == "JOB_INTERRUPTED"
    assert store.unfinished(spiffe("bob")) == 0 and failed.expire_us == now + 5  # kept, then swept like any other
    assert store.expired(now + 6) == [job.job_id]


def test_two_replicas_racing_on_postgresql_never_exceed_the_queue_bound(postgres_db: str) -> None:
    """Two service replicas (two connections) submit for one principal at the same moment, 20 times over: the
    bound of one unfinished job admits exactly one each time (a row lock alone let both in)."""
    stores = [JobStore(Database(postgres_db)) for _ in range(2)]
    for owner_index in range(20):
        owner = spiffe(f"racer-{owner_index}")
        barrier = threading.Barrier(2)

        def submit(store: JobStore, job_id: str, owner: str = owner, barrier: threading.Barrier = barrier) -> bool:
            job = Job(job_id, owner, "s" * 32, "linear", JobState.QUEUED, (InputInfo(0, 1, (10,)),), 10, 1)
            barrier.wait()
            return store.create(job, max_unfinished=1)

        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(submit, stores, [f"{owner_index:016x}{side:016x}" for side in range(2)]))
        assert sorted(results) == [False, True]
        assert stores[0].unfinished(owner) == 1
