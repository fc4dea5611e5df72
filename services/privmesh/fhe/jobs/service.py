"""Asynchronous encrypted jobs (no gRPC): submission, reading, cancellation, retention.

A submission is checked before its bytes are read (the session, the input count, the caller's queue, each
input's declared shape and the job's total size), its inputs are written under a staging directory, and the job
exists (and is acknowledged) only once every declared byte arrived: a refused or broken upload stores nothing.
Every submission, cancellation, result read and refusal is audited; JobRunner audits each job's end.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
from google.rpc import error_details_pb2

from privmesh.fhe.inference_service import FheService, check_input
from privmesh.fhe.jobs.model import InputInfo, Job, JobInput, JobLimits, JobOutput, JobRequest, JobState
from privmesh.fhe.jobs.store import JobFiles, JobStore, new_job_id
from privmesh.fhe.model import ModelSpec
from privmesh.fhe.store import Session, now_us
from privmesh.runtime.audit.log import AuditLog
from privmesh.runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    ServiceError,
)

Authorize = Callable[[str], None]


class Submission:
    """A job being received: what was declared so far and the staging directory its inputs are written to."""

    def __init__(self, owner: str, request: JobRequest, session: Session, spec: ModelSpec, limits: JobLimits,
                 files: JobFiles, digest: str) -> None:
        self.owner, self.request, self.session, self.spec = owner, request, session, spec
        self._limits, self._files, self.digest = limits, files, digest
        self.directory: Path = files.new_upload()
        self.inputs: list[InputInfo] = []
        self.written = 0
        self.total_bytes = 0
        self._ids: set[int] = set()

    def declare(self, info: InputInfo, field: str = "input") -> None:
        """Checks the next input's declaration before any of its bytes is read."""
        if len(self.inputs) >= self.request.input_count:
            raise InvalidArgument.single(field, f"more inputs than start.input_count ({self.request.input_count})",
                                         "INPUT_SHAPE_MISMATCH")
        if info.input_id in self._ids:
            raise InvalidArgument.single(f"{field}.input_id", "repeated within the job", "STREAM_OUT_OF_ORDER")
        check_input(self.spec, info.sample_count, info.sizes, field)
        if self.total_bytes + sum(info.sizes) > self._limits.max_bytes_per_job:
            raise InvalidArgument.single(f"{field}.ciphertexts", "the job would exceed the server's "
                                         f"{self._limits.max_bytes_per_job} bytes per job", "CIPHERTEXT_TOO_LARGE")
        self._ids.add(info.input_id)
        self.total_bytes += sum(info.sizes)
        self.inputs.append(info)

    async def write(self, ciphertexts: tuple[bytes, ...]) -> None:
        """Stores the ciphertexts of the last declared input (their sizes must be the declared ones)."""
        if self.written != len(self.inputs) - 1:
            raise InvalidArgument.single("input", "ciphertexts without their declaration", "STREAM_OUT_OF_ORDER")
        info = self.inputs[-1]
        if tuple(len(c) for c in ciphertexts) != info.sizes:
            raise InvalidArgument.single("chunk", "the ciphertexts differ from their declared sizes",
                                         "STREAM_OUT_OF_ORDER")

        def store() -> None:
            for index, data in enumerate(ciphertexts):
                JobFiles.input_path(self.directory, self.written, index).write_bytes(data)

        await asyncio.to_thread(store)
        self.written += 1

    async def add(self, job_input: JobInput) -> None:
        """Declares and stores one whole input (for callers that hold inputs whole, e.g. read from object storage)."""
        self.declare(job_input.info, f"inputs[{len(self.inputs)}]")
        await self.write(job_input.ciphertexts)


class JobService:
    def __init__(self, fhe: FheService, store: JobStore, files: JobFiles, audit: AuditLog, limits: JobLimits) -> None:
        self.fhe = fhe
        self.store = store
        self.files = files
        self.audit = audit
        self.limits = limits
        self.submitted = asyncio.Event()  # wakes the runner

    # --- submission -------------------------------------------------------------------------------------------

    async def submit(self, owner: str, request: JobRequest, receive: Callable[[Submission], Awaitable[None]],
                     authorize: Authorize) -> Job:
        """Checks the request, lets `receive` declare and write every input through the Submission, then stores the
        job (queued). Retrying a completed request_id returns its job without calling `receive`."""
        try:
            begun = await self._begin(owner, request, authorize)
            if isinstance(begun, Job):
                return begun
            try:
                await receive(begun)
                return await self._commit(begun)
            finally:
                await asyncio.to_thread(self.files.discard_upload, begun.directory)
        except ServiceError as error:
            await self.refused("SubmitJob", f"sessions/{request.session_id}", error)
            raise

    async def submit_inputs(self, owner: str, request: JobRequest, inputs: AsyncIterable[JobInput],
                            authorize: Authorize) -> Job:
        """`submit` for inputs that arrive whole."""

        async def receive(submission: Submission) -> None:
            async for job_input in inputs:
                await submission.add(job_input)

        return await self.submit(owner, request, receive, authorize)

    async def _begin(self, owner: str, request: JobRequest, authorize: Authorize) -> Submission | Job:
        if not 1 <= request.input_count <= self.limits.max_inputs_per_job:
            raise InvalidArgument.single("start.input_count", f"must be 1..{self.limits.max_inputs_per_job}",
                                         "INPUT_SHAPE_MISMATCH")
        if len(request.request_id) > 64:
            raise InvalidArgument.single("start.request_id", "at most 64 characters")
        session, spec = await self.fhe.open_inference(request.session_id, owner)
        authorize(f"models/{session.model_id}")
        digest = hashlib.sha256(f"{request.session_id}|{request.input_count}".encode()).hexdigest()
        if request.request_id:
            earlier = await asyncio.to_thread(self.store.by_request_id, owner, request.request_id)
            if earlier is not None:
                if not hmac.compare_digest(earlier.request_digest, digest):
                    raise AlreadyExists("REQUEST_ID_CONFLICT", "the request_id was used for another job")
                return earlier
        await self._check_queue(owner)
        return Submission(owner, request, session, spec, self.limits, self.files, digest)

    async def _check_queue(self, owner: str) -> None:
        if await asyncio.to_thread(self.store.unfinished, owner) >= self.limits.max_queued_per_principal:
            raise self._queue_full(owner)

    def _queue_full(self, owner: str) -> ResourceExhausted:
        bound = self.limits.max_queued_per_principal
        return ResourceExhausted("JOB_QUEUE_FULL", f"at most {bound} unfinished jobs per principal; retry when one "
                                 "has finished", {"limit": str(bound)},
                                 extra_details=[error_details_pb2.QuotaFailure(violations=[
                                     error_details_pb2.QuotaFailure.Violation(
                                         subject=owner, description=f"{bound} queued or running jobs")])])

    async def _commit(self, submission: Submission) -> Job:
        request = submission.request
        if submission.written != request.input_count:
            raise InvalidArgument.single("chunk", f"the stream ended after {submission.written} of "
                                         f"{request.input_count} inputs (truncated)", "STREAM_OUT_OF_ORDER")
        created = now_us()
        job = Job(new_job_id(created), submission.owner, request.session_id, submission.spec.model_id,
                  JobState.QUEUED, tuple(submission.inputs), submission.total_bytes, created,
                  request_id=request.request_id, request_digest=submission.digest)
        await self.audit.append("SubmitJob", resource=job.name, details={
            "session": submission.session.name, "model": submission.spec.name, "inputs": str(job.input_count),
            "input_bytes": str(job.input_bytes)})
        await asyncio.to_thread(self.files.commit, submission.directory, job.job_id)
        try:
            stored = await asyncio.to_thread(self.store.create, job, self.limits.max_queued_per_principal)
        except BaseException:
            await asyncio.to_thread(self.files.discard, job.job_id)
            raise
        if not stored:  # another submission of the owner's took the last place meanwhile
            await asyncio.to_thread(self.files.discard, job.job_id)
            raise self._queue_full(submission.owner)
        self.submitted.set()
        return job

    # --- reading and cancelling ---------------------------------------------------------------------------------

    async def get(self, job_id: str, owner: str) -> Job:
        """The caller's live job (NOT_FOUND for another principal's or an expired one, without saying it exists)."""
        found = await asyncio.to_thread(self.store.get, job_id) if job_id else None
        if found is None or not hmac.compare_digest(found.owner, owner) or \
                (found.expire_us is not None and found.expire_us <= now_us()):
            raise NotFound("JOB_NOT_FOUND", f"no job named jobs/{job_id}")
        return found

    async def page(self, owner: str, after: str, count: int, state: JobState | None) -> list[Job]:
        """The owner's live jobs after job id `after` ("" for the first), in submission order."""
        return await asyncio.to_thread(self.store.page, owner, after, count, state, now_us())

    async def outputs(self, job_id: str, owner: str, authorize: Authorize) -> AsyncIterator[JobOutput]:
        """The outputs of the caller's succeeded job, in input order; the read is audited before the first one."""
        try:
            job = await self.get(job_id, owner)
            authorize(f"models/{job.model_id}")
            if job.state != JobState.SUCCEEDED:
                raise FailedPrecondition("JOB_NOT_SUCCEEDED", f"the job is {job.state.value.lower()}; only a succeeded "
                                         "job has outputs", {"state": f"JOB_STATE_{job.state.value}"})
        except ServiceError as error:
            await self.refused("GetJobResult", f"jobs/{job_id}", error)
            raise
        infos = await asyncio.to_thread(self.store.outputs, job.job_id)
        await self.audit.append("GetJobResult", resource=job.name, details={
            "session": f"sessions/{job.session_id}", "model": f"models/{job.model_id}", "outputs": str(len(infos))})
        for info in infos:
            data = await asyncio.to_thread(self.files.read_output, job.job_id, info.position, len(info.sizes))
            yield JobOutput(info.input_id, info.sample_count, tuple(data), info.micros / 1e6, info.evaluator)

    async def cancel(self, job_id: str, owner: str, authorize: Authorize) -> Job:
        try:
            job = await self.get(job_id, owner)
            authorize(f"models/{job.model_id}")
            now = now_us()
            result = await asyncio.to_thread(self.store.cancel, job.job_id, now, now + self._ttl_us)
            if result is None:
                raise NotFound("JOB_NOT_FOUND", f"no job named jobs/{job_id}")
            cancelled, changed = result
            if not changed and cancelled.state != JobState.CANCELLED:
                raise FailedPrecondition("JOB_FINISHED", f"the job already {cancelled.state.value.lower()}",
                                         {"state": f"JOB_STATE_{cancelled.state.value}"})
        except ServiceError as error:
            await self.refused("CancelJob", f"jobs/{job_id}", error)
            raise
        if changed:
            await self.audit.append("CancelJob", resource=cancelled.name, details={
                "model": f"models/{cancelled.model_id}", "completed_inputs": str(cancelled.completed),
                "inputs": str(cancelled.input_count)})
            await asyncio.to_thread(self.files.discard, cancelled.job_id)
        return cancelled

    @property
    def _ttl_us(self) -> int:
        return int(self.limits.result_ttl.total_seconds() * 1_000_000)

    async def refused(self, operation: str, resource: str, error: ServiceError) -> None:
        """Audits a refusal (policy refusals are the interceptor's)."""
        if error.code == grpc.StatusCode.PERMISSION_DENIED:
            return
        await self.audit.append(operation, resource=resource, outcome="DENIED",
                                details={"reason": error.reason, "code": error.code.name})

    # --- retention -------------------------------------------------------------------------------------------------

    async def sweep(self) -> int:
        """Deletes the jobs whose retention ended, with their files, and job directories no row owns."""
        expired = await asyncio.to_thread(self.store.expired, now_us())
        for job_id in expired:
            await asyncio.to_thread(self.files.discard, job_id)
            await asyncio.to_thread(self.store.delete, job_id)
        orphans = await asyncio.to_thread(self.files.orphans)
        known = await asyncio.to_thread(self.store.known, orphans)
        for job_id in set(orphans) - known:
            await asyncio.to_thread(self.files.discard, job_id)
        return len(expired)
