"""Attested release on the aws-kms backend, end to end on loopback: a real attestation-verifier, the key broker,
and KMS (moto behind kms_stand_in.py, which answers Recipient with a CMS EnvelopedData as KMS does). An
attested Decrypt is one KMS call, with KeyId and Recipient; the plaintext data key never reaches the broker
(the backend returns only the CMS); the enclave opens the CMS inside. The demo's key-release step runs once
on this backend."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from privmesh.attestation import server as attestation_server
from privmesh.attestation.v1 import attestation_pb2 as apb
from privmesh.attestation.v1 import attestation_pb2_grpc
from privmesh.demo.context import DemoContext
from privmesh.demo.keybroker_step import VERIFIER_POLICY, key_release
from privmesh.enclave.app import EnclaveApp, encrypt_record
from privmesh.enclave.simulator import DEFAULT_IMAGE, DevCa, SimulatedNsm, image_pcrs
from privmesh.keybroker import server as keybroker_server
from privmesh.keybroker.backends.aws_kms import AwsKmsBackend
from privmesh.keybroker.backends.base import KeyRef
from privmesh.keybroker.v1 import keybroker_pb2 as pb
from privmesh.keybroker.v1 import keybroker_pb2_grpc
from privmesh.mesh.local import MeshLayout
from privmesh.runtime.client import secure_channel
from privmesh.runtime.pki import DevPki
from privmesh.sdk.enclave.vsock import FORMAT_CMS
from privmesh.sdk.keybroker.client import SERVICES, KeyBrokerClient
from tests.conftest import identity, server_config, spiffe
from tests.keybroker.conftest import RULES, broker_settings
from tests.keybroker.kms_stand_in import KmsStandIn
from tests.keybroker.test_attested_release import VERIFIER, VERIFIER_RULES, enclave_policy

REGION = "eu-west-1"
CONTEXT = {"dataset": "patients"}
DEMO_RULES = [*RULES, {"name": "demo", "principals": [spiffe("admin"), spiffe("demo-client")],
                       "methods": ["privmesh.keybroker.v1.KeyBroker/*"]}]


@dataclass
class KmsMesh:
    broker: KeyBrokerClient  # alice
    stub: keybroker_pb2_grpc.KeyBrokerStub  # alice's
    bob: KeyBrokerClient
    verifier: attestation_pb2_grpc.AttestationVerifierStub  # alice's
    ca: DevCa
    kms: KmsStandIn
    endpoint: str
    broker_target: str
    verifier_target: str


@pytest.fixture
async def kms_mesh(start_server: Callable[..., Any], pki: DevPki, tmp_path: Path, aws_credentials: None,
                   kms_stand_in: tuple[str, KmsStandIn]) -> AsyncIterator[KmsMesh]:
    ca = DevCa.load_or_create(tmp_path / "sim")
    (tmp_path / "sim-root.pem").write_bytes(ca.root_pem)
    (tmp_path / "verifier").mkdir()
    rules = [*VERIFIER_RULES, {"name": "demo", "principals": [spiffe("admin"), spiffe("demo-client")],
                               "methods": [f"{VERIFIER}/*"]}]
    verifier_server = await start_server(attestation_server.DEFINITION, server_config(
        tmp_path / "verifier", pki, rules,
        {"database": f"sqlite:///{tmp_path / 'verifier' / 'a.db'}", "dev_root_files": [str(tmp_path / 'sim-root.pem')],
         "token_signing_key_file": str(tmp_path / "verifier" / "token.pem")}))
    verifier_target = f"127.0.0.1:{verifier_server.port}"
    (tmp_path / "broker").mkdir()
    endpoint, stand_in = kms_stand_in
    settings = broker_settings(tmp_path / "broker", default_backend="aws-kms",
                               aws_kms={"region": REGION, "endpoint_url": endpoint},
                               attestation={"verifier_target": verifier_target,
                                            "verifier_identity": spiffe("server")})
    broker_server = await start_server(keybroker_server.DEFINITION,
                                       server_config(tmp_path / "broker", pki, DEMO_RULES, settings))
    broker_target = f"127.0.0.1:{broker_server.port}"
    async with secure_channel(verifier_target, identity(pki, "alice"), peer=spiffe("server")) as verifier_channel, \
            secure_channel(broker_target, identity(pki, "alice"), SERVICES, peer=spiffe("server")) as alice, \
            secure_channel(broker_target, identity(pki, "bob"), SERVICES, peer=spiffe("server")) as bob:
        verifier = attestation_pb2_grpc.AttestationVerifierStub(verifier_channel)
        await verifier.PutPolicy(apb.PutPolicyRequest(policy=apb.Policy(
            name="enclave", require_public_key=True, allowed_pcr_sets=[apb.PcrSet(pcrs=image_pcrs(DEFAULT_IMAGE))])))
        yield KmsMesh(KeyBrokerClient(alice), keybroker_pb2_grpc.KeyBrokerStub(alice), KeyBrokerClient(bob),
                      verifier, ca, stand_in, endpoint, broker_target, verifier_target)


async def _document(mesh: KmsMesh, enclave: EnclaveApp) -> bytes:
    return enclave.attest((await mesh.verifier.IssueChallenge(apb.IssueChallengeRequest())).nonce)


async def test_attested_decrypt_is_one_kms_call_with_recipient_and_the_enclave_opens_the_cms(
        kms_mesh: KmsMesh) -> None:
    key = await kms_mesh.broker.create_key(alias="kms-enclave", policy=enclave_policy(
        allowed_pcr_sets=[pb.PcrSet(pcrs=image_pcrs(DEFAULT_IMAGE))]))
    assert key.backend == pb.KEY_BACKEND_AWS_KMS
    plaintext, wrapped, _ = await kms_mesh.bob.generate_data_key(key.name, CONTEXT)
    record = encrypt_record(plaintext, b"patient 21: LDL 131")
    enclave = EnclaveApp(SimulatedNsm(kms_mesh.ca))
    document = await _document(kms_mesh, enclave)
    before = len(kms_mesh.kms.operations("Decrypt"))
    reply = await kms_mesh.stub.Decrypt(pb.DecryptRequest(ciphertext_blob=wrapped, encryption_context=CONTEXT,
                                                          key=key.name,
                                                          recipient=pb.Recipient(attestation_document=document)))
    calls = kms_mesh.kms.operations("Decrypt")[before:]
    assert len(calls) == 1 and calls[0]["KeyId"] == key.key_id and "Recipient" in calls[0]
    assert calls[0]["Recipient"]["KeyEncryptionAlgorithm"] == "RSAES_OAEP_SHA_256"
    assert not reply.plaintext and reply.ciphertext_format == pb.RECIPIENT_CIPHERTEXT_FORMAT_CMS_ENVELOPED_DATA
    assert plaintext not in reply.ciphertext_for_recipient
    enclave.store_key("records", enclave.unwrap_data_key(reply.ciphertext_for_recipient, FORMAT_CMS))
    assert enclave.decrypt_with("records", record)["length"] == len(b"patient 21: LDL 131")
    # attested GenerateDataKey: one KMS call with Recipient, the enclave opens its fresh key
    before = len(kms_mesh.kms.operations("GenerateDataKey"))
    fresh = await kms_mesh.stub.GenerateDataKey(pb.GenerateDataKeyRequest(
        key=key.name, recipient=pb.Recipient(attestation_document=await _document(kms_mesh, enclave))))
    calls = kms_mesh.kms.operations("GenerateDataKey")[before:]
    assert len(calls) == 1 and "Recipient" in calls[0] and not fresh.plaintext
    assert len(enclave.unwrap_data_key(fresh.ciphertext_for_recipient, FORMAT_CMS)) == 32


def test_the_backend_returns_no_plaintext_on_the_recipient_path(kms_stand_in: tuple[str, KmsStandIn],
                                                                aws_credentials: None, tmp_path: Path) -> None:
    """Through the backend interface: what decrypt_for_recipient and generate_for_recipient return is the
    CMS for the enclave, not the data key."""
    endpoint, stand_in = kms_stand_in
    backend = AwsKmsBackend(REGION, endpoint, 5.0)
    ref = backend.create_key("ignored", "recipient path", external=False)
    plaintext, blob = backend.generate_data_key(ref, 1, CONTEXT)
    enclave = EnclaveApp(SimulatedNsm(DevCa.load_or_create(tmp_path / "sim")))
    released = backend.decrypt_for_recipient(KeyRef(ref.key_id, ref.arn), blob, CONTEXT, enclave.attest(b"n" * 32))
    assert plaintext not in released and len(released) > 2 * len(plaintext)
    assert stand_in.calls[-1][0] == "Decrypt" and stand_in.calls[-1][1]["KeyId"] == ref.key_id
    assert enclave.unwrap_data_key(released, FORMAT_CMS) == plaintext
    wrapped, fresh = backend.generate_for_recipient(ref, CONTEXT, enclave.attest(b"m" * 32))
    assert enclave.unwrap_data_key(fresh, FORMAT_CMS) == backend.unwrap(ref, wrapped, CONTEXT)[0]


async def test_the_demo_key_release_step_runs_on_aws_kms(kms_mesh: KmsMesh, pki: DevPki, tmp_path: Path) -> None:
    for name in ("admin", "demo-client"):
        pki.issue(name)
    layout = MeshLayout(tmp_path / "mesh")
    layout.pki = pki
    out = io.StringIO()
    ctx = DemoContext(layout, Console(file=out, width=200), {"key-broker": kms_mesh.broker_target,
                                                             "attestation-verifier": kms_mesh.verifier_target},
                      tmp_path, {"key-broker": spiffe("server"), "attestation-verifier": spiffe("server")})
    await kms_mesh.verifier.PutPolicy(apb.PutPolicyRequest(policy=apb.Policy(
        name=VERIFIER_POLICY, require_public_key=True,
        allowed_pcr_sets=[apb.PcrSet(pcrs=image_pcrs(DEFAULT_IMAGE))])))
    before = len(kms_mesh.kms.operations("Decrypt"))
    await asyncio.wait_for(key_release(ctx, kms_mesh.ca), timeout=120)
    text = out.getvalue()
    assert "enclave unwrapped its data key inside and decrypted the record" in text
    assert "ATTESTATION_REQUIRED" in text and "crypto-shredding" in text
    calls = kms_mesh.kms.operations("Decrypt")[before:]
    # the genuine enclave's release only: the impostor and the plain caller were refused before any KMS call
    assert len(calls) == 1 and "Recipient" in calls[0]
