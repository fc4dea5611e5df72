"""Attested release: judges a recipient's evidence and encrypts data keys to the enclave's bound key.

An attestation document goes to the attestation-verifier (VerifyAttestation over mTLS, under the key
policy's verifier_policy; it consumes the document's nonce). A result token is verified offline against
the verifier's JWKS (`privmesh.sdk.attestation.tokens.verify_result_token`). Either way the broker then
checks the key policy's own PCR sets and debug rule on the verified claims, and releases the data key only
as RSAES-OAEP-SHA-256 ciphertext for the public key bound in the evidence.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import grpc
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from joserfc.jwk import RSAKey

from privmesh.attestation.v1 import attestation_pb2 as apb
from privmesh.attestation.v1 import attestation_pb2_grpc
from privmesh.keybroker.policy import pcrs_allowed
from privmesh.keybroker.v1 import keybroker_pb2 as pb
from privmesh.runtime.errors import PermissionDenied, Unavailable
from privmesh.sdk.attestation.tokens import InvalidResultToken, verify_result_token

MAX_DOCUMENT = 32 * 1024
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 4096
JWKS_MIN_REFRESH_SECONDS = 10.0


@dataclass(frozen=True)
class Evidence:
    document: bytes | None
    token: str | None
    public_key: bytes  # what the caller says the bound key is; empty: not stated


@dataclass(frozen=True)
class Released:
    """A recipient that passed; what the response and the audit entry say about it."""

    public_key_der: bytes
    module_id: str
    document_sha256: str
    verifier_policy: str

    @property
    def public_key_sha256(self) -> str:
        return hashlib.sha256(self.public_key_der).hexdigest()


def _oaep() -> padding.OAEP:
    return padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def encrypt_for_recipient(public_key_der: bytes, data_key: bytes) -> bytes:
    """RSAES-OAEP-SHA-256 of the data key to the recipient (KMS's CiphertextForRecipient key transport)."""
    key = serialization.load_der_public_key(public_key_der)
    assert isinstance(key, rsa.RSAPublicKey)
    return key.encrypt(data_key, _oaep())


def _rejected(refusals: Sequence[str], message: str) -> PermissionDenied:
    return PermissionDenied("ATTESTATION_REJECTED", message, {"refusals": ",".join(refusals)})


def _bound_key(der: bytes, stated: bytes) -> bytes:
    """The bound key if it is RSA 2048..4096 bits and equals the stated one (when stated)."""
    try:
        key = serialization.load_der_public_key(der)
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, rsa.RSAPublicKey) or not MIN_RSA_BITS <= key.key_size <= MAX_RSA_BITS:
        raise PermissionDenied("RECIPIENT_KEY_MISMATCH", "the key bound in the evidence is not an RSA key of "
                               f"{MIN_RSA_BITS}..{MAX_RSA_BITS} bits")
    if stated and not hmac.compare_digest(stated, der):
        raise PermissionDenied("RECIPIENT_KEY_MISMATCH", "recipient.public_key differs from the key bound in the "
                               "attestation evidence")
    return der


def _check_claims(condition: pb.AttestationCondition, pcrs: Mapping[int, bytes], debug: bool) -> None:
    refusals = []
    if debug and not condition.allow_debug:
        refusals.append("DEBUG_ENCLAVE")
    if not pcrs_allowed(condition.allowed_pcr_sets, pcrs):
        refusals.append("PCR_MISMATCH")
    if refusals:
        raise _rejected(refusals, "the attested enclave fails the key policy's attestation condition")


def _is_debug(pcrs: Mapping[int, bytes]) -> bool:
    return all(pcrs.get(i, b"\x01").count(0) == len(pcrs.get(i, b"\x01")) for i in range(3))


class RecipientJudge:
    def __init__(self, verifier: attestation_pb2_grpc.AttestationVerifierStub | None, jwks_file: Path | None,
                 audience: str, issuer: str, timeout: float,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self._verifier = verifier
        self._jwks_file = jwks_file
        self._audience = audience
        self._issuer = issuer
        self._timeout = timeout
        self._clock = clock
        self._jwks: dict[str, Any] | None = None
        self._jwks_at = 0.0

    async def judge(self, evidence: Evidence, conditions: Sequence[pb.AttestationCondition]) -> Released:
        """The recipient if its evidence satisfies one of the conditions; else PERMISSION_DENIED with reasons."""
        if evidence.document is not None:
            return await self._judge_document(evidence, conditions)
        return await self._judge_token(evidence, conditions)

    async def _judge_document(self, evidence: Evidence, conditions: Sequence[pb.AttestationCondition]) -> Released:
        if self._verifier is None:
            raise Unavailable("ATTESTATION_VERIFIER_UNAVAILABLE", "no attestation-verifier is configured")
        # One verification per document: it consumes the nonce. The first condition's verifier policy judges.
        policy = conditions[0].verifier_policy
        try:
            reply = await self._verifier.VerifyAttestation(
                apb.VerifyAttestationRequest(document=evidence.document, policy=policy), timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND):
                raise _rejected(["DOCUMENT_INVALID"], "the attestation-verifier refused the document "
                                f"({exc.code().name})") from None
            raise Unavailable("ATTESTATION_VERIFIER_UNAVAILABLE", "the attestation-verifier could not be reached; "
                              "nothing was released") from None
        if reply.verdict != apb.VERDICT_ACCEPTED:
            refusals = sorted(apb.RefusalReason.Name(r.reason).removeprefix("REFUSAL_REASON_") for r in reply.refusals)
            raise _rejected(refusals, "the attestation-verifier rejected the recipient's document")
        claims = reply.claims
        der = _bound_key(claims.public_key, evidence.public_key)
        matching = [c for c in conditions if c.verifier_policy == policy]
        self._first_passing(matching, dict(claims.pcrs), claims.debug_mode)
        return Released(der, claims.module_id, reply.document_sha256, policy)

    @staticmethod
    def _first_passing(conditions: Sequence[pb.AttestationCondition], pcrs: Mapping[int, bytes], debug: bool) -> None:
        failure: PermissionDenied | None = None
        for condition in conditions:
            try:
                _check_claims(condition, pcrs, debug)
                return
            except PermissionDenied as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def _keys(self, refresh: bool) -> dict[str, Any]:
        if self._jwks_file is not None:
            return dict(json.loads(self._jwks_file.read_text()))
        if self._jwks is not None and (not refresh or time.monotonic() - self._jwks_at < JWKS_MIN_REFRESH_SECONDS):
            return self._jwks
        if self._verifier is None:
            raise Unavailable("ATTESTATION_VERIFIER_UNAVAILABLE", "no verifier keys are configured")
        try:
            reply = await self._verifier.GetVerificationKeys(apb.GetVerificationKeysRequest(), timeout=self._timeout)
        except grpc.aio.AioRpcError:
            raise Unavailable("ATTESTATION_VERIFIER_UNAVAILABLE", "the attestation-verifier's keys could not be "
                              "fetched; nothing was released") from None
        self._jwks, self._jwks_at = json.loads(reply.jwks_json), time.monotonic()
        return self._jwks

    async def _judge_token(self, evidence: Evidence, conditions: Sequence[pb.AttestationCondition]) -> Released:
        assert evidence.token is not None
        claims: dict[str, Any] | None = None
        for refresh in (False, True):  # a key rotation at the verifier: fetch its keys once more
            try:
                claims = await asyncio.to_thread(verify_result_token, evidence.token, await self._keys(refresh),
                                                 self._audience, self._issuer, self._clock())
                break
            except InvalidResultToken:
                continue
        if claims is None:
            raise PermissionDenied("ATTESTATION_TOKEN_INVALID", "the result token does not verify, has expired, or "
                                   "was issued for another audience")
        matching = [c for c in conditions if c.verifier_policy == claims.get("policy")]
        if not matching:
            raise PermissionDenied("ATTESTATION_TOKEN_INVALID", "the result token was minted under a verifier "
                                   "policy the key policy does not accept")
        try:
            pcrs = {int(i): bytes.fromhex(v) for i, v in dict(claims.get("pcrs") or {}).items()}
            jwk = RSAKey.import_key(claims["cnf"]["jwk"])
            der = jwk.public_key.public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
        except (ValueError, TypeError, KeyError, AttributeError):
            raise PermissionDenied("RECIPIENT_KEY_MISMATCH", "the token's cnf.jwk is not an RSA public key") from None
        der = _bound_key(der, evidence.public_key)
        self._first_passing(matching, pcrs, _is_debug(pcrs))
        return Released(der, str(claims.get("sub", "")), str(claims.get("document_sha256", "")),
                        str(claims["policy"]))
