"""Assembles fhe-inference from its settings: the definition `python -m privmesh.fhe` runs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta

import grpc

from privmesh.fhe.inference_service import FheService
from privmesh.fhe.jobs import JobFiles, JobLimits, JobRunner, JobService, JobStore
from privmesh.fhe.registry import ModelRegistry
from privmesh.fhe.servicer import FheServicer
from privmesh.fhe.settings import FheSettings
from privmesh.fhe.store import KeyFiles, ModelStore, SessionStore
from privmesh.fhe.v1 import fhe_pb2, fhe_pb2_grpc
from privmesh.fhe.worker import Worker, WorkerLimits
from privmesh.runtime.audit.log import AuditLog
from privmesh.runtime.db import Database
from privmesh.runtime.server import Registration, Runtime, ServiceDefinition

SERVICE_NAME = fhe_pb2.DESCRIPTOR.services_by_name["FHEInference"].full_name
log = logging.getLogger("privmesh.fhe")


async def _sweep_forever(sweeps: Sequence[Callable[[], Awaitable[int]]], every: float) -> None:
    while True:
        await asyncio.sleep(every)
        for sweep in sweeps:
            try:
                await sweep()
            except Exception:  # the next sweep retries; sessions and jobs past expiry are refused regardless
                log.exception("sweeping expired sessions or jobs failed")


def worker_limits(settings: FheSettings) -> WorkerLimits:
    """The sandbox processes' limits (the service's, and the serverless functions')."""
    return WorkerLimits(settings.worker_seconds_per_request, settings.worker_address_space_bytes,
                        settings.sandbox.uid, settings.sandbox.gid)


def job_service(settings: FheSettings, db: Database, service: FheService, audit: AuditLog) -> JobService:
    """The jobs domain as the settings bound it (the service's, and the serverless job function's)."""
    jobs = settings.jobs
    limits = JobLimits(jobs.max_queued_per_principal, jobs.max_inputs_per_job, jobs.max_bytes_per_job,
                       timedelta(seconds=jobs.result_ttl_seconds), timedelta(seconds=jobs.lease_seconds),
                       jobs.max_attempts)
    return JobService(service, JobStore(db), JobFiles(jobs.job_dir(settings.key_dir)), audit, limits)


async def build(runtime: Runtime, settings: FheSettings) -> Sequence[Registration]:
    db = Database(settings.database)
    runtime.on_close.append(db.close)
    registry = ModelRegistry(ModelStore(db), settings.allow_test_models)
    await asyncio.to_thread(registry.load_configured, settings.model_files)
    key_files = KeyFiles(settings.key_dir)
    limits = worker_limits(settings)
    checker = Worker("checker", max_sessions=1, limits=limits)
    evaluators = [Worker(f"eval-{i}", settings.worker_sessions, limits, settings.evaluator)
                  for i in range(settings.evaluation_workers)]
    for worker in (checker, *evaluators):
        runtime.on_close.append(worker.close)
    await asyncio.gather(*(worker.start() for worker in (checker, *evaluators)))
    service = FheService(registry, SessionStore(db), key_files, checker, evaluators, runtime.audit,
                         settings.max_sessions_per_principal)
    jobs = job_service(settings, db, service, runtime.audit)
    runner = JobRunner(jobs, settings.jobs.concurrency, settings.jobs.poll_seconds)
    tasks = (asyncio.create_task(_sweep_forever((service.sweep, jobs.sweep), settings.sweep_seconds)),
             asyncio.create_task(runner.run_forever()))

    async def stop_tasks() -> None:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    runtime.on_close.append(stop_tasks)  # closed in reverse order: before the workers and the database
    servicer = FheServicer(service, jobs, runtime.authorizer)

    def register(server: grpc.aio.Server) -> None:
        fhe_pb2_grpc.add_FHEInferenceServicer_to_server(servicer, server)

    return [Registration(SERVICE_NAME, register)]


DEFINITION = ServiceDefinition("fhe-inference", "fhe.privmesh.dev", FheSettings, build)
