"""Step 5, key release: the operator creates a key whose policy releases data keys only to the attested demo
enclave; a hospital encrypts a record under a data key; the simulated enclave, through its parent proxy,
attests and receives that data key wrapped to its own public key, unwraps it inside and decrypts the record.
The same caller without attestation, an enclave running another image, and a destroyed key are refused."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc

from privmesh.attestation.v1 import attestation_pb2_grpc
from privmesh.demo.context import CALL_TIMEOUT, DemoContext, expect
from privmesh.enclave.app import EnclaveApp, encrypt_record
from privmesh.enclave.simulator import DEFAULT_IMAGE, DevCa, SimulatedNsm, image_pcrs
from privmesh.keybroker.enclave_proxy import EnclaveKeyProxy
from privmesh.keybroker.policy import ADMIN_OPERATIONS, AUDIT_OPERATIONS
from privmesh.keybroker.v1 import keybroker_pb2 as pb
from privmesh.runtime.client import secure_channel
from privmesh.runtime.errors import read_error
from privmesh.sdk.enclave.vsock import FrameClient, RemoteError, serve_proxy
from privmesh.sdk.keybroker.client import SERVICES, KeyBrokerClient, allow

VERIFIER_POLICY = "demo-enclave"
CONTEXT = {"dataset": "patients", "purpose": "enclave-analytics"}
RECORD = b"patient 0042: HbA1c 6.4, LDL 131"


async def key_release(ctx: DemoContext, ca: DevCa) -> None:
    admin_id, client_id = ctx.layout.pki.spiffe_id("admin"), ctx.layout.pki.spiffe_id("demo-client")
    attested = pb.PolicyConditions(attestation=pb.AttestationCondition(
        verifier_policy=VERIFIER_POLICY, allowed_pcr_sets=[pb.PcrSet(pcrs=image_pcrs(DEFAULT_IMAGE))]))
    policy = pb.KeyPolicy(statements=[
        allow([admin_id], ADMIN_OPERATIONS, "operator"),
        allow([ctx.layout.pki.spiffe_id("auditor")], AUDIT_OPERATIONS, "auditor-reads"),
        allow([client_id], [pb.KEY_OPERATION_GENERATE_DATA_KEY], "hospital-encrypts"),
        allow([client_id], [pb.KEY_OPERATION_DECRYPT], "enclave-only", attested)])
    target = ctx.targets["key-broker"]
    async with secure_channel(target, ctx.layout.identity("admin"), SERVICES,
                              timeout_seconds=CALL_TIMEOUT, peer=ctx.peers["key-broker"]) as admin_channel, \
            secure_channel(target, ctx.layout.identity("demo-client"), SERVICES,
                           timeout_seconds=CALL_TIMEOUT, peer=ctx.peers["key-broker"]) as channel, \
            secure_channel(ctx.targets["attestation-verifier"], ctx.layout.identity("demo-client"),
                           timeout_seconds=CALL_TIMEOUT, peer=ctx.peers["attestation-verifier"]) as verifier:
        operator = KeyBrokerClient(admin_channel)
        key = await operator.create_key(description="demo: records readable only inside the enclave",
                                        policy=policy, request_id=str(uuid.uuid4()))
        ctx.console.print(f"   operator created {key.name}: Decrypt only for attested {DEFAULT_IMAGE!r} enclaves")
        hospital = KeyBrokerClient(channel)
        plaintext, wrapped, _ = await hospital.generate_data_key(key.name, CONTEXT)
        record = encrypt_record(plaintext, RECORD)
        del plaintext
        proxy = EnclaveKeyProxy(attestation_pb2_grpc.AttestationVerifierStub(verifier), hospital.stub,
                                asyncio.get_running_loop())
        server = serve_proxy(("127.0.0.1", 0), proxy.handle)
        enclave = EnclaveApp(SimulatedNsm(ca))
        impostor = EnclaveApp(SimulatedNsm(ca, image="tampered-image"))

        def inside() -> tuple[dict[str, Any], str]:
            with FrameClient.connect(tuple(server.address)) as parent:
                enclave.acquire_data_key(parent, key.name, key_ref="records", encryption_context=CONTEXT,
                                         wrapped_key=wrapped)
                result = dict(enclave.decrypt_with("records", record))
                try:
                    impostor.acquire_data_key(parent, key.name, encryption_context=CONTEXT, wrapped_key=wrapped)
                except RemoteError as exc:
                    return result, f"{exc.code} {exc.message}"
                return result, "released"

        try:
            result, impostor_outcome = await asyncio.to_thread(inside)
        finally:
            server.close()
        expect(result.get("length") == len(RECORD), "the enclave did not decrypt the record")
        ctx.console.print(f"   enclave unwrapped its data key inside and decrypted the record "
                          f"({result['length']} bytes, sha256 {str(result['sha256'])[:16]}…)")
        expect(impostor_outcome.startswith("PERMISSION_DENIED"), "an enclave running another image got the key")
        ctx.console.print(f"   enclave running another image refused: {impostor_outcome}")
        try:
            await hospital.decrypt(wrapped, CONTEXT, key=key.name)
        except grpc.aio.AioRpcError as exc:
            error = read_error(exc)
            expect(error.reason == "ATTESTATION_REQUIRED", f"unexpected refusal {error.reason}")
            ctx.console.print(f"   the same caller without attestation refused: {error.code.name} {error.reason}")
        else:
            raise AssertionError("a plain caller received the enclave's data key")
        await operator.stub.ScheduleKeyDeletion(pb.ScheduleKeyDeletionRequest(name=key.name,
                                                                              waiting_period={"seconds": 0}))
        shredded = await operator.get_key(key.name)
        expect(shredded.state == pb.KEY_STATE_DESTROYED, "the key was not destroyed")
        ctx.console.print("   key destroyed (crypto-shredding): the record can no longer be decrypted by anyone")
