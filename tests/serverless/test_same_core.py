"""One core: a field created in the mesh (token-vault over key-broker's aws-kms backend) gives the same token
for the same value from the gRPC service and from the Lambda handler, which reads the field's wrapped secret
straight from KMS; and the handler's audit entries join token-vault's own chain, so the service's AuditLog
API (what `privmesh evidence export` reads) serves them, verifiable under the service's pinned key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from privmesh.keybroker import server as keybroker_server
from privmesh.keybroker.v1 import keybroker_pb2 as kb
from privmesh.runtime.audit.bundle import FORMAT, Trust, export_service, verify_bundle
from privmesh.runtime.audit.chain import key_id
from privmesh.runtime.client import secure_channel
from privmesh.runtime.db import Database
from privmesh.runtime.pki import DevPki
from privmesh.sdk.keybroker.client import SERVICES as KB_SERVICES
from privmesh.sdk.keybroker.client import KeyBrokerClient
from privmesh.tokenvault import server as tokenvault_server
from privmesh.tokenvault.dynamo import DynamoStore
from privmesh.tokenvault.store import Store
from privmesh.tokenvault.v1 import tokenvault_pb2 as pb
from privmesh.tokenvault.v1 import tokenvault_pb2_grpc
from tests.conftest import identity, server_config, spiffe
from tests.serverless.conftest import REGION, Aws, http_event, make_stack, principal
from tests.tokenvault.conftest import KB_RULES, SERVICES, TV_RULES, broker_settings, key_policy, vault_settings, workdir

pytestmark = pytest.mark.slow


async def test_lambda_and_grpc_service_give_one_token_and_one_audit_chain(
        aws: Aws, emulators: Any, start_server: Any, tmp_path: Path, pki: DevPki) -> None:
    kb_dir, tv_dir = workdir(tmp_path / "kb"), workdir(tmp_path / "tv")
    broker = await start_server(keybroker_server.DEFINITION, server_config(kb_dir, pki, KB_RULES, {
        **broker_settings(kb_dir), "aws_kms": {"region": REGION, "endpoint_url": aws.endpoint}}))
    settings = vault_settings(tv_dir, broker.port)
    vault = await start_server(tokenvault_server.DEFINITION, server_config(tv_dir, pki, TV_RULES, settings))
    async with secure_channel(f"127.0.0.1:{broker.port}", identity(pki, "alice"), KB_SERVICES,
                              peer=spiffe("server")) as kb_channel, \
            secure_channel(f"127.0.0.1:{vault.port}", identity(pki, "alice"), SERVICES,
                           peer=spiffe("server")) as tv_channel:
        key = await KeyBrokerClient(kb_channel).create_key(alias="vault", policy=key_policy(),
                                                           backend=kb.KEY_BACKEND_AWS_KMS)
        mesh = tokenvault_pb2_grpc.TokenVaultStub(tv_channel)
        policy = pb.DetokenizePolicy(rules=[pb.DetokenizeRule(principals=[principal("vault-admin")],
                                                              view=pb.DETOKENIZE_VIEW_VALUE)])
        await mesh.CreateField(pb.CreateFieldRequest(parent="tenants/acme", field_id="ssn", field=pb.Field(
            profile=pb.TokenProfile(deterministic=pb.DeterministicProfile()), key=f"keys/{key.key_id}",
            detokenize_policy=policy)))
        values = ["123-45-6789", "987-65-4321"]
        reply = await mesh.Tokenize(pb.TokenizeRequest(parent="tenants/acme", items=[
            pb.TokenizeItem(field="ssn", value=v) for v in values]))
        grpc_tokens = [r.token for r in reply.results]

        # The field as the mesh stored it (its secret wrapped by KMS under the vault's context) moves as is.
        stack = make_stack(aws, tmp_path, "core", audit_key=tv_dir / "audit-signing.pem",
                           audit_db=tv_dir / "audit.db")
        database = Database(settings["database"])
        stored = Store(database).get_field("acme", "ssn")
        database.close()
        assert stored is not None
        target = DynamoStore(stack.table, REGION, aws.endpoint)
        with target.db.transaction() as cur:
            assert target.insert_field(stored, cur)

        function = emulators(stack)
        lambda_reply = function.invoke(http_event("Tokenize", {"parent": "tenants/acme", "items": [
            {"field": "ssn", "value": v} for v in reversed(values)]}, caller="pipeline"))
        assert lambda_reply["statusCode"] == 200, lambda_reply
        assert [r["token"] for r in json.loads(lambda_reply["body"])["results"]] == grpc_tokens[::-1]
        shown = function.invoke(http_event("Detokenize", {"parent": "tenants/acme", "items": [
            {"field": "ssn", "token": t} for t in grpc_tokens]}))
        assert [r["value"] for r in json.loads(shown["body"])["results"]] == values
        refused = function.invoke(http_event("Detokenize", {"parent": "tenants/acme", "items": [
            {"field": "ssn", "token": grpc_tokens[0]}]}, caller="analyst"))
        assert refused["statusCode"] == 403

        section = await export_service(f"127.0.0.1:{vault.port}", identity(pki, "auditor"), spiffe("server"))
    seen = {(e["principal"], e["operation"], e.get("outcome", "")) for e in section["entries"]}
    assert (principal("vault-admin"), "Detokenize", "AUDIT_OUTCOME_SUCCESS") in seen
    assert (principal("analyst"), "Detokenize", "AUDIT_OUTCOME_DENIED") in seen
    assert (spiffe("alice"), "CreateField", "AUDIT_OUTCOME_SUCCESS") in seen
    signing = serialization.load_pem_private_key((tv_dir / "audit-signing.pem").read_bytes(), None)
    assert isinstance(signing, Ed25519PrivateKey)
    verdicts = verify_bundle({"format": FORMAT, "services": [section], "witnessed": {}},
                             Trust(keys={"token-vault": key_id(signing.public_key())}), min_witnesses=0)
    assert [v.ok for v in verdicts] == [True], verdicts
