"""Evidence bundles verify only against what the auditor pins: key ids, or the mesh CA that endorses each
service's audit key. A forged, incomplete or rolled-back bundle is refused."""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf import json_format

from privmesh.common.v1 import common_pb2
from privmesh.runtime import echo
from privmesh.runtime.audit.bundle import NoTrustAnchor, export_bundle, verify_bundle
from privmesh.runtime.audit.chain import sign_checkpoint
from privmesh.runtime.audit.endorsement import endorse
from privmesh.runtime.audit.servicer import checkpoint_from_proto, checkpoint_to_proto
from privmesh.runtime.audit.trust import Trust
from privmesh.runtime.client import secure_channel
from privmesh.runtime.pki import DevPki
from tests.conftest import identity, server_config, spiffe

ECHO = "/privmesh.testing.v1.Echo/"
RULES = [{"name": "alice", "principals": [spiffe("alice")], "methods": ["privmesh.testing.v1.Echo/*"]},
         {"name": "auditor", "principals": [spiffe("auditor")], "methods": ["privmesh.common.v1.AuditLog/*"]}]


@pytest.fixture
async def echo_server(tmp_path: Path, pki: DevPki, start_server: Any) -> Any:
    """The echo service with its own mesh identity (spiffe://.../sa/echo), as a deployed service has."""
    bundle = pki.issue("echo")
    tls = {"ca_file": str(bundle.ca_file), "cert_file": str(bundle.cert_file), "key_file": str(bundle.key_file)}
    config = server_config(tmp_path, pki, RULES, {"database": f"sqlite:///{tmp_path / 'echo.db'}"}, tls=tls)
    return await start_server(echo.DEFINITION, config)


async def calls(server: Any, pki: DevPki, count: int) -> None:
    async with secure_channel(f"127.0.0.1:{server.port}", identity(pki, "alice"), peer=spiffe("echo")) as channel:
        for i in range(count):
            await channel.unary_unary(ECHO + "Put")(f"k{i}=v".encode())


async def export(server: Any, pki: DevPki) -> dict[str, Any]:
    return await export_bundle({"echo": (f"127.0.0.1:{server.port}", spiffe("echo"))}, identity(pki, "auditor"))


def ca_trust(pki: DevPki) -> Trust:
    return Trust(roots=x509.load_pem_x509_certificates(pki.ca_file.read_bytes()))


def forge(bundle: dict[str, Any], principal: str) -> dict[str, Any]:
    """The same log, every entry's principal changed, re-hashed and re-signed under the forger's own key."""
    from privmesh.runtime.audit.chain import GENESIS, Event, entry_hash

    forged = copy.deepcopy(bundle)
    section = forged["services"][0]
    key = Ed25519PrivateKey.generate()
    previous = GENESIS
    for raw in section["entries"]:
        raw["principal"] = principal
        entry = json_format.ParseDict(raw, common_pb2.AuditEntry())
        outcome = common_pb2.AuditOutcome.Name(entry.outcome).removeprefix("AUDIT_OUTCOME_")
        digest = entry_hash(entry.sequence, entry.time.ToMicroseconds(), Event(
            entry.service, principal, entry.operation, entry.resource, outcome, dict(entry.details)), previous)
        raw["previousHash"], raw["entryHash"] = base64.b64encode(previous).decode(), base64.b64encode(digest).decode()
        previous = digest
    hashes = [base64.b64decode(e["entryHash"]) for e in section["entries"]]

    def resign(raw: dict[str, Any]) -> dict[str, Any]:
        old = checkpoint_from_proto(json_format.ParseDict(raw, common_pb2.AuditCheckpoint()))
        head = hashes[old.sequence - 1] if old.sequence else GENESIS
        new = sign_checkpoint(key, old.service, old.sequence, head, old.time_us)
        return json_format.MessageToDict(checkpoint_to_proto(new))

    section["head"] = resign(section["head"])
    section["checkpoints"] = [resign(c) for c in section["checkpoints"]]
    section["public_key"] = base64.b64encode(key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()
    return forged


async def test_verification_without_pinned_keys_is_refused(echo_server: Any, pki: DevPki) -> None:
    await calls(echo_server, pki, 2)
    with pytest.raises(NoTrustAnchor, match="no pinned audit keys"):
        verify_bundle(await export(echo_server, pki), Trust())


async def test_an_audit_key_endorsed_by_the_services_certificate_verifies_with_the_ca_alone(
        echo_server: Any, pki: DevPki) -> None:
    await calls(echo_server, pki, 7)
    [verdict] = verify_bundle(await export(echo_server, pki), ca_trust(pki), ["echo"])
    assert verdict.ok and verdict.entries == 7


async def test_a_bundle_re_signed_under_a_forgers_key_is_refused(echo_server: Any, pki: DevPki) -> None:
    await calls(echo_server, pki, 3)
    bundle = await export(echo_server, pki)
    forged = forge(bundle, spiffe("mallory"))
    # Against the mesh CA: the forger's key carries the genuine service's endorsement of another key.
    [verdict] = verify_bundle(forged, ca_trust(pki))
    assert not verdict.ok and "is not vouched for" in verdict.finding.message  # type: ignore[union-attr]
    # Against pinned key ids: the genuine key id is pinned, the forger's is not it.
    [genuine] = verify_bundle(bundle, ca_trust(pki))
    [verdict] = verify_bundle(forged, Trust(keys={"echo": genuine.key_id}))
    assert not verdict.ok and "not the trusted key" in verdict.finding.message  # type: ignore[union-attr]
    # Another mesh identity (alice's certificate) endorsing the forger's key does not pass for the service.
    section = forged["services"][0]
    alice = pki.bundle("alice")
    chain, signature = endorse(alice.key_file, alice.cert_file, base64.b64decode(section["public_key"]), "echo")
    section["certificate_chain"], section["key_endorsement"] = chain, base64.b64encode(signature).decode()
    [verdict] = verify_bundle(forged, ca_trust(pki))
    assert not verdict.ok and f"endorsed by {spiffe('alice')}, not by echo" in verdict.finding.message  # type: ignore[union-attr]


async def test_a_missing_service_fails_verification(echo_server: Any, pki: DevPki) -> None:
    await calls(echo_server, pki, 1)
    verdicts = verify_bundle(await export(echo_server, pki), ca_trust(pki), ["echo", "key-broker"])
    missing = [v for v in verdicts if v.service == "key-broker"]
    assert [v.ok for v in verdicts if v.service == "echo"] == [True]
    assert len(missing) == 1 and "missing from the bundle" in missing[0].finding.message  # type: ignore[union-attr]


async def test_an_older_head_than_one_seen_before_fails_verification(echo_server: Any, pki: DevPki) -> None:
    await calls(echo_server, pki, 2)
    older = await export(echo_server, pki)
    await calls(echo_server, pki, 3)
    newer = await export(echo_server, pki)
    assert all(v.ok for v in verify_bundle(newer, ca_trust(pki), since=older))
    [rolled_back] = verify_bundle(older, ca_trust(pki), since=newer)
    assert not rolled_back.ok and "older than the head" in rolled_back.finding.message  # type: ignore[union-attr]
    emptied = copy.deepcopy(older)
    emptied["services"] = []
    [gone] = verify_bundle(emptied, ca_trust(pki), since=newer)
    assert not gone.ok and "was in the earlier bundle" in gone.finding.message  # type: ignore[union-attr]
