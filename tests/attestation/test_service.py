"""The attestation-verifier over real mTLS: the real Nitro documents, the enclave simulator's documents
with a challenge, policy management, bad input, audit of every verdict, and fail-closed behaviour."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from privmesh.attestation import server as attestation_server
from privmesh.attestation.document import parse_document
from privmesh.attestation.v1 import attestation_pb2 as pb
from privmesh.attestation.v1 import attestation_pb2_grpc
from privmesh.enclave.app import EnclaveApp
from privmesh.enclave.simulator import DEFAULT_IMAGE, SimulatedNsm, image_pcrs
from privmesh.runtime.client import secure_channel
from privmesh.runtime.errors import read_error
from privmesh.runtime.pki import DevPki
from privmesh.sdk.attestation.tokens import verify_result_token
from tests.attestation.conftest import IN_WINDOW, read_document
from tests.attestation.test_nitrotpm_real import REAL as REAL_TPM
from tests.conftest import identity, server_config, spiffe

SERVICE = "privmesh.attestation.v1.AttestationVerifier"
RULES = [
    {"name": "admin", "principals": [spiffe("alice")], "methods": [f"{SERVICE}/*"]},
    {"name": "verify-only", "principals": [spiffe("bob")], "methods": [f"{SERVICE}/VerifyAttestation"],
     "resources": ["policies/simulated"]},
    {"name": "verdicts-of-simulated", "principals": [spiffe("auditor")],
     "methods": [f"{SERVICE}/ListVerificationResults"], "resources": ["policies/simulated/**"]},
    {"name": "auditor", "principals": [spiffe("auditor")], "methods": ["privmesh.common.v1.AuditLog/*"]},
]
AUDIENCE = "spiffe://privmesh.local/ns/privmesh/sa/key-broker"


async def start(start_server, tmp_path: Path, pki: DevPki, dev_root: Path | None):  # type: ignore[no-untyped-def]
    settings = {"database": f"sqlite:///{tmp_path / 'attestation.db'}",
                "token_signing_key_file": str(tmp_path / "token-key.pem"),
                "dev_root_files": [str(dev_root)] if dev_root else []}
    return await start_server(attestation_server.DEFINITION, server_config(tmp_path, pki, RULES, settings))


@pytest.fixture
async def verifier(start_server, tmp_path: Path, pki: DevPki, dev_ca):  # type: ignore[no-untyped-def]
    server = await start(start_server, tmp_path, pki, dev_ca[1])
    async with secure_channel(f"127.0.0.1:{server.port}", identity(pki, "alice"), peer=spiffe("server")) as channel:
        yield attestation_pb2_grpc.AttestationVerifierStub(channel), server, tmp_path


def _policy(name: str, pcrs: dict[int, bytes], **kw: object) -> pb.Policy:
    return pb.Policy(name=name, allowed_pcr_sets=[pb.PcrSet(pcrs=pcrs, description="v1")], **kw)  # type: ignore[arg-type]


def _at(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _reasons(reply: pb.VerifyAttestationResponse) -> set[str]:
    return {pb.RefusalReason.Name(r.reason).removeprefix("REFUSAL_REASON_") for r in reply.refusals}


def _policy_rows(tmp_path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(tmp_path / "attestation.db") as conn:
        return conn.execute("SELECT name, etag FROM attestation_policies ORDER BY name").fetchall()


def _audit(tmp_path: Path) -> list[tuple[str, str, str, dict[str, str]]]:
    with sqlite3.connect(tmp_path / "audit.db") as conn:
        rows = conn.execute("SELECT operation, resource, outcome, details FROM audit_entries ORDER BY sequence")
        return [(r[0], r[1], r[2], json.loads(r[3])) for r in rows]


async def test_simulated_enclave_with_a_challenge_is_accepted_once(verifier, dev_ca) -> None:
    stub, _, tmp_path = verifier
    await stub.PutPolicy(pb.PutPolicyRequest(policy=_policy("simulated", image_pcrs(DEFAULT_IMAGE),
                                                             require_public_key=True)))
    enclave = EnclaveApp(SimulatedNsm(dev_ca[0]))
    challenge = await stub.IssueChallenge(pb.IssueChallengeRequest())
    document = enclave.attest(challenge.nonce)
    reply = await stub.VerifyAttestation(pb.VerifyAttestationRequest(document=document, policy="simulated",
                                                                     audience=AUDIENCE))
    assert reply.verdict == pb.VERDICT_ACCEPTED, reply.refusals
    assert reply.claims.public_key == enclave.public_key_der and reply.claims.nonce == challenge.nonce
    keys = json.loads((await stub.GetVerificationKeys(pb.GetVerificationKeysRequest())).jwks_json)
    claims = verify_result_token(reply.result_token, keys, AUDIENCE, "privmesh-attestation-verifier",
                                 datetime.now(timezone.utc))
    assert claims["policy"] == "simulated" and claims["cnf"]["jwk"]["kty"] == "RSA"
    again = await stub.VerifyAttestation(pb.VerifyAttestationRequest(document=document, policy="simulated",
                                                                     audience=AUDIENCE))
    assert again.verdict == pb.VERDICT_REJECTED and _reasons(again) == {"NONCE_REPLAYED"}
    assert not again.result_token
    verdicts = [(op, outcome, d["verdict"], d["reasons"]) for op, _, outcome, d in _audit(tmp_path)
                if op == "VerifyAttestation"]
    assert verdicts == [("VerifyAttestation", "SUCCESS", "ACCEPTED", ""),
                        ("VerifyAttestation", "DENIED", "REJECTED", "NONCE_REPLAYED")]
    assert all(d["document_sha256"] == reply.document_sha256 for op, _, _, d in _audit(tmp_path)
               if op == "VerifyAttestation")


async def test_unknown_nonce_debug_enclave_and_wrong_image_are_refused(verifier, dev_ca) -> None:
    stub, _, _ = verifier
    await stub.PutPolicy(pb.PutPolicyRequest(policy=_policy("simulated", image_pcrs(DEFAULT_IMAGE))))
    unknown = EnclaveApp(SimulatedNsm(dev_ca[0])).attest(b"n" * 32)
    reply = await stub.VerifyAttestation(pb.VerifyAttestationRequest(document=unknown, policy="simulated"))
    assert _reasons(reply) == {"NONCE_UNKNOWN"}
    nonce = (await stub.IssueChallenge(pb.IssueChallengeRequest())).nonce
    debug = EnclaveApp(SimulatedNsm(dev_ca[0], debug=True)).attest(nonce)
    reply = await stub.VerifyAttestation(pb.VerifyAttestationRequest(document=debug, policy="simulated"))
    assert _reasons(reply) == {"DEBUG_ENCLAVE", "PCR_MISMATCH"}
    nonce = (await stub.IssueChallenge(pb.IssueChallengeRequest())).nonce
    other = EnclaveApp(SimulatedNsm(dev_ca[0], image="some-other-image")).attest(nonce)
    reply = await stub.VerifyAttestation(pb.VerifyAttestationRequest(document=other, policy="simulated"))
    assert _reasons(reply) == {"PCR_MISMATCH"}


async def test_production_configuration_refuses_simulator_documents(start_server, tmp_path: Path, pki: DevPki,
                                                                    dev_ca) -> None:
    server = await start(start_server, tmp_path, pki, None)  # no development root configured
    async with secure_channel(f"127.0.0.1:{server.port}", identity(pki, "alice"), peer=spiffe("server")) as channel:
        stub = attestation_pb2_grpc.AttestationVerifierStub(channel)
        await stub.PutPolicy(pb.PutPolicyRequest(policy=_policy("simulated", image_pcrs(DEFAULT_IMAGE))))
        nonce = (await stub.IssueChallenge(pb.IssueChallengeRequest())).nonce
        document = EnclaveApp(SimulatedNsm(dev_ca[0])).attest(nonce)
        reply = await stub.VerifyAttestation(pb.VerifyAttestationRequest(document=document, policy="simulated",
                                                                         audience=AUDIENCE))
    assert reply.verdict == pb.VERDICT_REJECTED and "ROOT_NOT_TRUSTED" in _reasons(reply)
    assert not reply.result_token


async def test_real_nitro_documents_judged_at_a_pinned_time(verifier) -> None:
    stub, _, _ = verifier
    production, debug = read_document("blocky_nitro_attestation.b64"), read_document(
        "blocky_nitro_attestation_debug.b64")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.VerifyAttestation(pb.VerifyAttestationRequest(document=production, policy="absent",
                                                                 verification_time=_at(IN_WINDOW)))
    assert read_error(err.value).reason == "POLICY_NOT_FOUND"
    probe = _policy("real", {0: b"\0" * 48}, require_nonce=False, max_document_age=Duration(seconds=86400))
    await stub.PutPolicy(pb.PutPolicyRequest(policy=probe))
    reply = await stub.VerifyAttestation(pb.VerifyAttestationRequest(document=production, policy="real",
                                                                     verification_time=_at(IN_WINDOW)))
    claims_pcrs = dict(reply.claims.pcrs)
    assert _reasons(reply) == {"PCR_MISMATCH"}  # authentic, only the reference values differ
    exact = _policy("real", {i: claims_pcrs[i] for i in (0, 1, 2)}, require_nonce=False,
                    max_document_age=Duration(seconds=86400))
    await stub.PutPolicy(pb.PutPolicyRequest(policy=exact))
    reply = await stub.VerifyAttestation(pb.VerifyAttestationRequest(document=production, policy="real",
                                                                     verification_time=_at(IN_WINDOW),
                                                                     audience=AUDIENCE))
    assert reply.verdict == pb.VERDICT_ACCEPTED and not reply.result_token  # no token for past-time replays
    late = await stub.VerifyAttestation(pb.VerifyAttestationRequest(
        document=production, policy="real", verification_time=_at(IN_WINDOW + timedelta(hours=4))))
    assert "CERTIFICATE_EXPIRED" in _reasons(late)
    debug_policy = _policy("debug", {0: b"\0" * 48}, require_nonce=False, max_document_age=Duration(seconds=86400))
    await stub.PutPolicy(pb.PutPolicyRequest(policy=debug_policy))
    refused = await stub.VerifyAttestation(pb.VerifyAttestationRequest(document=debug, policy="debug",
                                                                       verification_time=_at(IN_WINDOW)))
    assert _reasons(refused) == {"DEBUG_ENCLAVE"}
    debug_policy.allow_debug = True
    await stub.PutPolicy(pb.PutPolicyRequest(policy=debug_policy))
    allowed = await stub.VerifyAttestation(pb.VerifyAttestationRequest(document=debug, policy="debug",
                                                                       verification_time=_at(IN_WINDOW)))
    assert allowed.verdict == pb.VERDICT_ACCEPTED
    selfsigned = await stub.VerifyAttestation(pb.VerifyAttestationRequest(
        document=read_document("blocky_selfsigned_attestation.b64"), policy="debug",
        verification_time=_at(IN_WINDOW)))
    assert selfsigned.verdict == pb.VERDICT_REJECTED and "ROOT_NOT_TRUSTED" in _reasons(selfsigned)


@pytest.mark.parametrize(("document", "reason"), [
    (b"", "DOCUMENT_MALFORMED"), (b"\x84garbage", "DOCUMENT_MALFORMED"), (b"\xff" * 100, "DOCUMENT_MALFORMED"),
    (b"\x84" + b"\x00" * (40 * 1024), "DOCUMENT_TOO_LARGE"),
])
async def test_bad_documents_are_invalid_argument_and_change_nothing(verifier, document: bytes, reason: str) -> None:
    stub, _, tmp_path = verifier
    await stub.PutPolicy(pb.PutPolicyRequest(policy=_policy("simulated", image_pcrs(DEFAULT_IMAGE))))
    before = _audit(tmp_path)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.VerifyAttestation(pb.VerifyAttestationRequest(document=document, policy="simulated"))
    details = read_error(err.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT and details.reason == reason
    assert [v.field for v in details.violations] == ["document"]
    assert _audit(tmp_path) == before


async def test_policy_validation_names_the_field_and_stores_nothing(verifier) -> None:
    stub, _, tmp_path = verifier
    bad = [
        (pb.Policy(name="Bad Name", allowed_pcr_sets=[pb.PcrSet(pcrs={0: b"\1" * 48})]), "policy.name"),
        (pb.Policy(name="ok"), "policy.allowed_pcr_sets"),
        (_policy("ok", {0: b"\1" * 47}), "policy.allowed_pcr_sets[0].pcrs[0]"),
        (_policy("ok", {40: b"\1" * 48}), "policy.allowed_pcr_sets[0].pcrs"),
        (_policy("ok", {0: b"\1" * 48}, max_document_age=Duration(seconds=3 * 86400)), "policy.max_document_age"),
        (_policy("ok", {24: b"\1" * 48}, kind=pb.ATTESTATION_KIND_NITRO_TPM), "policy.allowed_pcr_sets[0].pcrs"),
        (_policy("ok", {4: b"\1" * 48}, kind=7), "policy.kind"),
    ]
    for policy, field in bad:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.PutPolicy(pb.PutPolicyRequest(policy=policy))
        details = read_error(err.value)
        assert details.code == grpc.StatusCode.INVALID_ARGUMENT, field
        assert [v.field for v in details.violations] == [field]
    assert _policy_rows(tmp_path) == []
    assert _audit(tmp_path) == []


async def test_policy_lifecycle_with_etags_and_paging(verifier) -> None:
    stub, _, tmp_path = verifier
    for name in ("a", "b", "c"):
        await stub.PutPolicy(pb.PutPolicyRequest(policy=_policy(name, {0: b"\1" * 48})))
    page = await stub.ListPolicies(pb.ListPoliciesRequest(page_size=2))
    rest = await stub.ListPolicies(pb.ListPoliciesRequest(page_size=2, page_token=page.next_page_token))
    assert [p.name for p in page.policies] + [p.name for p in rest.policies] == ["a", "b", "c"]
    assert not rest.next_page_token
    current = (await stub.GetPolicy(pb.GetPolicyRequest(name="b"))).policy
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.PutPolicy(pb.PutPolicyRequest(policy=_policy("b", {0: b"\2" * 48}), etag="stale"))
    assert read_error(err.value).reason == "POLICY_ETAG_MISMATCH"
    updated = await stub.PutPolicy(pb.PutPolicyRequest(policy=_policy("b", {0: b"\2" * 48}), etag=current.etag))
    assert updated.policy.etag != current.etag and updated.policy.create_time == current.create_time
    await stub.DeletePolicy(pb.DeletePolicyRequest(name="b"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetPolicy(pb.GetPolicyRequest(name="b"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND and read_error(err.value).reason == "POLICY_NOT_FOUND"
    assert [r[0] for r in _policy_rows(tmp_path)] == ["a", "c"]


async def test_resource_rules_limit_which_policies_a_caller_may_use(verifier, pki: DevPki, dev_ca) -> None:
    stub, server, _ = verifier
    await stub.PutPolicy(pb.PutPolicyRequest(policy=_policy("secret", {0: b"\1" * 48})))
    async with secure_channel(f"127.0.0.1:{server.port}", identity(pki, "bob"), peer=spiffe("server")) as channel:
        bob = attestation_pb2_grpc.AttestationVerifierStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await bob.VerifyAttestation(pb.VerifyAttestationRequest(document=b"x", policy="secret"))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await bob.PutPolicy(pb.PutPolicyRequest(policy=_policy("simulated", {0: b"\1" * 48})))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_policy_change_fails_closed_when_audit_cannot_be_written(verifier) -> None:
    stub, _, tmp_path = verifier
    await stub.PutPolicy(pb.PutPolicyRequest(policy=_policy("kept", {0: b"\1" * 48})))
    rows = _policy_rows(tmp_path)
    with sqlite3.connect(tmp_path / "audit.db") as conn:
        conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON audit_entries BEGIN SELECT RAISE(ABORT, 'full'); END")
    for call in (stub.PutPolicy(pb.PutPolicyRequest(policy=_policy("kept", {0: b"\2" * 48}))),
                 stub.PutPolicy(pb.PutPolicyRequest(policy=_policy("new", {0: b"\2" * 48}))),
                 stub.DeletePolicy(pb.DeletePolicyRequest(name="kept"))):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert read_error(err.value).reason == "AUDIT_UNAVAILABLE"
    assert _policy_rows(tmp_path) == rows


async def test_nitrotpm_documents_are_judged_under_nitrotpm_policies(verifier, dev_ca) -> None:
    """An instance booted from an attestable AMI: accepted once with a challenge under a NITRO_TPM policy
    (PCR4+PCR12), its kind in the claims, the audit and the token; refused under an enclave policy."""
    from privmesh.enclave.nitrotpm_simulator import SimulatedNitroTpm, ami_pcrs

    stub, _, tmp_path = verifier
    boot = {i: v for i, v in ami_pcrs("ami-v7").items() if i in (4, 12)}
    put = await stub.PutPolicy(pb.PutPolicyRequest(policy=_policy("ami", boot, kind=pb.ATTESTATION_KIND_NITRO_TPM)))
    assert put.policy.kind == pb.ATTESTATION_KIND_NITRO_TPM
    got = await stub.GetPolicy(pb.GetPolicyRequest(name="ami"))
    assert got.policy.kind == pb.ATTESTATION_KIND_NITRO_TPM and dict(got.policy.allowed_pcr_sets[0].pcrs) == boot
    await stub.PutPolicy(pb.PutPolicyRequest(policy=_policy("simulated", image_pcrs(DEFAULT_IMAGE))))
    assert (await stub.GetPolicy(pb.GetPolicyRequest(name="simulated"))).policy.kind == \
        pb.ATTESTATION_KIND_NITRO_ENCLAVE  # unspecified on the wire: an enclave policy
    instance = EnclaveApp(SimulatedNitroTpm(dev_ca[0], ami="ami-v7"))
    nonce = (await stub.IssueChallenge(pb.IssueChallengeRequest())).nonce
    document = instance.attest(nonce)
    reply = await stub.VerifyAttestation(pb.VerifyAttestationRequest(document=document, policy="ami",
                                                                     audience=AUDIENCE))
    assert reply.verdict == pb.VERDICT_ACCEPTED, reply.refusals
    assert reply.claims.kind == pb.ATTESTATION_KIND_NITRO_TPM and len(reply.claims.pcrs) == 24
    keys = json.loads((await stub.GetVerificationKeys(pb.GetVerificationKeysRequest())).jwks_json)
    claims = verify_result_token(reply.result_token, keys, AUDIENCE, "privmesh-attestation-verifier",
                                 datetime.now(timezone.utc))
    assert claims["kind"] == "NITRO_TPM" and claims["policy_pcrs"] == {str(i): v.hex() for i, v in boot.items()}
    replay = await stub.VerifyAttestation(pb.VerifyAttestationRequest(document=document, policy="ami"))
    assert _reasons(replay) == {"NONCE_REPLAYED"}
    nonce = (await stub.IssueChallenge(pb.IssueChallengeRequest())).nonce
    crossed = await stub.VerifyAttestation(pb.VerifyAttestationRequest(document=instance.attest(nonce),
                                                                       policy="simulated"))
    assert _reasons(crossed) == {"KIND_MISMATCH"} and not crossed.result_token
    kinds = [d["kind"] for op, _, _, d in _audit(tmp_path) if op == "VerifyAttestation"]
    assert kinds == ["NITRO_TPM", "NITRO_TPM", "NITRO_TPM"]
    results = await stub.ListVerificationResults(pb.ListVerificationResultsRequest())
    assert [r.kind for r in results.results] == ["aws-nitrotpm"] * 3


async def test_the_service_judges_a_real_nitrotpm_document_at_a_pinned_time(verifier) -> None:  # type: ignore[no-untyped-def]
    stub, _, _ = verifier
    real = REAL_TPM[1]
    doc = parse_document(real.raw)
    boot = {i: doc.pcrs[i] for i in (4, 7)}
    await stub.PutPolicy(pb.PutPolicyRequest(policy=_policy(
        "ami", boot, kind=pb.ATTESTATION_KIND_NITRO_TPM, require_nonce=False,
        max_document_age=Duration(seconds=86400))))
    reply = await stub.VerifyAttestation(pb.VerifyAttestationRequest(document=real.raw, policy="ami",
                                                                     verification_time=_at(real.in_window)))
    assert reply.verdict == pb.VERDICT_ACCEPTED, _reasons(reply)
    assert reply.claims.kind == pb.ATTESTATION_KIND_NITRO_TPM and dict(reply.claims.pcrs) == doc.pcrs
    late = await stub.VerifyAttestation(pb.VerifyAttestationRequest(
        document=real.raw, policy="ami", verification_time=_at(real.leaf_expires + timedelta(minutes=1))))
    assert late.verdict == pb.VERDICT_REJECTED and "CERTIFICATE_EXPIRED" in _reasons(late)
    await stub.PutPolicy(pb.PutPolicyRequest(policy=_policy(
        "enclave", {0: doc.pcrs[0]}, require_nonce=False, max_document_age=Duration(seconds=86400))))
    crossed = await stub.VerifyAttestation(pb.VerifyAttestationRequest(document=real.raw, policy="enclave",
                                                                       verification_time=_at(real.in_window)))
    assert _reasons(crossed) == {"KIND_MISMATCH"}
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.VerifyAttestation(pb.VerifyAttestationRequest(document=real.raw[:-1], policy="ami"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
