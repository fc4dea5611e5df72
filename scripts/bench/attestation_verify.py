"""Attestation documents verified per second through the attestation-verifier service, against the cost of
the cryptographic checks alone (the chain's four signatures and the COSE signature, done directly with
cryptography) in the same run.

The document is a simulated Nitro document (same format and chain shape as AWS's), verified under a policy
without nonce so one document can be sent repeatedly; the service runs in its own process with mTLS,
authorization, audit and metrics. Last line: `ratio: <service docs/s / crypto-only docs/s>` (goal >= 0.5).

Usage: .venv/bin/python scripts/bench/attestation_verify.py [--seconds 10] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import tempfile
import time
from pathlib import Path

import cbor2
from benchkit import RunningService, serve_in_process
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from privmesh.attestation.v1 import attestation_pb2 as pb
from privmesh.attestation.v1 import attestation_pb2_grpc
from privmesh.enclave.app import EnclaveApp
from privmesh.enclave.simulator import DEFAULT_IMAGE, DevCa, SimulatedNsm, image_pcrs
from privmesh.runtime.client import secure_channel


def crypto_only(document: bytes) -> None:
    """The five signature checks, nothing else: the floor any verifier pays per document."""
    envelope = cbor2.loads(document)
    protected, _, payload, signature = envelope
    fields = cbor2.loads(payload)
    chain = [x509.load_der_x509_certificate(d) for d in [fields["certificate"], *reversed(fields["cabundle"])]]
    for child, issuer in itertools.pairwise(chain):
        key = issuer.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        key.verify(child.signature, child.tbs_certificate_bytes, ec.ECDSA(hashes.SHA384()))
    leaf_key = chain[0].public_key()
    assert isinstance(leaf_key, ec.EllipticCurvePublicKey)
    der = encode_dss_signature(int.from_bytes(signature[:48], "big"), int.from_bytes(signature[48:], "big"))
    leaf_key.verify(der, cbor2.dumps(["Signature1", protected, b"", payload]), ec.ECDSA(hashes.SHA384()))


def measure_crypto(document: bytes, seconds: float) -> float:
    done, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        crypto_only(document)
        done += 1
    return done / (time.perf_counter() - began)


async def measure_service(service: RunningService, document: bytes, seconds: float, concurrency: int) -> float:
    async with secure_channel(service.target, service.identity, peer=service.peer) as channel:
        stub = attestation_pb2_grpc.AttestationVerifierStub(channel)
        policy = pb.Policy(name="bench", require_nonce=False,
                           allowed_pcr_sets=[pb.PcrSet(pcrs=image_pcrs(DEFAULT_IMAGE))])
        await stub.PutPolicy(pb.PutPolicyRequest(policy=policy))
        request = pb.VerifyAttestationRequest(document=document, policy="bench")
        first = await stub.VerifyAttestation(request)
        assert first.verdict == pb.VERDICT_ACCEPTED, first.refusals
        done = 0
        stop_at = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < stop_at:
                reply = await stub.VerifyAttestation(request)
                assert reply.verdict == pb.VERDICT_ACCEPTED
                done += 1

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        ca = DevCa.generate()
        (tmp / "root.pem").write_bytes(ca.root_pem)
        document = EnclaveApp(SimulatedNsm(ca)).attest(None)
        settings = {"database": f"sqlite:///{tmp / 'att.db'}", "token_signing_key_file": str(tmp / "t.pem"),
                    "dev_root_files": [str(tmp / "root.pem")]}
        with serve_in_process("privmesh.attestation.server:DEFINITION", tmp,
                              ["privmesh.attestation.v1.AttestationVerifier/*"], settings) as running:
            half = args.seconds / 2
            crypto_a = measure_crypto(document, half / 2)
            service = asyncio.run(measure_service(running, document, half, args.concurrency))
            crypto_b = measure_crypto(document, half / 2)
    crypto = (crypto_a + crypto_b) / 2
    print(f"document {len(document)} B, {args.concurrency} concurrent callers")
    print(f"crypto checks alone (4 chain signatures + COSE, one core): {crypto:8.0f} docs/s")
    print(f"through the service (mTLS, authz, policy, audit):          {service:8.0f} docs/s")
    print(f"ratio: {service / crypto:.3f}")


if __name__ == "__main__":
    main()
