"""The job domain's types: what a job is, what goes in, what comes out, and the limits it runs under.

No gRPC and no storage here, so other entry points (the serverless handlers) build and read jobs with the same
types as the FHEInference servicer.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import timedelta


class JobState(str, enum.Enum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def finished(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


UNFINISHED = (JobState.QUEUED, JobState.RUNNING)


@dataclass(frozen=True)
class InputInfo:
    """What a client declared for one input: its id, sample count and the sizes of its ciphertexts."""

    input_id: int
    sample_count: int
    sizes: tuple[int, ...]


@dataclass(frozen=True)
class JobInput:
    """One input of a job, whole: its declaration and its ciphertexts (OpenFHE BINARY), in order."""

    info: InputInfo
    ciphertexts: tuple[bytes, ...]


@dataclass(frozen=True)
class JobOutput:
    """The output of one input: the encrypted outputs, the seconds the evaluation took, the evaluator's name."""

    input_id: int
    sample_count: int
    ciphertexts: tuple[bytes, ...]
    seconds: float
    evaluator: str


@dataclass(frozen=True)
class JobRequest:
    """A submission's header: the session to evaluate in, how many inputs follow, an optional idempotency key."""

    session_id: str
    input_count: int
    request_id: str = ""


@dataclass(frozen=True)
class Job:
    job_id: str
    owner: str
    session_id: str
    model_id: str
    state: JobState
    inputs: tuple[InputInfo, ...]
    input_bytes: int
    create_us: int
    completed: int = 0
    attempts: int = 0
    failure_reason: str = ""  # an fhe ErrorReason name without its prefix
    failure_message: str = ""
    start_us: int | None = None
    end_us: int | None = None
    expire_us: int | None = None
    request_id: str = ""
    request_digest: str = ""

    @property
    def name(self) -> str:
        return f"jobs/{self.job_id}"

    @property
    def input_count(self) -> int:
        return len(self.inputs)


@dataclass(frozen=True)
class JobLimits:
    """The server's bounds on jobs (fhe-inference's `jobs` settings, as the domain needs them)."""

    max_queued_per_principal: int = 8
    max_inputs_per_job: int = 10_000
    max_bytes_per_job: int = 16 << 30
    result_ttl: timedelta = timedelta(hours=24)
    lease: timedelta = timedelta(seconds=30)
    max_attempts: int = 3
