"""AttestationVerifier over gRPC: translates protobuf <-> the domain service and its errors."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from privmesh.attestation.policy import DEFAULT_MAX_DOCUMENT_AGE, InvalidPolicy, PcrSet, Policy
from privmesh.attestation.results import VerificationResult
from privmesh.attestation.store import StoredPolicy
from privmesh.attestation.v1 import attestation_pb2 as pb
from privmesh.attestation.v1 import attestation_pb2_grpc
from privmesh.attestation.verifier_service import AttestationService
from privmesh.runtime.authz import Authorizer
from privmesh.runtime.context import CallContext
from privmesh.runtime.errors import InvalidArgument
from privmesh.runtime.paging import name_page, visible_page


def _ts(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _ts_us(micros: int) -> Timestamp:
    return Timestamp(seconds=micros // 1_000_000, nanos=(micros % 1_000_000) * 1000)


def _kind_name(kind: int) -> str:
    """AttestationKind -> the domain's kind name; UNSPECIFIED is NITRO_ENCLAVE (policies from before kinds)."""
    return "NITRO_ENCLAVE" if kind == pb.ATTESTATION_KIND_UNSPECIFIED else pb.AttestationKind.Name(kind).removeprefix(
        "ATTESTATION_KIND_")


def _kind_enum(kind: str) -> str:
    """The enum value's name, which protobuf accepts for an enum field (and mypy checks, unlike an int)."""
    return "ATTESTATION_KIND_" + kind


def policy_from_proto(msg: pb.Policy) -> Policy:
    if msg.max_document_age.nanos < 0 or msg.max_document_age.seconds < 0:
        raise InvalidArgument.single("policy.max_document_age", "must not be negative")
    age = msg.max_document_age.ToTimedelta() if msg.HasField("max_document_age") else DEFAULT_MAX_DOCUMENT_AGE
    if msg.kind not in pb.AttestationKind.values():
        raise InvalidArgument.single("policy.kind", f"unknown kind {msg.kind}")
    policy = Policy(
        name=msg.name,
        allowed_pcr_sets=[PcrSet(dict(s.pcrs), s.description) for s in msg.allowed_pcr_sets],
        allow_debug=msg.allow_debug, max_document_age=age,
        require_nonce=msg.require_nonce if msg.HasField("require_nonce") else True,
        require_public_key=msg.require_public_key,
        required_user_data=msg.required_user_data or None, description=msg.description, kind=_kind_name(msg.kind))
    try:
        policy.validate()
    except InvalidPolicy as exc:
        raise InvalidArgument.single(f"policy.{exc.field}", exc.message) from None
    return policy


def policy_to_proto(stored: StoredPolicy) -> pb.Policy:
    policy = stored.policy
    age = Duration()
    age.FromTimedelta(policy.max_document_age)
    return pb.Policy(
        name=policy.name, allowed_pcr_sets=[pb.PcrSet(pcrs=dict(s.pcrs), description=s.description)
                                            for s in policy.allowed_pcr_sets],
        allow_debug=policy.allow_debug, max_document_age=age, require_nonce=policy.require_nonce,
        require_public_key=policy.require_public_key, required_user_data=policy.required_user_data or b"",
        description=policy.description, kind=_kind_enum(policy.kind), etag=stored.etag,
        create_time=_ts_us(stored.create_us), update_time=_ts_us(stored.update_us))


def result_to_proto(result: VerificationResult) -> pb.VerificationResult:
    reply = pb.VerificationResult(
        name=result.name, kind=result.kind, policy=result.policy, policy_etag=result.policy_etag,
        verdict=pb.VERDICT_ACCEPTED if result.accepted else pb.VERDICT_REJECTED,
        refusal_reasons=["REFUSAL_REASON_" + r for r in result.reasons],
        document_sha256=result.document_sha256, module_id=result.module_id, principal=result.principal,
        verify_time=_ts_us(result.verify_us), token_minted=result.token_minted)
    if result.replay_us:
        reply.replay_time.CopyFrom(_ts_us(result.replay_us))
    return reply


class AttestationServicer(attestation_pb2_grpc.AttestationVerifierServicer):
    def __init__(self, service: AttestationService, authorizer: Authorizer) -> None:
        self._service = service
        self._authorizer = authorizer

    async def IssueChallenge(self, request: pb.IssueChallengeRequest,
                             context: CallContext) -> pb.IssueChallengeResponse:
        ttl: timedelta | None = request.ttl.ToTimedelta() if request.HasField("ttl") else None
        nonce, expires = await self._service.issue_challenge(ttl)
        return pb.IssueChallengeResponse(nonce=nonce, expire_time=_ts(expires))

    async def VerifyAttestation(self, request: pb.VerifyAttestationRequest,
                                context: CallContext) -> pb.VerifyAttestationResponse:
        if not request.policy:
            raise InvalidArgument.single("policy", "required")
        at = request.verification_time.ToDatetime(timezone.utc) if request.HasField("verification_time") else None
        verdict = await self._service.verify(request.document, request.policy, request.audience, at)
        c = verdict.claims
        reply = pb.VerifyAttestationResponse(
            verdict=pb.VERDICT_ACCEPTED if verdict.accepted else pb.VERDICT_REJECTED,
            refusals=[pb.Refusal(reason="REFUSAL_REASON_" + r.reason, message=r.message)
                      for r in verdict.refusals],
            claims=pb.Claims(module_id=c.module_id, digest=c.digest, timestamp=_ts(c.timestamp), pcrs=dict(c.pcrs),
                             public_key=c.public_key or b"", user_data=c.user_data or b"", nonce=c.nonce or b"",
                             debug_mode=c.debug_mode, certificate_sha256=c.certificate_sha256,
                             kind=_kind_enum(c.kind)),
            document_sha256=verdict.document_sha256, policy=verdict.policy.policy.name,
            policy_etag=verdict.policy.etag)
        if verdict.token is not None and verdict.token_expires is not None:
            reply.result_token = verdict.token
            reply.result_token_expire_time.CopyFrom(_ts(verdict.token_expires))
        return reply

    async def PutPolicy(self, request: pb.PutPolicyRequest, context: CallContext) -> pb.PutPolicyResponse:
        policy = policy_from_proto(request.policy)
        return pb.PutPolicyResponse(policy=policy_to_proto(await self._service.put_policy(policy, request.etag)))

    async def GetPolicy(self, request: pb.GetPolicyRequest, context: CallContext) -> pb.GetPolicyResponse:
        return pb.GetPolicyResponse(policy=policy_to_proto(await self._service.get_policy(request.name)))

    async def ListPolicies(self, request: pb.ListPoliciesRequest,
                           context: CallContext) -> pb.ListPoliciesResponse:
        limit, after = name_page(request)

        async def fetch(start: str | None, count: int) -> list[pb.Policy]:
            return [policy_to_proto(p) for p in await self._service.list_policies(start or "", count)]

        page, token = await visible_page(fetch, after, limit, lambda p: p.name, self._authorizer.visible)
        return pb.ListPoliciesResponse(policies=page, next_page_token=token)

    async def ListVerificationResults(self, request: pb.ListVerificationResultsRequest,
                                      context: CallContext) -> pb.ListVerificationResultsResponse:
        limit, after = name_page(request)
        await self._service.open_results(request.policy)

        async def fetch(start: str | None, count: int) -> list[pb.VerificationResult]:
            return [result_to_proto(r) for r in await self._service.list_results(start or "", count, request.policy)]

        page, token = await visible_page(fetch, after, limit, lambda r: r.name.rsplit("/", 1)[1],
                                         self._authorizer.visible)
        return pb.ListVerificationResultsResponse(results=page, next_page_token=token)

    async def DeletePolicy(self, request: pb.DeletePolicyRequest,
                           context: CallContext) -> pb.DeletePolicyResponse:
        await self._service.delete_policy(request.name, request.etag)
        return pb.DeletePolicyResponse()

    async def GetVerificationKeys(self, request: pb.GetVerificationKeysRequest,
                                  context: CallContext) -> pb.GetVerificationKeysResponse:
        return pb.GetVerificationKeysResponse(jwks_json=json.dumps(self._service.issuer.jwks()),
                                              issuer=self._service.issuer.issuer)
