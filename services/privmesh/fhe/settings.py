"""fhe-inference's own configuration (the `service:` section)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, FilePath


class EvaluatorSettings(BaseModel):
    """Which CKKS evaluator runs the circuits: OpenFHE on the CPU, or the torch evaluator (privmesh.fhe.gpu, the
    `gpu` extra) on a CUDA GPU when one is visible, else on the CPU with the reason logged."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["openfhe", "torch"] = "openfhe"
    device: Literal["auto", "cuda", "cpu"] = Field(
        default="auto", description="torch only: auto takes CUDA when present")
    memory_bytes_per_session: int = Field(
        default=8 << 30, ge=0, description="torch only: device memory a session's evaluation keys may take; a "
                                           "session past it is refused with RESOURCE_EXHAUSTED (0: no bound)")


class JobSettings(BaseModel):
    """Asynchronous jobs (SubmitJob): where their ciphertexts are kept, the bounds, retention and recovery."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    directory: Path | None = Field(
        default=None, description="where jobs' input and output ciphertexts are kept (shared by replicas); "
                                  "default: a `jobs` directory beside key_dir")
    max_queued_per_principal: int = Field(
        default=8, ge=1, le=10_000, description="unfinished (queued or running) jobs a principal may have; one more "
                                                "is refused with RESOURCE_EXHAUSTED")
    max_inputs_per_job: int = Field(default=10_000, ge=1, le=100_000)
    max_bytes_per_job: int = Field(default=16 << 30, ge=1, description="the total ciphertext bytes of one job")
    result_ttl_seconds: float = Field(
        default=86_400.0, gt=0, le=30 * 86_400, description="how long a finished job and its outputs are kept")
    concurrency: int = Field(default=1, ge=1, le=64, description="jobs one replica runs at once")
    lease_seconds: float = Field(
        default=30.0, gt=0, le=3600, description="a running job's lease, renewed while it runs; a job whose runner "
                                                 "died is resumed by any replica once its lease lapsed")
    max_attempts: int = Field(
        default=3, ge=1, le=100, description="runs a job gets; a job interrupted this often by a stopping service is "
                                             "failed (JOB_INTERRUPTED) instead of resumed")
    poll_seconds: float = Field(
        default=1.0, gt=0, le=60, description="how often a replica looks for jobs that others queued")

    def job_dir(self, key_dir: Path) -> Path:
        return self.directory or key_dir.parent / "jobs"


class SandboxSettings(BaseModel):
    """Who the sandbox processes run as when the server runs as root (see docs/security.md): another user and
    group than the server's, with no supplementary groups, so the service's key files are not theirs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    uid: int = Field(default=65534, ge=1, le=2**31 - 1, description="user id of the sandbox processes (not root)")
    gid: int = Field(default=65534, ge=1, le=2**31 - 1, description="group id of the sandbox processes (not root, and "
                                                            "no group that may read the service's secrets)")


class FheSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    database: str = Field(description="sqlite:///path or postgresql://... for sessions and run-time models")
    key_dir: Path = Field(description="where uploaded public and evaluation keys are kept, one directory per session "
                                      "(shared by replicas; no secret key is ever stored)")
    model_files: tuple[FilePath, ...] = Field(
        (), description="model files (JSON) served from start-up; the model id is the file name without .json")
    allow_test_models: bool = Field(
        False, description="serve models without a security level (HEStd_NotSet): tests and laptops only")
    evaluation_workers: int = Field(1, ge=1, le=64, description="sandbox processes that evaluate (one input each "
                                                                "at a time; OpenFHE parallelises inside)")
    worker_seconds_per_request: float = Field(
        300.0, gt=0, le=86_400, description="time a sandbox process may take to check one key upload or evaluate one "
                                            "input; past it the process is killed and the request fails")
    worker_address_space_bytes: int = Field(
        16 << 30, ge=0, description="address-space cap (RLIMIT_AS) of each sandbox process, so crafted bytes cannot "
                                    "make OpenFHE exhaust the node's memory; 0 removes the cap")
    worker_sessions: int = Field(32, ge=1, le=10_000, description="sessions whose keys a worker keeps loaded")
    max_sessions_per_principal: int = Field(16, ge=1, le=10_000)
    evaluator: EvaluatorSettings = EvaluatorSettings()
    jobs: JobSettings = JobSettings()
    sandbox: SandboxSettings = SandboxSettings()
    sweep_seconds: float = Field(60.0, gt=0, le=3600, description="how often expired sessions' keys and expired "
                                                                   "jobs are deleted")
