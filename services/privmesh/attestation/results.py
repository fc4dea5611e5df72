"""Recorded verdicts: every VerifyAttestation outcome, kept in the verifier's database so an auditor can list
recent verdicts (ListVerificationResults) without replaying the audit log. Ids sort newest first, so a page
is one indexed range scan."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass

from privmesh.runtime.db import Database

NITRO_ENCLAVE = "aws-nitro-enclave"
_MAX_US = 10**17  # microseconds: far beyond any clock this runs under


@dataclass(frozen=True)
class VerificationResult:
    id: str
    kind: str
    policy: str
    policy_etag: str
    accepted: bool
    reasons: tuple[str, ...]
    document_sha256: str
    module_id: str
    principal: str
    verify_us: int
    token_minted: bool
    replay_us: int  # 0 unless a replay at a past verification time

    @property
    def name(self) -> str:
        return f"policies/{self.policy}/results/{self.id}"


def new_id(at_us: int) -> str:
    """Newest first in ascending order: the time's complement, then randomness against collisions."""
    return f"{_MAX_US - at_us:017d}-{secrets.token_hex(4)}"


class ResultStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        with db.transaction() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS attestation_results (id TEXT PRIMARY KEY, policy TEXT NOT NULL, "
                        "body TEXT NOT NULL)")
            cur.execute("CREATE INDEX IF NOT EXISTS attestation_results_policy ON attestation_results (policy, id)")

    def add(self, result: VerificationResult) -> None:
        body = {k: v for k, v in asdict(result).items() if k not in ("id", "policy")}
        with self.db.transaction() as cur:
            cur.execute("INSERT INTO attestation_results (id, policy, body) VALUES (?, ?, ?)",
                        (result.id, result.policy, json.dumps(body, sort_keys=True)))

    def list(self, after: str, limit: int, policy: str = "") -> list[VerificationResult]:
        """Up to `limit` results after the id `after` ("" from the newest), of `policy` if given."""
        if policy:
            rows = self.db.read("SELECT id, policy, body FROM attestation_results WHERE policy = ? AND id > ? "
                                "ORDER BY id LIMIT ?", (policy, after, limit))
        else:
            rows = self.db.read("SELECT id, policy, body FROM attestation_results WHERE id > ? ORDER BY id LIMIT ?",
                                (after, limit))
        return [_decode(r[0], r[1], r[2]) for r in rows]


def _decode(result_id: str, policy: str, body: str) -> VerificationResult:
    data = json.loads(body)
    return VerificationResult(id=result_id, policy=policy, kind=data["kind"], policy_etag=data["policy_etag"],
                              accepted=data["accepted"], reasons=tuple(data["reasons"]),
                              document_sha256=data["document_sha256"], module_id=data["module_id"],
                              principal=data["principal"], verify_us=int(data["verify_us"]),
                              token_minted=data["token_minted"], replay_us=int(data["replay_us"]))


def now_us() -> int:
    return time.time_ns() // 1000
