"""Attested release end to end on loopback: a real attestation-verifier judges the simulated enclave's
documents for the broker; the enclave receives its data key only as RSA-OAEP ciphertext to its own key,
unwraps it inside and decrypts a record; plain callers, debug enclaves, other images, replayed nonces,
foreign tokens and mismatched keys are refused with PERMISSION_DENIED and a reason."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from privmesh.attestation import server as attestation_server
from privmesh.attestation.v1 import attestation_pb2 as apb
from privmesh.attestation.v1 import attestation_pb2_grpc
from privmesh.enclave.app import EnclaveApp, encrypt_record
from privmesh.enclave.simulator import DEFAULT_IMAGE, DevCa, SimulatedNsm, image_pcrs
from privmesh.keybroker.enclave_proxy import EnclaveKeyProxy
from privmesh.keybroker.policy import ADMIN_OPERATIONS
from privmesh.keybroker.v1 import keybroker_pb2 as pb
from privmesh.runtime.client import secure_channel
from privmesh.runtime.errors import read_error
from privmesh.runtime.pki import DevPki
from privmesh.sdk.enclave.vsock import FORMAT_RSAES_OAEP, FrameClient, RemoteError, serve_proxy
from privmesh.sdk.keybroker.client import allow
from tests.conftest import identity, server_config, spiffe
from tests.keybroker.conftest import ALICE, BOB, Broker

VERIFIER = "privmesh.attestation.v1.AttestationVerifier"
VERIFIER_RULES = [
    {"name": "admin", "principals": [spiffe("alice")], "methods": [f"{VERIFIER}/*"]},
    {"name": "key-broker", "principals": [spiffe("server")],
     "methods": [f"{VERIFIER}/VerifyAttestation", f"{VERIFIER}/GetVerificationKeys"]},
]
BROKER_ID = spiffe("server")  # the in-process broker's certificate (its result-token audience)
CONTEXT = {"dataset": "patients"}


@dataclass
class Mesh:
    broker: Broker
    verifier: attestation_pb2_grpc.AttestationVerifierStub
    ca: DevCa
    key: pb.Key


def enclave_policy(**attestation: Any) -> pb.KeyPolicy:
    condition = pb.PolicyConditions(attestation=pb.AttestationCondition(verifier_policy="enclave", **attestation))
    return pb.KeyPolicy(statements=[
        allow([ALICE], ADMIN_OPERATIONS, "admin"),
        allow([BOB], [pb.KEY_OPERATION_GENERATE_DATA_KEY], "data-owner"),
        allow([ALICE], [pb.KEY_OPERATION_GENERATE_DATA_KEY, pb.KEY_OPERATION_DECRYPT], "enclave", condition)])


@pytest.fixture
async def mesh(start_server: Callable[..., Any], start_broker: Callable[..., Any], pki: DevPki,
               tmp_path: Path) -> Any:
    ca = DevCa.load_or_create(tmp_path / "sim")
    root = tmp_path / "sim-root.pem"
    root.write_bytes(ca.root_pem)
    (tmp_path / "verifier").mkdir()
    verifier_server = await start_server(attestation_server.DEFINITION, server_config(
        tmp_path / "verifier", pki, VERIFIER_RULES,
        {"database": f"sqlite:///{tmp_path / 'verifier' / 'a.db'}", "dev_root_files": [str(root)],
         "token_signing_key_file": str(tmp_path / "verifier" / "token.pem")}))
    target = f"127.0.0.1:{verifier_server.port}"
    (tmp_path / "broker").mkdir()
    broker = await start_broker(tmp_path / "broker", attestation={"verifier_target": target,
                                                                            "verifier_identity": spiffe("server")})
    async with secure_channel(target, identity(pki, "alice"), peer=spiffe("server")) as channel:
        verifier = attestation_pb2_grpc.AttestationVerifierStub(channel)
        await verifier.PutPolicy(apb.PutPolicyRequest(policy=apb.Policy(
            name="enclave", require_public_key=True,
            allowed_pcr_sets=[apb.PcrSet(pcrs=image_pcrs(DEFAULT_IMAGE))])))
        key = await broker.alice.create_key(alias="enclave-records", policy=enclave_policy(
            allowed_pcr_sets=[pb.PcrSet(pcrs=image_pcrs(DEFAULT_IMAGE), description="v1")]))
        yield Mesh(broker, verifier, ca, key)


async def _document(mesh: Mesh, enclave: EnclaveApp) -> bytes:
    nonce = (await mesh.verifier.IssueChallenge(apb.IssueChallengeRequest())).nonce
    return enclave.attest(nonce)


async def _refusal(call: Any) -> tuple[grpc.StatusCode, str | None, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    error = read_error(caught.value)
    return error.code, error.reason, error.metadata.get("refusals", "")


async def test_enclave_gets_the_data_key_only_wrapped_to_itself_and_decrypts_a_record(mesh: Mesh) -> None:
    # The data owner encrypts a record with a data key and keeps the wrapped key beside it.
    plaintext, wrapped, _ = await mesh.broker.bob.generate_data_key(mesh.key.name, CONTEXT)
    record = encrypt_record(plaintext, b"patient 17: HbA1c 6.1")
    enclave = EnclaveApp(SimulatedNsm(mesh.ca))
    reply = await mesh.broker.stub.Decrypt(pb.DecryptRequest(
        ciphertext_blob=wrapped, encryption_context=CONTEXT,
        recipient=pb.Recipient(attestation_document=await _document(mesh, enclave),
                               public_key=enclave.public_key_der)))
    assert not reply.plaintext and reply.ciphertext_format == pb.RECIPIENT_CIPHERTEXT_FORMAT_RSAES_OAEP
    assert plaintext not in reply.ciphertext_for_recipient and reply.recipient.verifier_policy == "enclave"
    enclave.store_key("records", enclave.unwrap_data_key(reply.ciphertext_for_recipient, FORMAT_RSAES_OAEP))
    assert enclave.decrypt_with("records", record)["length"] == len(b"patient 17: HbA1c 6.1")
    # A plain caller asking for the same key is refused, with the reason.
    assert await _refusal(mesh.broker.alice.decrypt(wrapped, CONTEXT)) == (
        grpc.StatusCode.PERMISSION_DENIED, "ATTESTATION_REQUIRED", "")
    assert await _refusal(mesh.broker.bob.decrypt(wrapped, CONTEXT)) == (
        grpc.StatusCode.PERMISSION_DENIED, "KEY_POLICY_DENIED", "")
    released = [d for p, op, _, outcome, d in mesh.broker.audit() if op == "Decrypt" and outcome == "SUCCESS"]
    assert released[0]["recipient_module_id"] == reply.recipient.module_id
    assert released[0]["recipient_public_key_sha256"] == reply.recipient.public_key_sha256


async def test_the_simulated_enclave_acquires_a_key_through_its_parent_proxy(mesh: Mesh, tmp_path: Path) -> None:
    import asyncio

    plaintext, wrapped, _ = await mesh.broker.bob.generate_data_key(mesh.key.name, CONTEXT)
    record = encrypt_record(plaintext, b"patient 18")
    proxy = EnclaveKeyProxy(mesh.verifier, mesh.broker.stub, asyncio.get_running_loop())
    server = serve_proxy(str(tmp_path / "proxy.sock"), proxy.handle)
    enclave = EnclaveApp(SimulatedNsm(mesh.ca))
    impostor = EnclaveApp(SimulatedNsm(mesh.ca, image="tampered-image"))

    def inside_enclaves() -> tuple[dict[str, Any], str]:
        with FrameClient.connect(str(tmp_path / "proxy.sock")) as parent:
            enclave.acquire_data_key(parent, mesh.key.name, key_ref="records", encryption_context=CONTEXT,
                                     wrapped_key=wrapped)
            fresh = enclave.acquire_data_key(parent, "aliases/enclave-records", key_ref="fresh")
            assert fresh == "fresh"
            result = dict(enclave.decrypt_with("records", record))
            with pytest.raises(RemoteError) as refused:
                impostor.acquire_data_key(parent, mesh.key.name, encryption_context=CONTEXT, wrapped_key=wrapped)
            return result, f"{refused.value.code} {refused.value.message}"

    try:
        result, refusal = await asyncio.to_thread(inside_enclaves)
    finally:
        server.close()
    assert result["length"] == len(b"patient 18")
    assert refusal == "PERMISSION_DENIED ATTESTATION_REJECTED (PCR_MISMATCH)"


async def test_untrusted_enclaves_and_replays_are_refused_with_reasons(mesh: Mesh) -> None:
    request = pb.GenerateDataKeyRequest(key=mesh.key.name)

    def with_document(document: bytes, public_key: bytes = b"") -> pb.GenerateDataKeyRequest:
        copy = pb.GenerateDataKeyRequest()
        copy.CopyFrom(request)
        copy.recipient.CopyFrom(pb.Recipient(attestation_document=document, public_key=public_key))
        return copy

    debug = EnclaveApp(SimulatedNsm(mesh.ca, debug=True))
    debug_document = await _document(mesh, debug)
    code, reason, refusals = await _refusal(mesh.broker.stub.GenerateDataKey(with_document(debug_document)))
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "ATTESTATION_REJECTED") and "DEBUG_ENCLAVE" in refusals
    other = EnclaveApp(SimulatedNsm(mesh.ca, image="other-image"))
    assert await _refusal(mesh.broker.stub.GenerateDataKey(with_document(await _document(mesh, other)))) == (
        grpc.StatusCode.PERMISSION_DENIED, "ATTESTATION_REJECTED", "PCR_MISMATCH")
    good = EnclaveApp(SimulatedNsm(mesh.ca))
    document = await _document(mesh, good)
    ok = await mesh.broker.stub.GenerateDataKey(with_document(document))
    assert len(good.unwrap_data_key(ok.ciphertext_for_recipient, FORMAT_RSAES_OAEP)) == 32 and not ok.plaintext
    assert await _refusal(mesh.broker.stub.GenerateDataKey(with_document(document))) == (
        grpc.StatusCode.PERMISSION_DENIED, "ATTESTATION_REJECTED", "NONCE_REPLAYED")
    stale = good.attest(b"n" * 32)  # a nonce the verifier never issued (or that expired)
    assert await _refusal(mesh.broker.stub.GenerateDataKey(with_document(stale))) == (
        grpc.StatusCode.PERMISSION_DENIED, "ATTESTATION_REJECTED", "NONCE_UNKNOWN")
    assert (await _refusal(mesh.broker.stub.GenerateDataKey(with_document(
        await _document(mesh, good), EnclaveApp(SimulatedNsm(mesh.ca)).public_key_der))))[1] == "RECIPIENT_KEY_MISMATCH"
    # The broker's own PCR condition applies even where the verifier policy accepts.
    await mesh.broker.stub.PutKeyPolicy(pb.PutKeyPolicyRequest(key=mesh.key.name, policy=enclave_policy(
        allowed_pcr_sets=[pb.PcrSet(pcrs={0: b"\x01" * 48})])))
    assert await _refusal(mesh.broker.stub.GenerateDataKey(with_document(await _document(mesh, good)))) == (
        grpc.StatusCode.PERMISSION_DENIED, "ATTESTATION_REJECTED", "PCR_MISMATCH")
    outcomes = [(op, outcome, d.get("reason")) for _, op, _, outcome, d in mesh.broker.audit() if op ==
                "GenerateDataKey"]
    assert outcomes.count(("GenerateDataKey", "DENIED", "ATTESTATION_REJECTED")) == 5


async def test_result_tokens_are_verified_offline_against_the_verifiers_keys(mesh: Mesh) -> None:
    enclave = EnclaveApp(SimulatedNsm(mesh.ca))
    verdict = await mesh.verifier.VerifyAttestation(apb.VerifyAttestationRequest(
        document=await _document(mesh, enclave), policy="enclave", audience=BROKER_ID))
    token = verdict.result_token
    reply = await mesh.broker.stub.GenerateDataKey(pb.GenerateDataKeyRequest(
        key=mesh.key.name, recipient=pb.Recipient(attestation_result_token=token)))
    assert len(enclave.unwrap_data_key(reply.ciphertext_for_recipient, FORMAT_RSAES_OAEP)) == 32
    again = await mesh.broker.stub.GenerateDataKey(pb.GenerateDataKeyRequest(  # a token may be presented again
        key=mesh.key.name, recipient=pb.Recipient(attestation_result_token=token)))
    assert again.ciphertext_for_recipient
    foreign = await mesh.verifier.VerifyAttestation(apb.VerifyAttestationRequest(
        document=await _document(mesh, enclave), policy="enclave", audience=spiffe("someone-else")))
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    for bad in (foreign.result_token, tampered):
        assert (await _refusal(mesh.broker.stub.GenerateDataKey(pb.GenerateDataKeyRequest(
            key=mesh.key.name, recipient=pb.Recipient(attestation_result_token=bad)))))[:2] == (
            grpc.StatusCode.PERMISSION_DENIED, "ATTESTATION_TOKEN_INVALID")


async def test_a_release_whose_wrapping_fails_is_audited_as_a_failure(mesh: Mesh,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from privmesh.keybroker import service

    _, wrapped, _ = await mesh.broker.bob.generate_data_key(mesh.key.name, CONTEXT)
    enclave = EnclaveApp(SimulatedNsm(mesh.ca))
    document = await _document(mesh, enclave)

    def broken_wrap(public_key_der: bytes, data_key: bytes) -> bytes:
        raise ValueError("the recipient key cannot be used")  # as a failing RSA implementation would

    monkeypatch.setattr(service, "encrypt_for_recipient", broken_wrap)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mesh.broker.stub.Decrypt(pb.DecryptRequest(
            ciphertext_blob=wrapped, encryption_context=CONTEXT,
            recipient=pb.Recipient(attestation_document=document, public_key=enclave.public_key_der)))
    assert read_error(caught.value).reason == "RECIPIENT_WRAP_FAILED"
    decrypts = [(outcome, d.get("reason")) for _, op, _, outcome, d in mesh.broker.audit() if op == "Decrypt"]
    assert decrypts == [("FAILURE", "RECIPIENT_WRAP_FAILED")]  # no SUCCESS entry for a key never released
