"""An AWS Nitro authorizer for FLARE's confidential-computing manager (nvflare's CCManager): a site's CC token is a
fresh Nitro attestation document (a Nitro Enclave's, or a NitroTPM's on an attestable AMI, under a NITRO_TPM
policy), and verification is attestation-verifier's verdict against a named policy, over mTLS with the mesh
identity.

Freshness: for every token, `generate` asks attestation-verifier for a single-use challenge (IssueChallenge) and
has the host's attestation agent (`command`, run with "@nonce@" replaced by the challenge in hex; it writes the
document to stdout) bind it in the document's nonce field; `verify` refuses unless the policy requires a nonce, so
attestation-verifier refuses a replayed document (NONCE_REPLAYED) or one whose challenge it never issued.

Usable in any FLARE deployment: name it as a component in the site's resources.json and list its id in
CCManager's cc_issuers_conf (sites) and cc_verifier_ids (the verifying side); docs/attestation.md has the snippet.
"""

from __future__ import annotations

import base64
import binascii
import subprocess
from collections.abc import Sequence
from pathlib import Path

import grpc
from nvflare.app_opt.confidential_computing.cc_authorizer import CCAuthorizer, CCTokenGenerateError

from privmesh.attestation.v1 import attestation_pb2 as apb
from privmesh.attestation.v1 import attestation_pb2_grpc
from privmesh.fl.flare.kit import NONCE
from privmesh.runtime.client import pinned_options
from privmesh.runtime.tls import channel_credentials

NAMESPACE = "x-aws-nitro"
MAX_DOCUMENT_BYTES = 32 * 1024
CALL_TIMEOUT = 10.0


class NitroAuthorizer(CCAuthorizer):  # type: ignore[misc]
    def __init__(self, verifier_target: str, verifier_identity: str, policy: str, ca_file: str, cert_file: str,
                 key_file: str, command: Sequence[str] = ()) -> None:
        super().__init__()
        self.policy = policy
        self.command = list(command)
        if self.command and NONCE not in self.command:
            raise ValueError(f"command must pass the challenge: one argument is {NONCE!r}")
        self._channel = grpc.secure_channel(
            verifier_target, channel_credentials(Path(ca_file), Path(cert_file), Path(key_file)),
            options=pinned_options(verifier_target, verifier_identity))
        self._stub = attestation_pb2_grpc.AttestationVerifierStub(self._channel)
        self._policy_fresh = False

    def get_namespace(self) -> str:
        return NAMESPACE

    def generate(self) -> str:
        """A new document binding a new challenge from attestation-verifier, base64."""
        if not self.command:
            raise CCTokenGenerateError("no attestation command is configured: this side only verifies")
        try:
            nonce = self._stub.IssueChallenge(apb.IssueChallengeRequest(), timeout=CALL_TIMEOUT).nonce
            run = subprocess.run([nonce.hex() if a == NONCE else a for a in self.command], capture_output=True,
                                 timeout=CALL_TIMEOUT, check=False)
        except (grpc.RpcError, OSError, subprocess.TimeoutExpired) as exc:
            raise CCTokenGenerateError(f"no fresh attestation document: {type(exc).__name__}") from None
        if run.returncode != 0 or not 0 < len(run.stdout) <= MAX_DOCUMENT_BYTES:
            raise CCTokenGenerateError(f"the attestation command failed (exit {run.returncode}) or its document "
                                       f"is not 1..{MAX_DOCUMENT_BYTES} bytes")
        return base64.b64encode(run.stdout).decode()

    def _requires_nonce(self) -> bool:
        """Whether the policy requires fresh documents (asked once; an unreachable verifier is asked again)."""
        if not self._policy_fresh:
            policy = self._stub.GetPolicy(apb.GetPolicyRequest(name=self.policy), timeout=CALL_TIMEOUT).policy
            self._policy_fresh = not policy.HasField("require_nonce") or policy.require_nonce
        return self._policy_fresh

    def judge(self, token: str) -> tuple[bool, str]:
        """(accepted, the refusal reasons) for a token; fails closed on any error."""
        if not isinstance(token, str) or not token or len(token) > MAX_DOCUMENT_BYTES * 4 // 3 + 4:
            return False, "TOKEN_MALFORMED"
        try:
            document = base64.b64decode(token, validate=True)
            if not self._requires_nonce():
                return False, "POLICY_ACCEPTS_REPLAYS"
            reply = self._stub.VerifyAttestation(apb.VerifyAttestationRequest(document=document, policy=self.policy),
                                                 timeout=CALL_TIMEOUT)
        except (binascii.Error, ValueError):
            return False, "TOKEN_MALFORMED"
        except grpc.RpcError as exc:
            return False, f"VERIFIER_{exc.code().name}"
        reasons = ",".join(sorted(apb.RefusalReason.Name(r.reason) for r in reply.refusals))
        return reply.verdict == apb.VERDICT_ACCEPTED, reasons

    def verify(self, token: str) -> bool:
        """Whether attestation-verifier accepts the document under the policy, fresh."""
        return self.judge(token)[0]
