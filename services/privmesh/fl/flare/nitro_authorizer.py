"""An AWS Nitro authorizer for FLARE's confidential-computing manager (nvflare's CCManager): a site's CC token is
its Nitro attestation document (a Nitro Enclave's, or a NitroTPM's once attestation-verifier accepts those),
and verification is attestation-verifier's verdict against a named policy, over mTLS with the mesh identity.

Usable in any FLARE deployment: name it as a component in the site's resources.json and list its id in
CCManager's cc_issuers_conf / cc_verifier_ids. The document comes from `document_file`, which the host's
attestation agent keeps fresh (FLARE asks for tokens at registration and every verify_frequency seconds); the
verifier judges the document whatever its kind, so this class does not parse it.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

import grpc
from nvflare.app_opt.confidential_computing.cc_authorizer import CCAuthorizer, CCTokenGenerateError

from privmesh.attestation.v1 import attestation_pb2 as apb
from privmesh.attestation.v1 import attestation_pb2_grpc
from privmesh.runtime.client import pinned_options
from privmesh.runtime.tls import channel_credentials

NAMESPACE = "x-aws-nitro"
MAX_DOCUMENT_BYTES = 32 * 1024
CALL_TIMEOUT = 10.0


class NitroAuthorizer(CCAuthorizer):  # type: ignore[misc]
    def __init__(self, verifier_target: str, verifier_identity: str, policy: str, ca_file: str, cert_file: str,
                 key_file: str, document_file: str = "") -> None:
        super().__init__()
        self.policy = policy
        self.document_file = Path(document_file) if document_file else None
        self._channel = grpc.secure_channel(
            verifier_target, channel_credentials(Path(ca_file), Path(cert_file), Path(key_file)),
            options=pinned_options(verifier_target, verifier_identity))
        self._stub = attestation_pb2_grpc.AttestationVerifierStub(self._channel)

    def get_namespace(self) -> str:
        return NAMESPACE

    def generate(self) -> str:
        """The site's current attestation document, base64."""
        if self.document_file is None:
            raise CCTokenGenerateError("no document_file is configured: this site only verifies")
        document = self.document_file.read_bytes()
        if not document or len(document) > MAX_DOCUMENT_BYTES:
            raise CCTokenGenerateError(f"the attestation document must be 1..{MAX_DOCUMENT_BYTES} bytes")
        return base64.b64encode(document).decode()

    def verify(self, token: str) -> bool:
        """Whether attestation-verifier accepts the document under the policy; fails closed on any error."""
        if not isinstance(token, str) or len(token) > MAX_DOCUMENT_BYTES * 4 // 3 + 4:
            return False
        try:
            document = base64.b64decode(token, validate=True)
            reply = self._stub.VerifyAttestation(apb.VerifyAttestationRequest(document=document, policy=self.policy),
                                                 timeout=CALL_TIMEOUT)
        except (binascii.Error, ValueError, grpc.RpcError):
            return False
        return bool(reply.verdict == apb.VERDICT_ACCEPTED)
