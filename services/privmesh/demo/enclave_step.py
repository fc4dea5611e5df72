"""Step 5 of the scenario: a (simulated) enclave proves what it runs to the attestation-verifier.

The operator pins the enclave image's PCRs in a policy; the enclave binds a fresh challenge and its own
public key into an attestation document; the verifier accepts it and mints a result token bound to that
key. A replayed document, a debug-mode enclave and an enclave running another image are refused. Then
key-broker releases a data key to the enclave, wrapped to its key (privmesh.demo.keybroker_step).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from privmesh.attestation.v1 import attestation_pb2 as pb
from privmesh.attestation.v1 import attestation_pb2_grpc
from privmesh.demo.context import CALL_TIMEOUT, DemoContext, expect
from privmesh.demo.keybroker_step import key_release
from privmesh.enclave.app import EnclaveApp
from privmesh.enclave.simulator import DEFAULT_IMAGE, DevCa, SimulatedNsm, image_pcrs
from privmesh.mesh.catalog import enclave_simulator_dir
from privmesh.runtime.client import secure_channel
from privmesh.sdk.attestation.tokens import verify_result_token

POLICY = "demo-enclave"
AUDIENCE = "spiffe://privmesh.local/ns/privmesh/sa/key-broker"


def _reasons(reply: pb.VerifyAttestationResponse) -> list[str]:
    return sorted(pb.RefusalReason.Name(r.reason).removeprefix("REFUSAL_REASON_") for r in reply.refusals)


async def enclave_attestation_step(ctx: DemoContext) -> None:
    target = ctx.targets["attestation-verifier"]
    ca = DevCa.load(enclave_simulator_dir(ctx.layout.root))
    async with secure_channel(target, ctx.layout.identity("admin"),
                              timeout_seconds=CALL_TIMEOUT, peer=ctx.peers["attestation-verifier"]) as admin_channel:
        admin = attestation_pb2_grpc.AttestationVerifierStub(admin_channel)
        policy = pb.Policy(name=POLICY, require_public_key=True, description="the demo enclave image",
                           allowed_pcr_sets=[pb.PcrSet(pcrs=image_pcrs(DEFAULT_IMAGE), description=DEFAULT_IMAGE)])
        await admin.PutPolicy(pb.PutPolicyRequest(policy=policy))
        ctx.console.print(f"   operator pinned PCR0..2 of image {DEFAULT_IMAGE!r} in policy {POLICY!r}")
    async with secure_channel(target, ctx.layout.identity("demo-client"),
                              timeout_seconds=CALL_TIMEOUT, peer=ctx.peers["attestation-verifier"]) as channel:
        verifier = attestation_pb2_grpc.AttestationVerifierStub(channel)
        enclave = EnclaveApp(SimulatedNsm(ca))
        nonce = (await verifier.IssueChallenge(pb.IssueChallengeRequest())).nonce
        document = enclave.attest(nonce)
        reply = await verifier.VerifyAttestation(pb.VerifyAttestationRequest(document=document, policy=POLICY,
                                                                             audience=AUDIENCE))
        expect(reply.verdict == pb.VERDICT_ACCEPTED, f"the genuine enclave was refused: {_reasons(reply)}")
        keys = json.loads((await verifier.GetVerificationKeys(pb.GetVerificationKeysRequest())).jwks_json)
        claims = verify_result_token(reply.result_token, keys, AUDIENCE, "privmesh-attestation-verifier",
                                     datetime.now(timezone.utc))
        expires = reply.result_token_expire_time.ToJsonString()
        ctx.console.print(f"   enclave {reply.claims.module_id} accepted; result token for {AUDIENCE} binds its "
                          f"{claims['cnf']['jwk']['kty']} key (expires {expires})")
        replay = await verifier.VerifyAttestation(pb.VerifyAttestationRequest(document=document, policy=POLICY,
                                                                              audience=AUDIENCE))
        expect(_reasons(replay) == ["NONCE_REPLAYED"], f"a replayed document was not refused: {_reasons(replay)}")
        for label, nsm in (("debug-mode enclave", SimulatedNsm(ca, debug=True)),
                           ("enclave running another image", SimulatedNsm(ca, image="tampered-image"))):
            nonce = (await verifier.IssueChallenge(pb.IssueChallengeRequest())).nonce
            refused = await verifier.VerifyAttestation(pb.VerifyAttestationRequest(
                document=EnclaveApp(nsm).attest(nonce), policy=POLICY, audience=AUDIENCE))
            expect(refused.verdict == pb.VERDICT_REJECTED and not refused.result_token, f"{label} was accepted")
            ctx.console.print(f"   {label} refused: {', '.join(_reasons(refused))}")
        ctx.console.print("   replayed document refused: NONCE_REPLAYED")
    await key_release(ctx, ca)
