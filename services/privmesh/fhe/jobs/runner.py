"""Runs queued jobs through synchronous inference's own evaluation path (FheService.start_evaluation and
release: the same sandboxed workers, time limits and per-input audit), pipelined like Infer (the worker holds
the next input while it evaluates the current one), recording each output in order. A job interrupted by a
restart is claimed again once its lease lapses and resumes after its last recorded output.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import deque
from collections.abc import Coroutine
from typing import Any

from privmesh.fhe.inference_service import FheService
from privmesh.fhe.jobs.model import Job, JobLimits, JobState
from privmesh.fhe.jobs.service import JobService
from privmesh.fhe.jobs.store import OutputInfo
from privmesh.fhe.store import Session, now_us
from privmesh.fhe.worker import Rejected
from privmesh.runtime.context import current_principal
from privmesh.runtime.errors import ServiceError

log = logging.getLogger("privmesh.fhe.jobs")


Evaluated = tuple[list[bytes], float, str]  # outputs, seconds, evaluator: what FheService.release returns


class _Lost(Exception):
    """The job stopped being this runner's (cancelled, or its lease lapsed and another runner took it)."""


class JobRunner:
    def __init__(self, jobs: JobService, concurrency: int = 1, poll_seconds: float = 1.0) -> None:
        self.jobs = jobs
        self.fhe: FheService = jobs.fhe
        self.limits: JobLimits = jobs.limits
        self.runner_id = secrets.token_hex(8)
        self.concurrency = concurrency
        self.poll_seconds = poll_seconds

    @property
    def _lease_us(self) -> int:
        return int(self.limits.lease.total_seconds() * 1_000_000)

    @property
    def _ttl_us(self) -> int:
        return int(self.limits.result_ttl.total_seconds() * 1_000_000)

    async def run_forever(self) -> None:
        """Claims and runs jobs, at most `concurrency` at once, until cancelled."""
        running: set[asyncio.Task[None]] = set()
        try:
            while True:
                job = None
                if len(running) < self.concurrency:
                    try:
                        job = await self._claim()
                    except Exception:  # the next poll retries (e.g. the database is briefly unavailable)
                        log.exception("claiming a job failed")
                if job is not None:
                    task = asyncio.create_task(self._run(job))
                    running.add(task)
                    task.add_done_callback(running.discard)
                    continue
                self.jobs.submitted.clear()
                waiter = asyncio.create_task(self.jobs.submitted.wait())
                try:  # a submission, a finished job or the poll interval, whichever comes first
                    await asyncio.wait({waiter, *running}, timeout=self.poll_seconds,
                                       return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
        finally:
            stopping = list(running)
            for task in stopping:
                task.cancel()
            for task in stopping:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _claim(self) -> Job | None:
        now = now_us()
        job, interrupted = await asyncio.to_thread(self.jobs.store.claim, self.runner_id, now, self._lease_us,
                                                   self.limits.max_attempts, self._ttl_us)
        for failed in interrupted:
            await asyncio.to_thread(self.jobs.files.discard, failed.job_id)
            await self._audit_end(failed)
        return job

    async def _run(self, job: Job) -> None:
        current_principal.set(job.owner)  # this task's context: the work is done, and audited, for the job's owner
        pending: deque[tuple[int, Session, asyncio.Future[Evaluated | Rejected]]] = deque()
        try:
            session, spec = await self.fhe.open_inference(job.session_id, job.owner)
            positions = iter(range(job.completed, job.input_count))

            async def queue_next() -> None:
                """Hands the next input to the worker, so it has it at hand when it finishes the current one."""
                position = next(positions, None)
                if position is not None:
                    ciphertexts = await asyncio.to_thread(self.jobs.files.read_input, job.job_id, position,
                                                          len(job.inputs[position].sizes))
                    pending.append((position, *await self.fhe.start_evaluation(session, spec, ciphertexts)))

            await queue_next()
            while pending:
                await queue_next()
                position, current, evaluation = pending.popleft()
                info = job.inputs[position]
                outputs, seconds, evaluator = await self._await(job, self.fhe.release(current, spec, info.sample_count,
                                                                                      evaluation))
                try:
                    await asyncio.to_thread(self.jobs.files.write_output, job.job_id, position, outputs)
                except FileNotFoundError:  # cancelled meanwhile: its directory is gone
                    raise _Lost from None
                recorded = OutputInfo(position, info.input_id, info.sample_count, tuple(len(o) for o in outputs),
                                      int(seconds * 1_000_000), evaluator)
                if not await asyncio.to_thread(self.jobs.store.record_output, job.job_id, self.runner_id, recorded,
                                               now_us() + self._lease_us):
                    raise _Lost
            await self._finish(job, JobState.SUCCEEDED)
        except _Lost:
            log.info("job %s is no longer this runner's; stopped", job.name)
        except ServiceError as error:
            await self._finish(job, JobState.FAILED, error.reason, error.message)
        except asyncio.CancelledError:
            raise  # the service is stopping: the lease lapses and a runner resumes the job
        except Exception:
            log.exception("job %s failed unexpectedly", job.name)
            await self._finish(job, JobState.FAILED, "EVALUATION_FAILED", "the server failed while running the job")
        finally:
            for _, _, evaluation in pending:  # withdrawn, never released
                evaluation.cancel()

    async def _await(self, job: Job, release: Coroutine[Any, Any, Evaluated]) -> Evaluated:
        """Waits for one input's release while renewing the job's lease; raises _Lost when the job was cancelled."""
        task = asyncio.ensure_future(release)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self.limits.lease.total_seconds() / 3)
                if done:
                    return task.result()
                if not await asyncio.to_thread(self.jobs.store.renew, job.job_id, self.runner_id,
                                               now_us() + self._lease_us):
                    raise _Lost
        finally:
            task.cancel()

    async def _finish(self, job: Job, state: JobState, reason: str = "", message: str = "") -> None:
        now = now_us()
        ended = await asyncio.to_thread(self.jobs.store.finish, job.job_id, self.runner_id, state, now,
                                        now + self._ttl_us, reason, message)
        if ended is None:
            return
        if state != JobState.SUCCEEDED:
            await asyncio.to_thread(self.jobs.files.discard, job.job_id)
        await self._audit_end(ended)

    async def _audit_end(self, job: Job) -> None:
        details = {"session": f"sessions/{job.session_id}", "model": f"models/{job.model_id}",
                   "state": job.state.value, "completed_inputs": str(job.completed), "inputs": str(job.input_count),
                   "attempts": str(job.attempts)}
        if job.failure_reason:
            details["reason"] = job.failure_reason
        await self.jobs.audit.append("CompleteJob", resource=job.name, principal=job.owner,
                                     outcome="SUCCESS" if job.state == JobState.SUCCEEDED else "FAILURE",
                                     details=details)
