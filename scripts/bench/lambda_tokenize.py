"""A 100-value Tokenize through the serverless vault's Lambda handler, run for real under the AWS Lambda Runtime
Interface Emulator (aws-lambda-rie + awslambdaric) against moto's DynamoDB and KMS servers on loopback, beside
the token-vault gRPC service (its own process, SQLite, key-broker, mTLS) serving the same batches in the same
run: the handler's cold start (first invocation, initialization included) and warm p50/p99, the service's p50.

Both sides tokenize fresh random-profile values (every call stores 100 new entries) behind the same policy,
audit and key caching. The emulator adds an HTTP hop and JSON (the Invoke API), the gRPC side protobuf over TLS.

Last line: `ratio: <Lambda warm p50 / gRPC p50>`.

Usage: .venv/bin/python scripts/bench/lambda_tokenize.py [--calls 60]   (needs scripts/dev/lambda-rie.sh)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.duration_pb2 import Duration

from privmesh.keybroker.policy import ADMIN_OPERATIONS
from privmesh.keybroker.v1 import keybroker_pb2 as kb
from privmesh.mesh.catalog import CATALOG
from privmesh.mesh.local import LocalMesh, MeshLayout
from privmesh.runtime.client import secure_channel
from privmesh.sdk.keybroker.client import SERVICES as KEYBROKER_SERVICES
from privmesh.sdk.keybroker.client import KeyBrokerClient, allow
from privmesh.serverless.local import Emulator
from privmesh.tokenvault.dynamo import create_table
from privmesh.tokenvault.v1 import tokenvault_pb2 as pb
from privmesh.tokenvault.v1 import tokenvault_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
RIE = ROOT / ".tools" / "bin" / "aws-lambda-rie"
BATCH = 100
TENANT = "tenants/bench"
REGION = "us-east-1"
CALLER = "arn:aws:sts::123456789012:assumed-role/bench/session"
PRINCIPAL = "spiffe://privmesh.local/ns/aws-123456789012/sa/bench"


def values() -> list[str]:
    return [f"{secrets.randbelow(10 ** 16):016d}" for _ in range(BATCH)]


def event(method: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"version": "2.0", "rawPath": f"/v1/{method}", "body": json.dumps(body), "isBase64Encoded": False,
            "requestContext": {"http": {"method": "POST"}, "authorizer": {"iam": {"userArn": CALLER}}}}


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def lambda_side(tmp: Path, calls: int) -> tuple[float, list[float]]:
    """(cold start ms, warm latencies ms) of the handler under the emulator."""
    from moto.server import ThreadedMotoServer

    credentials = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}
    os.environ.update(credentials)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        create_table(boto3.client("dynamodb", endpoint_url=endpoint, region_name=REGION), "bench")
        kms = boto3.client("kms", endpoint_url=endpoint, region_name=REGION)
        kms.create_alias(AliasName="alias/bench", TargetKeyId=kms.create_key()["KeyMetadata"]["KeyId"])
        policy = tmp / "policy.yaml"
        policy.write_text(yaml.safe_dump({"rules": [{"name": "bench", "principals": [PRINCIPAL],
                                                     "methods": ["privmesh.tokenvault.v1.TokenVault/*"]}]}))
        key = Ed25519PrivateKey.generate().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()).decode()
        env = {"PRIVMESH_TABLE": "bench", "PRIVMESH_REGION": REGION, "PRIVMESH_DYNAMODB_ENDPOINT": endpoint,
               "PRIVMESH_KMS_ENDPOINT": endpoint, "PRIVMESH_AUTHZ_POLICY": str(policy),
               "PRIVMESH_AUDIT_DATABASE": f"sqlite:///{tmp / 'lambda-audit.db'}", "PRIVMESH_AUDIT_SIGNING_KEY": key,
               "PRIVMESH_CACHE_MAX_AGE_SECONDS": "600", "PRIVMESH_CACHE_MAX_MESSAGES": "10000000", **credentials}
        with Emulator(RIE, "privmesh.serverless.handler.tokenvault", env, tmp / "rie.log", cwd=ROOT) as function:
            began = time.perf_counter()
            created = function.invoke(event("CreateField", {"parent": TENANT, "fieldId": "random", "field": {
                "profile": {"random": {}}, "key": "aliases/bench"}}))
            cold = (time.perf_counter() - began) * 1000
            assert created["statusCode"] == 200, created
            warm = []
            for _ in range(calls + 1):
                body = {"parent": TENANT, "items": [{"field": "random", "value": v} for v in values()]}
                began = time.perf_counter()
                reply = function.invoke(event("Tokenize", body))
                warm.append((time.perf_counter() - began) * 1000)
                assert reply["statusCode"] == 200 and len(json.loads(reply["body"])["results"]) == BATCH
        return cold, warm[1:]  # the first Tokenize also fetches the field's secret and a data key from KMS
    finally:
        server.stop()


async def grpc_side(layout: MeshLayout, targets: dict[str, str], calls: int) -> list[float]:
    admin = layout.identity("admin")
    async with secure_channel(targets["key-broker"], admin, KEYBROKER_SERVICES,
                              peer=layout.pki.spiffe_id("key-broker")) as channel:
        policy = kb.KeyPolicy(statements=[allow([layout.pki.spiffe_id("admin")], ADMIN_OPERATIONS),
                                          allow([layout.pki.spiffe_id("token-vault")],
                                                [kb.KEY_OPERATION_GENERATE_DATA_KEY, kb.KEY_OPERATION_DECRYPT])])
        await KeyBrokerClient(channel).create_key(alias="bench", policy=policy, caching=kb.DataKeyCaching(
            max_age=Duration(seconds=600), max_messages=10_000_000))
    async with secure_channel(targets["token-vault"], admin, [pb.DESCRIPTOR.services_by_name["TokenVault"]],
                              timeout_seconds=60, peer=layout.pki.spiffe_id("token-vault")) as channel:
        stub = tokenvault_pb2_grpc.TokenVaultStub(channel)
        await stub.CreateField(pb.CreateFieldRequest(parent=TENANT, field_id="random", field=pb.Field(
            profile=pb.TokenProfile(random=pb.RandomProfile()), key="aliases/bench")))
        latencies = []
        for _ in range(calls + 1):
            request = pb.TokenizeRequest(parent=TENANT, items=[pb.TokenizeItem(field="random", value=v)
                                                               for v in values()])
            began = time.perf_counter()
            reply = await stub.Tokenize(request)
            latencies.append((time.perf_counter() - began) * 1000)
            assert len(reply.results) == BATCH
        return latencies[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=60, help="warm Tokenize calls of 100 values on each side")
    args = parser.parse_args()
    if not RIE.exists():
        raise SystemExit("aws-lambda-rie is missing: run scripts/dev/lambda-rie.sh")
    specs = tuple(s for s in CATALOG if s.name in ("key-broker", "token-vault"))
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        layout = MeshLayout(tmp / "mesh")
        mesh = LocalMesh(layout, specs)
        endpoints = asyncio.run(mesh.start())
        try:
            grpc_ms = asyncio.run(grpc_side(layout, {e.service: e.target for e in endpoints}, args.calls))
        finally:
            mesh.stop()
        cold, warm = lambda_side(tmp, args.calls)
    grpc_p50, warm_p50 = statistics.median(grpc_ms), statistics.median(warm)
    print(f"Tokenize of {BATCH} random-profile values, {args.calls} warm calls per side")
    print(f"Lambda (aws-lambda-rie, moto DynamoDB + KMS) cold start, first invoke: {cold:8.1f} ms")
    print(f"Lambda warm p50:                                                 {warm_p50:8.1f} ms")
    print(f"Lambda warm p99:                                                 {percentile(warm, 0.99):8.1f} ms")
    print(f"gRPC token-vault (SQLite, key-broker, mTLS) p50:                 {grpc_p50:8.1f} ms")
    print(f"gRPC p99:                                                        {percentile(grpc_ms, 0.99):8.1f} ms")
    print(f"ratio: {warm_p50 / grpc_p50:.3f}")


if __name__ == "__main__":
    main()
