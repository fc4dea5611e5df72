"""The verifier's domain logic (no gRPC): challenges, judging documents against named policies, result
tokens, policy management. Every verdict and policy change is audited before it takes effect (fail closed)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from privmesh.attestation.document import MAX_DOCUMENT_BYTES, MalformedDocument, Refusal, parse_document
from privmesh.attestation.nitro import NitroVerifier
from privmesh.attestation.policy import NAME_PATTERN, Claims, Policy, claims_of, evaluate, needs_nonce_check
from privmesh.attestation.results import NITRO_ENCLAVE, ResultStore, VerificationResult, new_id
from privmesh.attestation.store import EtagMismatch, NonceState, NonceStore, PolicyStore, StoredPolicy
from privmesh.runtime.audit.log import AuditLog
from privmesh.runtime.context import current_principal
from privmesh.runtime.errors import Aborted, InvalidArgument, NotFound
from privmesh.sdk.attestation.tokens import ResultTokenIssuer, UnsupportedEnclaveKey

DEFAULT_CHALLENGE_TTL = timedelta(seconds=60)
MAX_CHALLENGE_TTL = timedelta(minutes=10)


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    refusals: list[Refusal]
    claims: Claims
    document_sha256: str
    policy: StoredPolicy
    token: str | None = None
    token_expires: datetime | None = None


class AttestationService:
    def __init__(self, verifier: NitroVerifier, policies: PolicyStore, nonces: NonceStore, issuer: ResultTokenIssuer,
                 audit: AuditLog, results: ResultStore,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.verifier = verifier
        self.policies = policies
        self.results = results
        self.nonces = nonces
        self.issuer = issuer
        self.audit = audit
        self.clock = clock

    async def issue_challenge(self, ttl: timedelta | None) -> tuple[bytes, datetime]:
        ttl = DEFAULT_CHALLENGE_TTL if ttl is None else ttl
        if not timedelta(seconds=1) <= ttl <= MAX_CHALLENGE_TTL:
            raise InvalidArgument.single("ttl", f"must be between 1 s and {MAX_CHALLENGE_TTL}")
        nonce, expire_us = await asyncio.to_thread(self.nonces.issue, ttl)
        return nonce, datetime.fromtimestamp(expire_us / 1e6, timezone.utc)

    async def _policy(self, name: str, field: str = "name") -> StoredPolicy:
        if not NAME_PATTERN.fullmatch(name):  # a name no policy can have (empty included): not NOT_FOUND
            raise InvalidArgument.single(field, "must be 1..63 lower-case letters, digits or '-', starting and "
                                                "ending with a letter or digit")
        stored = await asyncio.to_thread(self.policies.get, name)
        if stored is None:
            raise NotFound("POLICY_NOT_FOUND", f"no policy named {name!r}")
        return stored

    async def verify(self, document: bytes, policy_name: str, audience: str,
                     verification_time: datetime | None) -> Verdict:
        if len(document) > MAX_DOCUMENT_BYTES:
            raise InvalidArgument.single("document", f"larger than {MAX_DOCUMENT_BYTES} bytes", "DOCUMENT_TOO_LARGE")
        try:
            doc = parse_document(document)
        except MalformedDocument as exc:
            where = "document" if exc.field == "document" else f"document.{exc.field}"
            raise InvalidArgument.single(where, exc.message, "DOCUMENT_MALFORMED") from None
        stored = await self._policy(policy_name, "policy")
        replay = verification_time is not None
        at = verification_time if verification_time is not None else self.clock()
        refusals = self.verifier.verify(doc, at) + evaluate(stored.policy, doc, at)
        nonce = needs_nonce_check(stored.policy, doc)
        if nonce is not None:
            state = await asyncio.to_thread(self.nonces.consume, nonce, int(at.timestamp() * 1e6), dry_run=replay)
            if state is NonceState.UNKNOWN:
                refusals.append(Refusal("NONCE_UNKNOWN", "the nonce was not issued by this verifier, or expired"))
            elif state is NonceState.REPLAYED:
                refusals.append(Refusal("NONCE_REPLAYED", "the nonce was already used"))
        digest = hashlib.sha256(document).hexdigest()
        token = expires = None
        if not refusals and audience and not replay:
            try:
                token, expires = self.issuer.mint(claims_of(doc), audience, stored.policy.name, digest,
                                                  doc.public_key or b"", at)
            except UnsupportedEnclaveKey:
                refusals.append(Refusal("PUBLIC_KEY_UNSUPPORTED",
                                        "the document's public_key cannot be bound into a result token"))
                token = expires = None
        accepted = not refusals
        await self.audit.append(
            "VerifyAttestation", resource=f"policies/{stored.policy.name}", outcome="SUCCESS" if accepted else "DENIED",
            details={"document_sha256": digest, "policy_etag": stored.etag, "verdict": "ACCEPTED" if accepted
                     else "REJECTED", "reasons": ",".join(sorted({r.reason for r in refusals})),
                     "module_id": doc.module_id, "replay_at": at.isoformat() if replay else "",
                     "token_minted": str(token is not None).lower()})
        now_us = int(self.clock().timestamp() * 1e6)
        await asyncio.to_thread(self.results.add, VerificationResult(
            new_id(now_us), NITRO_ENCLAVE, stored.policy.name, stored.etag, accepted,
            tuple(sorted({r.reason for r in refusals})), digest, doc.module_id, current_principal.get(), now_us,
            token is not None, int(at.timestamp() * 1e6) if replay else 0))
        return Verdict(accepted, refusals, claims_of(doc), digest, stored, token, expires)

    async def put_policy(self, policy: Policy, etag: str) -> StoredPolicy:
        await self.audit.append("PutPolicy", resource=f"policies/{policy.name}",
                                details={"pcr_sets": str(len(policy.allowed_pcr_sets)),
                                         "allow_debug": str(policy.allow_debug).lower()})
        try:
            return await asyncio.to_thread(self.policies.put, policy, etag)
        except EtagMismatch:
            raise Aborted("POLICY_ETAG_MISMATCH", "the policy changed since the given etag") from None

    async def get_policy(self, name: str) -> StoredPolicy:
        return await self._policy(name)

    async def list_policies(self, after: str, limit: int) -> list[StoredPolicy]:
        return await asyncio.to_thread(self.policies.list, after, limit)

    async def open_results(self, policy: str) -> None:
        """Validates a listing's filter and audits the read before any result is returned (fail closed)."""
        if policy and not NAME_PATTERN.fullmatch(policy):
            raise InvalidArgument.single("policy", "not a policy name")
        await self.audit.append("ListVerificationResults", resource=f"policies/{policy or '-'}/results")

    async def list_results(self, after: str, limit: int, policy: str) -> list[VerificationResult]:
        return await asyncio.to_thread(self.results.list, after, limit, policy)

    async def delete_policy(self, name: str, etag: str) -> None:
        await self._policy(name)
        await self.audit.append("DeletePolicy", resource=f"policies/{name}")
        try:
            if not await asyncio.to_thread(self.policies.delete, name, etag):
                raise NotFound("POLICY_NOT_FOUND", f"no policy named {name!r}")
        except EtagMismatch:
            raise Aborted("POLICY_ETAG_MISMATCH", "the policy changed since the given etag") from None
