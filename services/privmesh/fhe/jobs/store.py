"""Jobs' persistence, beside fhe-inference's sessions: rows in the runtime's Database (SQLite or PostgreSQL), the
ciphertexts as files (one directory per job, written under `.incoming` and renamed into place once complete).

A running job holds a lease that its runner renews; a job whose lease lapsed (its process was killed) is claimed
again and resumes after its last recorded output, so a restart loses no accepted job. Each output is written to
its file before its row commits the progress, so recorded progress always has its bytes.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from privmesh.fhe.jobs.model import UNFINISHED, InputInfo, Job, JobState
from privmesh.runtime.db import Cursor, Database

_COLUMNS = ("job_id, owner, session_id, model_id, state, inputs, input_bytes, create_us, completed, attempts, "
            "failure_reason, failure_message, start_us, end_us, expire_us, request_id, request_digest")
_UNFINISHED = tuple(s.value for s in UNFINISHED)


@dataclass(frozen=True)
class OutputInfo:
    """What the database keeps of one evaluated input (its bytes are a file)."""

    position: int
    input_id: int
    sample_count: int
    sizes: tuple[int, ...]
    micros: int
    evaluator: str


def _optional(value: Any) -> int | None:
    return None if value is None else int(value)


def _job(row: Sequence[Any]) -> Job:
    inputs = tuple(InputInfo(int(i), int(n), tuple(int(s) for s in sizes)) for i, n, sizes in json.loads(row[5]))
    return Job(str(row[0]), str(row[1]), str(row[2]), str(row[3]), JobState(row[4]), inputs, int(row[6]), int(row[7]),
               int(row[8]), int(row[9]), str(row[10]), str(row[11]), _optional(row[12]), _optional(row[13]),
               _optional(row[14]), str(row[15]), str(row[16]))


def new_job_id(now_us: int) -> str:
    """Hex of the submission time, then randomness: ids sort in submission order and cannot be guessed."""
    return f"{now_us:016x}{secrets.token_hex(8)}"


class JobStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        with db.transaction() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS fhe_jobs (job_id TEXT PRIMARY KEY, owner TEXT NOT NULL, "
                        "session_id TEXT NOT NULL, model_id TEXT NOT NULL, state TEXT NOT NULL, inputs TEXT NOT NULL, "
                        "input_bytes BIGINT NOT NULL, create_us BIGINT NOT NULL, completed BIGINT NOT NULL, "
                        "attempts BIGINT NOT NULL, failure_reason TEXT NOT NULL, failure_message TEXT NOT NULL, "
                        "start_us BIGINT, end_us BIGINT, expire_us BIGINT, request_id TEXT NOT NULL, "
                        "request_digest TEXT NOT NULL, runner TEXT NOT NULL, lease_until_us BIGINT NOT NULL)")
            cur.execute("CREATE INDEX IF NOT EXISTS fhe_jobs_owner ON fhe_jobs (owner, state)")
            cur.execute("CREATE INDEX IF NOT EXISTS fhe_jobs_state ON fhe_jobs (state, lease_until_us)")
            cur.execute("CREATE TABLE IF NOT EXISTS fhe_job_outputs (job_id TEXT NOT NULL, position BIGINT NOT NULL, "
                        "input_id BIGINT NOT NULL, sample_count BIGINT NOT NULL, sizes TEXT NOT NULL, "
                        "micros BIGINT NOT NULL, evaluator TEXT NOT NULL, PRIMARY KEY (job_id, position))")

    def _get(self, cur: Cursor, job_id: str, lock: bool = False) -> Job | None:
        select = f"SELECT {_COLUMNS} FROM fhe_jobs WHERE job_id = ?"  # noqa: S608
        cur.execute(self.db.locking(select) if lock else select, (job_id,))
        row = cur.fetchone()
        return None if row is None else _job(row)

    def create(self, job: Job, max_unfinished: int) -> bool:
        """Stores a queued job unless its owner already has `max_unfinished` unfinished jobs (then False)."""
        inputs = json.dumps([[i.input_id, i.sample_count, list(i.sizes)] for i in job.inputs])
        with self.db.transaction() as cur:
            self.db.serialize(cur, f"fhe_jobs/{job.owner}")
            if self._unfinished(cur, job.owner) >= max_unfinished:
                return False
            cur.execute(f"INSERT INTO fhe_jobs ({_COLUMNS}, runner, lease_until_us) "  # noqa: S608
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, 0, '', '', NULL, NULL, NULL, ?, ?, '', 0)",
                        (job.job_id, job.owner, job.session_id, job.model_id, job.state.value, inputs, job.input_bytes,
                         job.create_us, job.request_id, job.request_digest))
            return True

    def _unfinished(self, cur: Cursor, owner: str) -> int:
        cur.execute("SELECT job_id FROM fhe_jobs WHERE owner = ? AND state IN (?, ?)", (owner, *_UNFINISHED))
        return len(cur.fetchall())

    def unfinished(self, owner: str) -> int:
        with self.db.transaction() as cur:
            return self._unfinished(cur, owner)

    def get(self, job_id: str) -> Job | None:
        with self.db.transaction() as cur:
            return self._get(cur, job_id)

    def by_request_id(self, owner: str, request_id: str) -> Job | None:
        rows = self.db.read(f"SELECT {_COLUMNS} FROM fhe_jobs WHERE owner = ? AND request_id = ?",  # noqa: S608
                            (owner, request_id))
        return _job(rows[0]) if rows else None

    def page(self, owner: str, after: str, count: int, state: JobState | None, now_us: int) -> list[Job]:
        """The owner's live jobs after `after` in submission order (expired ones are already gone to callers)."""
        where = "owner = ? AND job_id > ? AND (expire_us IS NULL OR expire_us > ?)"
        params: list[Any] = [owner, after, now_us]
        if state is not None:
            where += " AND state = ?"
            params.append(state.value)
        rows = self.db.read(f"SELECT {_COLUMNS} FROM fhe_jobs WHERE {where} ORDER BY job_id LIMIT ?",  # noqa: S608
                            (*params, count))
        return [_job(r) for r in rows]

    def claim(self, runner: str, now_us: int, lease_us: int, max_attempts: int, ttl_us: int) \
            -> tuple[Job | None, list[Job]]:
        """Takes the oldest queued job, or a running one whose lease lapsed (its runner died), for `runner`; returns
        it and the jobs found interrupted `max_attempts` times, which are failed instead (JOB_INTERRUPTED) and kept
        `ttl_us` like any finished job."""
        interrupted: list[Job] = []
        skip = " FOR UPDATE SKIP LOCKED" if self.db.dialect == "postgres" else ""
        with self.db.transaction() as cur:
            while True:
                cur.execute(f"SELECT {_COLUMNS} FROM fhe_jobs WHERE state = ? OR (state = ? AND lease_until_us < ?) "  # noqa: S608
                            f"ORDER BY job_id LIMIT 1{skip}", (JobState.QUEUED.value, JobState.RUNNING.value, now_us))
                row = cur.fetchone()
                if row is None:
                    return None, interrupted
                job = _job(row)
                if job.attempts >= max_attempts:
                    message = f"the service stopped {job.attempts} times while running the job; it was not resumed"
                    self._end(cur, job.job_id, JobState.FAILED, now_us, now_us + ttl_us, "JOB_INTERRUPTED", message)
                    interrupted.append(self._get(cur, job.job_id) or job)
                    continue
                cur.execute("UPDATE fhe_jobs SET state = ?, runner = ?, lease_until_us = ?, attempts = attempts + 1, "
                            "start_us = COALESCE(start_us, ?) WHERE job_id = ?",
                            (JobState.RUNNING.value, runner, now_us + lease_us, now_us, job.job_id))
                return self._get(cur, job.job_id), interrupted

    def renew(self, job_id: str, runner: str, until_us: int) -> bool:
        """Extends the runner's lease; False once the job is no longer the runner's (cancelled, or taken over)."""
        with self.db.transaction() as cur:
            if not self._owned(cur, job_id, runner):
                return False
            cur.execute("UPDATE fhe_jobs SET lease_until_us = ? WHERE job_id = ?", (until_us, job_id))
            return True

    def _owned(self, cur: Cursor, job_id: str, runner: str) -> bool:
        cur.execute("SELECT job_id FROM fhe_jobs WHERE job_id = ? AND runner = ? AND state = ?",
                    (job_id, runner, JobState.RUNNING.value))
        return cur.fetchone() is not None

    def record_output(self, job_id: str, runner: str, output: OutputInfo, until_us: int) -> bool:
        """Records one evaluated input and renews the lease, if the job is still the runner's."""
        with self.db.transaction() as cur:
            if not self._owned(cur, job_id, runner):
                return False
            cur.execute("DELETE FROM fhe_job_outputs WHERE job_id = ? AND position = ?", (job_id, output.position))
            cur.execute("INSERT INTO fhe_job_outputs (job_id, position, input_id, sample_count, sizes, micros, "
                        "evaluator) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (job_id, output.position, output.input_id, output.sample_count, json.dumps(list(output.sizes)),
                         output.micros, output.evaluator))
            cur.execute("UPDATE fhe_jobs SET completed = ?, lease_until_us = ? WHERE job_id = ?",
                        (output.position + 1, until_us, job_id))
            return True

    def outputs(self, job_id: str) -> list[OutputInfo]:
        rows = self.db.read("SELECT position, input_id, sample_count, sizes, micros, evaluator FROM fhe_job_outputs "
                            "WHERE job_id = ? ORDER BY position", (job_id,))
        return [OutputInfo(int(r[0]), int(r[1]), int(r[2]), tuple(json.loads(r[3])), int(r[4]), str(r[5]))
                for r in rows]

    def _end(self, cur: Cursor, job_id: str, state: JobState, now_us: int, expire_us: int | None, reason: str = "",
             message: str = "") -> None:
        cur.execute("UPDATE fhe_jobs SET state = ?, end_us = ?, expire_us = ?, failure_reason = ?, "
                    "failure_message = ?, runner = '' WHERE job_id = ?",
                    (state.value, now_us, expire_us, reason, message, job_id))
        if state != JobState.SUCCEEDED:
            cur.execute("DELETE FROM fhe_job_outputs WHERE job_id = ?", (job_id,))

    def finish(self, job_id: str, runner: str, state: JobState, now_us: int, expire_us: int, reason: str = "",
               message: str = "") -> Job | None:
        """Ends the runner's job (SUCCEEDED or FAILED); None when it is no longer the runner's (cancelled)."""
        with self.db.transaction() as cur:
            if not self._owned(cur, job_id, runner):
                return None
            self._end(cur, job_id, state, now_us, expire_us, reason, message)
            return self._get(cur, job_id)

    def cancel(self, job_id: str, now_us: int, expire_us: int) -> tuple[Job, bool] | None:
        """Cancels an unfinished job; the job and whether this call cancelled it (None: no such job)."""
        with self.db.transaction() as cur:
            job = self._get(cur, job_id, lock=True)
            if job is None or job.state.finished:
                return None if job is None else (job, False)
            self._end(cur, job_id, JobState.CANCELLED, now_us, expire_us)
            found = self._get(cur, job_id)
            assert found is not None
            return found, True

    def expired(self, now_us: int) -> list[str]:
        return [str(r[0]) for r in self.db.read("SELECT job_id FROM fhe_jobs WHERE expire_us < ?", (now_us,))]

    def delete(self, job_id: str) -> None:
        with self.db.transaction() as cur:
            cur.execute("DELETE FROM fhe_job_outputs WHERE job_id = ?", (job_id,))
            cur.execute("DELETE FROM fhe_jobs WHERE job_id = ?", (job_id,))

    def known(self, job_ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for job_id in job_ids:
            if self.get(job_id) is not None:
                found.add(job_id)
        return found


class JobFiles:
    """Each job's ciphertexts: `<root>/<job>/in-<input>-<k>.bin` and `out-<input>-<k>.bin`; uploads being
    received live in `<root>/.incoming` (emptied at start, so an interrupted upload leaves nothing)."""

    ORPHAN_AGE_SECONDS = 600  # a job directory without a row this old was never acknowledged

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.incoming = self.root / ".incoming"
        self.incoming.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
        for leftover in self.incoming.iterdir():
            shutil.rmtree(leftover, ignore_errors=True)

    def new_upload(self) -> Path:
        path = self.incoming / secrets.token_hex(16)
        path.mkdir(mode=0o700)
        return path

    @staticmethod
    def input_path(directory: Path, position: int, index: int) -> Path:
        return directory / f"in-{position}-{index}.bin"

    def commit(self, upload: Path, job_id: str) -> Path:
        target = self.root / job_id
        upload.rename(target)
        return target

    def read_input(self, job_id: str, position: int, count: int) -> list[bytes]:
        return [self.input_path(self.root / job_id, position, k).read_bytes() for k in range(count)]

    def write_output(self, job_id: str, position: int, ciphertexts: Sequence[bytes]) -> None:
        """Writes each output under a temporary name, then renames it: a file present is complete."""
        for index, data in enumerate(ciphertexts):
            final = self.root / job_id / f"out-{position}-{index}.bin"
            partial = final.with_suffix(".partial")
            with partial.open("wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            partial.replace(final)

    def read_output(self, job_id: str, position: int, count: int) -> list[bytes]:
        return [(self.root / job_id / f"out-{position}-{index}.bin").read_bytes() for index in range(count)]

    def discard(self, job_id: str) -> None:
        shutil.rmtree(self.root / job_id, ignore_errors=True)

    def discard_upload(self, upload: Path) -> None:
        shutil.rmtree(upload, ignore_errors=True)

    def orphans(self) -> list[str]:
        """Job directories old enough that a submission in flight cannot own them (candidates for deletion)."""
        cutoff = time.time() - self.ORPHAN_AGE_SECONDS
        return [p.name for p in self.root.iterdir() if not p.name.startswith(".") and p.stat().st_mtime < cutoff]
