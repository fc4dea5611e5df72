"""Attested admission: attestation-verifier judges a participant's document against the federation's policy, and
the document must bind the participant's public key (user_data = SHA-256 of its DER SubjectPublicKeyInfo)."""

from __future__ import annotations

import hashlib
import hmac

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from privmesh.attestation.v1 import attestation_pb2 as apb
from privmesh.attestation.v1 import attestation_pb2_grpc
from privmesh.fl.v1 import fl_pb2
from privmesh.runtime.errors import PermissionDenied, Unavailable

MAX_DOCUMENT_BYTES = 32 * 1024
SERVICES = (apb.DESCRIPTOR.services_by_name["AttestationVerifier"],)


class AttestationRefused(Exception):
    """attestation-verifier rejected the document, for `reasons`."""

    def __init__(self, reasons: tuple[str, ...], document_sha256: str) -> None:
        super().__init__(", ".join(reasons))
        self.reasons = reasons
        self.document_sha256 = document_sha256


class Admission:
    def __init__(self, channel: grpc.aio.Channel | None) -> None:
        self._stub = attestation_pb2_grpc.AttestationVerifierStub(channel) if channel is not None else None

    def _require_stub(self) -> attestation_pb2_grpc.AttestationVerifierStub:
        if self._stub is None:
            raise Unavailable("ATTESTATION_UNAVAILABLE", "no attestation-verifier is configured")
        return self._stub

    async def policy_exists(self, policy: str) -> bool:
        try:
            await self._require_stub().GetPolicy(apb.GetPolicyRequest(name=policy))
            return True
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return False
            raise Unavailable("ATTESTATION_UNAVAILABLE", f"attestation-verifier: {exc.code().name}") from None

    async def verify(self, document: bytes, policy: str, key_digest: bytes) -> fl_pb2.AdmissionAttestation:
        """The admitting attestation; raises AttestationRefused or PermissionDenied (key not bound)."""
        digest = hashlib.sha256(document).hexdigest()
        try:
            reply = await self._require_stub().VerifyAttestation(apb.VerifyAttestationRequest(document=document,
                                                                                              policy=policy))
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise AttestationRefused(("DOCUMENT_MALFORMED",), digest) from None
            raise Unavailable("ATTESTATION_UNAVAILABLE", f"attestation-verifier: {exc.code().name}") from None
        if reply.verdict != apb.VERDICT_ACCEPTED:
            raise AttestationRefused(tuple(sorted(apb.RefusalReason.Name(r.reason) for r in reply.refusals)), digest)
        if not hmac.compare_digest(reply.claims.user_data, key_digest):
            raise PermissionDenied("ATTESTATION_KEY_MISMATCH", "the attestation document does not bind the "
                                   "participant's public key (user_data must be the SHA-256 of its DER SPKI)",
                                   {"document_sha256": digest})
        now = Timestamp()
        now.GetCurrentTime()
        return fl_pb2.AdmissionAttestation(policy=policy, document_sha256=digest, module_id=reply.claims.module_id,
                                           verify_time=now)
