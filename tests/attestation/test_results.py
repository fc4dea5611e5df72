"""ListVerificationResults over real mTLS: every verdict is recorded (accepted and refused), listed newest first
with paging and a policy filter, a caller sees only the verdicts of the policies its rules cover, each listing
is audited, and a bad filter is INVALID_ARGUMENT that writes nothing."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from privmesh.attestation.v1 import attestation_pb2 as pb
from privmesh.attestation.v1 import attestation_pb2_grpc
from privmesh.enclave.app import EnclaveApp
from privmesh.enclave.simulator import DEFAULT_IMAGE, SimulatedNsm, image_pcrs
from privmesh.runtime.client import secure_channel
from privmesh.runtime.errors import read_error
from privmesh.runtime.pki import DevPki
from tests.attestation.test_service import _audit, _policy, verifier  # noqa: F401 (a fixture)
from tests.conftest import identity, spiffe


async def _verify(stub: attestation_pb2_grpc.AttestationVerifierStub, enclave: EnclaveApp,
                  policy: str) -> pb.VerifyAttestationResponse:
    nonce = (await stub.IssueChallenge(pb.IssueChallengeRequest())).nonce
    return await stub.VerifyAttestation(pb.VerifyAttestationRequest(document=enclave.attest(nonce), policy=policy))


async def test_verdicts_are_recorded_and_listed_newest_first(verifier, dev_ca) -> None:  # noqa: F811
    stub, _, tmp_path = verifier
    for name in ("simulated", "other"):
        await stub.PutPolicy(pb.PutPolicyRequest(policy=_policy(name, image_pcrs(DEFAULT_IMAGE))))
    good, bad = EnclaveApp(SimulatedNsm(dev_ca[0])), EnclaveApp(SimulatedNsm(dev_ca[0], image="tampered"))
    replies = [await _verify(stub, good, "simulated"), await _verify(stub, bad, "simulated"),
               await _verify(stub, good, "other")]
    first = await stub.ListVerificationResults(pb.ListVerificationResultsRequest(page_size=2))
    rest = await stub.ListVerificationResults(pb.ListVerificationResultsRequest(page_token=first.next_page_token))
    listed = [*first.results, *rest.results]
    assert len(first.results) == 2 and not rest.next_page_token
    assert [r.document_sha256 for r in listed] == [r.document_sha256 for r in reversed(replies)]
    assert [(r.policy, r.verdict) for r in listed] == [("other", pb.VERDICT_ACCEPTED),
                                                       ("simulated", pb.VERDICT_REJECTED),
                                                       ("simulated", pb.VERDICT_ACCEPTED)]
    assert list(listed[1].refusal_reasons) == [pb.REFUSAL_REASON_PCR_MISMATCH]
    assert all(r.kind == "aws-nitro-enclave" and r.principal == spiffe("alice") and r.name.startswith(
        f"policies/{r.policy}/results/") for r in listed)
    only = await stub.ListVerificationResults(pb.ListVerificationResultsRequest(policy="other"))
    assert [r.policy for r in only.results] == ["other"]
    reads = [(op, resource) for op, resource, _, _ in _audit(tmp_path) if op == "ListVerificationResults"]
    assert reads == [("ListVerificationResults", "policies/-/results")] * 2 + [
        ("ListVerificationResults", "policies/other/results")]


async def test_a_bad_filter_is_invalid_argument_and_audits_nothing(verifier) -> None:  # noqa: F811
    stub, _, tmp_path = verifier
    before = _audit(tmp_path)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ListVerificationResults(pb.ListVerificationResultsRequest(policy="Not A Name"))
    details = read_error(err.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT and [v.field for v in details.violations] == ["policy"]
    assert _audit(tmp_path) == before


async def test_a_caller_sees_only_the_verdicts_its_rules_cover(verifier, pki: DevPki, dev_ca,  # noqa: F811
                                                               tmp_path: Path) -> None:
    stub, server, _ = verifier
    for name in ("simulated", "secret"):
        await stub.PutPolicy(pb.PutPolicyRequest(policy=_policy(name, image_pcrs(DEFAULT_IMAGE))))
    enclave = EnclaveApp(SimulatedNsm(dev_ca[0]))
    await _verify(stub, enclave, "simulated")
    await _verify(stub, enclave, "secret")
    async with secure_channel(f"127.0.0.1:{server.port}", identity(pki, "auditor"), peer=spiffe("server")) as channel:
        auditor = attestation_pb2_grpc.AttestationVerifierStub(channel)
        reply = await auditor.ListVerificationResults(pb.ListVerificationResultsRequest())
    assert [r.policy for r in reply.results] == ["simulated"]
