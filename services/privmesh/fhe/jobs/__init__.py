"""Asynchronous encrypted jobs of fhe-inference: a batch of encrypted inputs submitted once, evaluated in the
background through synchronous inference's own path, persisted across restarts, results kept for a TTL.

The typed API other entry points use (the gRPC servicer, serverless handlers):

    job = await jobs.submit_inputs(owner, JobRequest(session_id, len(inputs)), aiter_of(inputs), authorize)
    job = await jobs.get(job.job_id, owner)                 # state, completed / input_count
    async for output in jobs.outputs(job.job_id, owner, authorize): ...   # once SUCCEEDED
"""

from privmesh.fhe.jobs.model import InputInfo, Job, JobInput, JobLimits, JobOutput, JobRequest, JobState
from privmesh.fhe.jobs.runner import JobRunner
from privmesh.fhe.jobs.service import JobService, Submission
from privmesh.fhe.jobs.store import JobFiles, JobStore

__all__ = ["InputInfo", "Job", "JobFiles", "JobInput", "JobLimits", "JobOutput", "JobRequest", "JobRunner",
           "JobService", "JobState", "JobStore", "Submission"]
