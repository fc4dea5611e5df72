"""Cross-witnessing between three real servers over mTLS: each cosigns the others' checkpoints after
checking consistency, a receipt carries the cosignatures, and a fork made with a stolen log key is refused
by the witnesses and kept as evidence."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from privmesh.common.v1 import common_pb2, common_pb2_grpc
from privmesh.runtime import echo
from privmesh.runtime.audit import checkpoint as notes
from privmesh.runtime.audit.chain import Event
from privmesh.runtime.audit.log import load_or_create_signing_key
from privmesh.runtime.audit.receipt import to_json, verify_receipt
from privmesh.runtime.audit.store import AuditStore
from privmesh.runtime.audit.trust import Trust
from privmesh.runtime.client import secure_channel
from privmesh.runtime.db import Database
from privmesh.runtime.errors import read_error
from privmesh.runtime.pki import DevPki
from privmesh.runtime.ports import free_loopback_port
from tests.conftest import identity, server_config, spiffe

NAMES = ("wa", "wb", "wc")
ECHO = "/privmesh.testing.v1.Echo/"
RULES = [
    {"name": "echo", "principals": [spiffe("alice")], "methods": ["privmesh.testing.v1.Echo/*",
                                                                   "privmesh.common.v1.AuditLog/GetAuditReceipt"]},
    {"name": "witnesses", "principals": [spiffe(n) for n in NAMES],
     "methods": ["privmesh.common.v1.AuditWitness/AddCheckpoint"]},
    {"name": "auditor", "principals": [spiffe("auditor")], "methods": ["privmesh.common.v1.AuditLog/*"]},
]


async def start_mesh(tmp_path: Path, pki: DevPki, start_server: Any, names: tuple[str, ...] = NAMES,
                     witnesses: dict[str, int] | None = None, interval: float = 0,
                     audit: dict[str, Any] | None = None) -> dict[str, Any]:
    """Echo servers `names`, each witnessed by the others (and by `witnesses`: name -> port), cosigning every
    `interval` seconds when set; `audit` overrides audit settings (e.g. the signing key file)."""
    ports = {name: free_loopback_port() for name in names}
    peers = {**(witnesses or {}), **ports}
    servers = {}
    for name in names:
        pki.issue(name)
        home = tmp_path / name
        home.mkdir()
        path = server_config(home, pki, RULES, {"database": f"sqlite:///{home / 'echo.db'}"},
                             listen=f"127.0.0.1:{ports[name]}")
        config = yaml.safe_load(path.read_text())
        bundle = pki.bundle(name)
        config["server"]["tls"].update(cert_file=str(bundle.cert_file), key_file=str(bundle.key_file))
        config["server"]["audit"].update(witnesses=[{"service": peer, "target": f"127.0.0.1:{port}"}
                                                    for peer, port in peers.items() if peer != name],
                                         cosign_interval_seconds=interval, **(audit or {}))
        path.write_text(yaml.safe_dump(config))
        servers[name] = await start_server(dataclasses.replace(echo.DEFINITION, name=name), path)
    return servers


@pytest.fixture
async def mesh(tmp_path: Path, pki: DevPki, start_server) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return await start_mesh(tmp_path, pki, start_server)


def _raw(server: Any) -> bytes:
    return bytes(server.audit.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def _trust(mesh: dict[str, Any]) -> dict[str, str]:
    return {name: hashlib.sha256(_raw(server)).hexdigest() for name, server in mesh.items()}


def _target(server: Any) -> str:
    return f"127.0.0.1:{server.port}"


def _peer(server: Any) -> str:
    return spiffe(server.definition.name)


def _endpoints(servers: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {name: (_target(server), _peer(server)) for name, server in servers.items()}


async def _work(server: Any, pki: DevPki, count: int) -> None:
    async with secure_channel(_target(server), identity(pki, "alice"), timeout_seconds=5, peer=_peer(server)) as ch:
        for i in range(count):
            await ch.unary_unary(ECHO + "Put")(f"k{i}=v".encode())


async def _head_note(server: Any, pki: DevPki) -> notes.Note:
    async with secure_channel(_target(server), identity(pki, "auditor"), timeout_seconds=10, peer=_peer(server)) as ch:
        stub = common_pb2_grpc.AuditLogStub(ch)
        head = await stub.GetAuditHead(common_pb2.GetAuditHeadRequest())
        listed = await stub.ListTreeCheckpoints(common_pb2.ListTreeCheckpointsRequest(page_size=1000))
    note = notes.parse_note(listed.checkpoints[-1])
    assert notes.parse_checkpoint(note.text).size == head.head.sequence
    return note


async def test_each_service_cosigns_the_others_and_receipts_carry_the_cosignatures(mesh, pki: DevPki) -> None:
    a = mesh["wa"]
    await _work(a, pki, 3)
    first = await _head_note(a, pki)
    await _work(a, pki, 4)
    second = await _head_note(a, pki)  # cosigned again: the witnesses checked consistency from the first
    for note in (first, second):
        for peer in ("wb", "wc"):
            assert notes.cosigned_at(note, notes.witness_name("privmesh.local", peer),
                                     mesh[peer].audit.public_key) is not None
    async with secure_channel(_target(a), identity(pki, "alice"), timeout_seconds=10, peer=_peer(a)) as ch:
        reply = await common_pb2_grpc.AuditLogStub(ch).GetAuditReceipt(common_pb2.GetAuditReceiptRequest(sequence=5))
    verdict = verify_receipt(to_json(reply.receipt), Trust(_trust(mesh)), min_witnesses=2)
    assert verdict.ok, verdict.problem
    assert verdict.witnesses == ("wb", "wc")
    # a witness that is not pinned does not count
    trust = _trust(mesh)
    del trust["wc"]
    assert verify_receipt(to_json(reply.receipt), Trust(trust), min_witnesses=2).problem


async def test_a_fork_signed_with_a_stolen_key_is_refused_and_kept_as_evidence(mesh, pki: DevPki,
                                                                               tmp_path: Path) -> None:
    a, b = mesh["wa"], mesh["wb"]
    await _work(a, pki, 4)
    honest = await _head_note(a, pki)
    size = notes.parse_checkpoint(honest.text).size
    # The thief holds wa's audit key and mTLS identity and builds another history of the same size + 1.
    stolen = load_or_create_signing_key(a.config.audit.signing_key_file)
    db = Database(f"sqlite:///{tmp_path / 'fork.db'}")
    fork = AuditStore(db, "wa", stolen, checkpoint_every=1000, origin=notes.log_origin("privmesh.local", "wa"))
    fork.append_batch([Event("wa", spiffe("mallory"), "Put", f"items/{i}") for i in range(size + 1)])
    fork.checkpoint_head()
    forged = fork.tlog.checkpoint(size + 1) or ""
    forged_proof = fork.tlog.consistency(size, size + 1)
    db.close()
    async with secure_channel(_target(b), identity(pki, "wa"), timeout_seconds=5, peer=_peer(b)) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await common_pb2_grpc.AuditWitnessStub(ch).AddCheckpoint(common_pb2.AddCheckpointRequest(
                old_size=size, consistency_proof=forged_proof, checkpoint=forged, log_public_key=_raw(a)))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert read_error(err.value).reason == "INCONSISTENT_CHECKPOINT"
    async with secure_channel(_target(b), identity(pki, "auditor"), timeout_seconds=5, peer=_peer(b)) as ch:
        held = await common_pb2_grpc.AuditLogStub(ch).ListWitnessedCheckpoints(
            common_pb2.ListWitnessedCheckpointsRequest())
    log = next(w for w in held.logs if w.origin == notes.log_origin("privmesh.local", "wa"))
    assert list(log.refused_checkpoints) == [forged]
    assert notes.parse_checkpoint(notes.parse_note(log.latest_checkpoint).text).size == size  # unchanged


async def test_the_witness_refuses_what_it_must(mesh, pki: DevPki) -> None:
    a, b = mesh["wa"], mesh["wb"]
    await _work(a, pki, 2)
    note = await _head_note(a, pki)
    text = note.render()
    size = notes.parse_checkpoint(note.text).size

    async def submit(who: str, **fields: Any) -> grpc.aio.AioRpcError:
        request = common_pb2.AddCheckpointRequest(**{"old_size": 0, "checkpoint": text, "log_public_key": _raw(a),
                                                     **fields})
        async with secure_channel(_target(b), identity(pki, who), timeout_seconds=5, peer=_peer(b)) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await common_pb2_grpc.AuditWitnessStub(ch).AddCheckpoint(request)
        return err.value

    refused = await submit("wc")  # another service cannot submit wa's checkpoints
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
    stale = await submit("wa")  # b already cosigned size `size`
    assert stale.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert read_error(stale).metadata["latest_size"] == str(size)
    other_key = await submit("wa", old_size=size, log_public_key=_raw(mesh["wc"]))
    assert other_key.code() == grpc.StatusCode.PERMISSION_DENIED
    for fields, field in (({"checkpoint": "garbage"}, "checkpoint"), ({"log_public_key": b"short"}, "log_public_key"),
                          ({"old_size": size + 5}, "old_size")):
        bad = await submit("wa", **fields)
        assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert read_error(bad).violations[0].field == field
    async with secure_channel(_target(b), identity(pki, "auditor"), timeout_seconds=5, peer=_peer(b)) as ch:
        held = await common_pb2_grpc.AuditLogStub(ch).ListWitnessedCheckpoints(
            common_pb2.ListWitnessedCheckpointsRequest())
    log = next(w for w in held.logs if w.origin.endswith("/wa"))
    assert not log.refused_checkpoints
    assert notes.parse_checkpoint(notes.parse_note(log.latest_checkpoint).text).size == size


async def test_a_log_rewritten_with_its_stolen_key_shows_as_a_split_view_in_the_bundle(
        mesh, pki: DevPki, tmp_path: Path, start_server) -> None:  # type: ignore[no-untyped-def]
    from privmesh.runtime.audit.bundle import export_bundle, verify_bundle

    await _work(mesh["wa"], pki, 5)
    auditor = identity(pki, "auditor")
    honest = await export_bundle(_endpoints(mesh), auditor)
    assert all(v.ok for v in verify_bundle(honest, Trust(_trust(mesh)), min_witnesses=2))
    # The thief runs its own wa with the stolen key and a rewritten history, re-signed end to end.
    home = tmp_path / "thief"
    home.mkdir()
    path = server_config(home, pki, RULES, {"database": f"sqlite:///{home / 'echo.db'}"})
    config = yaml.safe_load(path.read_text())
    config["server"]["audit"]["signing_key_file"] = str(mesh["wa"].config.audit.signing_key_file)
    bundle = pki.bundle("wa")
    config["server"]["tls"].update(cert_file=str(bundle.cert_file), key_file=str(bundle.key_file))
    path.write_text(yaml.safe_dump(config))
    thief = await start_server(dataclasses.replace(echo.DEFINITION, name="wa"), path)
    await _work(thief, pki, 9)
    forged = await export_bundle({**_endpoints(mesh), "wa": (_target(thief), _peer(thief))}, auditor)
    verdicts = {v.service: v for v in verify_bundle(forged, Trust(_trust(mesh)), min_witnesses=2)}
    assert verdicts["wb"].ok and verdicts["wc"].ok
    assert verdicts["wa"].finding is not None and "split view" in verdicts["wa"].finding.message
    # and an earlier honest bundle disagrees with it too
    verdicts = {v.service: v for v in verify_bundle(forged, Trust(_trust(mesh)), since=honest, min_witnesses=0)}
    assert verdicts["wa"].finding is not None
