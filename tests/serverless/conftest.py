"""Fixtures: moto's KMS, DynamoDB and S3 in server mode on loopback, and the serverless vault's handlers running
for real under the AWS Lambda Runtime Interface Emulator (scripts/dev/lambda-rie.sh) with awslambdaric."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from privmesh.serverless.local import Emulator
from privmesh.tokenvault.dynamo import create_table

ROOT = Path(__file__).resolve().parents[2]
RIE = ROOT / ".tools" / "bin" / "aws-lambda-rie"
REGION = "us-east-1"
ACCOUNT = "123456789012"
TV = "privmesh.tokenvault.v1.TokenVault"
TRUST = "privmesh.local"


def role_arn(name: str) -> str:
    return f"arn:aws:sts::{ACCOUNT}:assumed-role/{name}/session-1"


def principal(name: str) -> str:
    return f"spiffe://{TRUST}/ns/aws-{ACCOUNT}/sa/{name}"


POLICY = {"rules": [
    {"name": "admin", "principals": [principal("vault-admin")], "methods": [f"{TV}/*"]},
    {"name": "admin-plaintext", "principals": [principal("vault-admin")], "methods": [f"{TV}/Detokenize"],
     "resources": ["tenants/*/fields/*:plaintext"]},
    {"name": "pipeline", "principals": [principal("pipeline"), principal("s3-batch")],
     "methods": [f"{TV}/Tokenize"], "resources": ["tenants/acme/fields/*"]},
    {"name": "analyst", "principals": [principal("analyst")], "methods": [f"{TV}/Detokenize", f"{TV}/Tokenize"],
     "resources": ["tenants/acme/fields/*"]},
]}


@dataclass
class Aws:
    endpoint: str
    kms: Any
    dynamodb: Any
    s3: Any


@pytest.fixture(scope="module")
def aws(moto_server: str) -> Aws:
    """moto's KMS, DynamoDB and S3 (tests/conftest.py's moto server) and clients for them."""
    return Aws(moto_server, *(boto3.client(s, endpoint_url=moto_server, region_name=REGION)
                              for s in ("kms", "dynamodb", "s3")))


@dataclass
class Stack:
    """One deployment: its table, KMS key, bucket, audit database, and the environment of its functions."""

    aws: Aws
    table: str
    bucket: str
    key_arn: str
    env: dict[str, str]
    tmp: Path

    def audit(self) -> list[tuple[str, str, str, dict[str, str]]]:
        import sqlite3

        with sqlite3.connect(self.tmp / "audit.db") as conn:
            rows = conn.execute("SELECT principal, operation, outcome, details FROM audit_entries "
                                "ORDER BY sequence").fetchall()
        return [(r[0], r[1], r[2], json.loads(r[3])) for r in rows]


def make_stack(aws: Aws, tmp: Path, name: str, audit_key: Path | None = None, audit_db: Path | None = None) -> Stack:
    table, bucket = f"vault-{name}", f"batches-{name}"
    create_table(aws.dynamodb, table)
    aws.s3.create_bucket(Bucket=bucket)
    key = aws.kms.create_key(Description="token-vault")["KeyMetadata"]
    aws.kms.create_alias(AliasName=f"alias/vault-{name}", TargetKeyId=key["KeyId"])
    if audit_key is None:
        audit_key = tmp / "audit-signing.pem"
        audit_key.write_bytes(Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    policy = tmp / "policy.yaml"
    policy.write_text(yaml.safe_dump(POLICY))
    env = {"PRIVMESH_TABLE": table, "PRIVMESH_REGION": REGION, "PRIVMESH_DYNAMODB_ENDPOINT": aws.endpoint,
           "PRIVMESH_KMS_ENDPOINT": aws.endpoint, "PRIVMESH_S3_ENDPOINT": aws.endpoint,
           "PRIVMESH_AUTHZ_POLICY": str(policy), "PRIVMESH_DIRECT_PRINCIPAL": principal("pipeline"),
           "PRIVMESH_S3_PRINCIPAL": principal("s3-batch"),
           "PRIVMESH_AUDIT_DATABASE": f"sqlite:///{audit_db or tmp / 'audit.db'}",
           "PRIVMESH_AUDIT_SIGNING_KEY": audit_key.read_text(), "PRIVMESH_AUDIT_CHECKPOINT_EVERY": "5",
           "PRIVMESH_TIMEOUT_SECONDS": "60",
           "PRIVMESH_MAX_BATCH_ITEMS": "200", "PRIVMESH_MAX_FILE_BYTES": "65536",
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}
    return Stack(aws, table, bucket, key["Arn"], env, tmp)


@pytest.fixture(scope="module")
def rie() -> Path:
    assert RIE.exists(), "run scripts/dev/lambda-rie.sh first (scripts/dev/test.sh does)"
    return RIE


@pytest.fixture
def emulators(rie: Path, tmp_path: Path) -> Iterator[Callable[..., Emulator]]:
    started: list[Emulator] = []

    def start(stack: Stack, handler: str = "privmesh.serverless.handler.tokenvault") -> Emulator:
        emulator = Emulator(rie, handler, stack.env, tmp_path / "rie.log", cwd=ROOT)
        started.append(emulator)
        return emulator

    yield start
    for emulator in started:
        emulator.close()


def http_event(method: str, body: Any, caller: str | None = "vault-admin", raw: str | None = None) -> dict[str, Any]:
    """An API Gateway HTTP API (payload 2.0) event of an IAM-authorized caller."""
    context: dict[str, Any] = {"http": {"method": "POST", "path": f"/v1/{method}"}, "requestId": "r1"}
    if caller is not None:
        context["authorizer"] = {"iam": {"userArn": role_arn(caller), "accountId": ACCOUNT}}
    return {"version": "2.0", "routeKey": "POST /v1/{method}", "rawPath": f"/v1/{method}",
            "headers": {"content-type": "application/json"}, "requestContext": context,
            "body": raw if raw is not None else json.dumps(body), "isBase64Encoded": False}
