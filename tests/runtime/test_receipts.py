"""Receipts over real mTLS: a caller gets a receipt for its own audit entry (not for anyone else's), the
receipt verifies offline against the pinned key, and any change to it is caught."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

import grpc
import pytest

from privmesh.common.v1 import common_pb2, common_pb2_grpc
from privmesh.runtime import echo
from privmesh.runtime.audit.receipt import to_json, verify_receipt
from privmesh.runtime.audit.trust import Trust
from privmesh.runtime.client import secure_channel
from privmesh.runtime.errors import read_error
from privmesh.runtime.pki import DevPki
from tests.conftest import identity, server_config, spiffe

ECHO = "/privmesh.testing.v1.Echo/"
RULES = [
    {"name": "echo", "principals": [spiffe("alice"), spiffe("bob")], "methods": ["privmesh.testing.v1.Echo/*"]},
    {"name": "receipts", "principals": [spiffe("alice"), spiffe("bob")],
     "methods": ["privmesh.common.v1.AuditLog/GetAuditReceipt"]},
    {"name": "auditor", "principals": [spiffe("auditor")], "methods": ["privmesh.common.v1.AuditLog/*"]},
]


@pytest.fixture
async def server(tmp_path: Path, pki: DevPki, start_server):  # type: ignore[no-untyped-def]
    config = server_config(tmp_path, pki, RULES, {"database": f"sqlite:///{tmp_path / 'echo.db'}"})
    return await start_server(echo.DEFINITION, config)


def _channel(server: Any, ident: Any) -> Any:
    return secure_channel(f"127.0.0.1:{server.port}", ident, timeout_seconds=5, peer=spiffe("server"))


async def _receipt(server: Any, pki: DevPki, who: str, sequence: int = 0) -> common_pb2.AuditReceipt:
    async with _channel(server, identity(pki, who)) as ch:
        stub = common_pb2_grpc.AuditLogStub(ch)
        return (await stub.GetAuditReceipt(common_pb2.GetAuditReceiptRequest(sequence=sequence))).receipt


def _trust(server: Any) -> Trust:
    return Trust({"echo": hashlib.sha256(_raw_key(server)).hexdigest()})


def _raw_key(server: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization
    return bytes(server.audit.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


async def test_a_caller_gets_a_receipt_for_its_entry_that_verifies_offline(server, pki: DevPki) -> None:
    async with _channel(server, identity(pki, "alice")) as ch:
        for i in range(7):
            await ch.unary_unary(ECHO + "Put")(f"k{i}=v".encode())
    receipt = await _receipt(server, pki, "alice")
    assert receipt.entry.principal == spiffe("alice") and receipt.entry.sequence == 7
    verdict = verify_receipt(to_json(receipt), _trust(server), min_witnesses=0)
    assert verdict.ok, verdict.problem
    assert verdict.size >= 7
    older = await _receipt(server, pki, "alice", 2)
    assert verify_receipt(to_json(older), _trust(server), min_witnesses=0).ok


async def test_nobody_gets_a_receipt_for_another_callers_entry(server, pki: DevPki) -> None:
    async with _channel(server, identity(pki, "alice")) as ch:
        await ch.unary_unary(ECHO + "Put")(b"a=1")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _receipt(server, pki, "bob", 1)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _receipt(server, pki, "bob")  # bob has no entry at all
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert (await _receipt(server, pki, "auditor", 1)).entry.principal == spiffe("alice")


async def test_consistency_proof_arguments_are_validated(server, pki: DevPki) -> None:
    async with _channel(server, identity(pki, "auditor")) as ch:
        stub = common_pb2_grpc.AuditLogStub(ch)
        await stub.GetAuditHead(common_pb2.GetAuditHeadRequest())
        for first, second, field in ((0, 0, "first_size"), (3, 2, "first_size"), (1, 10_000, "second_size")):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.GetConsistencyProof(common_pb2.GetConsistencyProofRequest(first_size=first,
                                                                                      second_size=second))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert read_error(err.value).violations[0].field == field


def _tamper(receipt: dict[str, Any], how: str) -> dict[str, Any]:
    data = copy.deepcopy(receipt)
    body = data["receipt"]
    if how == "entry":
        body["entry"]["resource"] = "items/forged"
    elif how == "proof":
        body["inclusionProof"][0] = body["inclusionProof"][1]
    elif how == "index":
        body["leafIndex"] = "0"
    elif how == "checkpoint":
        lines = body["checkpoint"].split("\n")
        lines[1] = str(int(lines[1]) + 1)
        body["checkpoint"] = "\n".join(lines)
    return data


@pytest.mark.parametrize(("how", "words"), [("entry", "modified"), ("proof", "inclusion proof"),
                                            ("index", "leaf index"), ("checkpoint", "not signed")])
async def test_a_tampered_receipt_is_refused(server, pki: DevPki, how: str, words: str) -> None:
    async with _channel(server, identity(pki, "alice")) as ch:
        for i in range(6):
            await ch.unary_unary(ECHO + "Put")(f"k{i}=v".encode())
    good = to_json(await _receipt(server, pki, "alice", 4))
    verdict = verify_receipt(_tamper(good, how), _trust(server), min_witnesses=0)
    assert not verdict.ok and words in (verdict.problem or "")


async def test_a_receipt_verifies_only_against_the_pinned_key(server, pki: DevPki) -> None:
    async with _channel(server, identity(pki, "alice")) as ch:
        await ch.unary_unary(ECHO + "Put")(b"a=1")
    receipt = to_json(await _receipt(server, pki, "alice"))
    verdict = verify_receipt(receipt, Trust({"echo": "00" * 32}), min_witnesses=0)
    assert not verdict.ok and "not the trusted key" in (verdict.problem or "")
    verdict = verify_receipt(receipt, _trust(server), min_witnesses=1)
    assert not verdict.ok and "witnesses" in (verdict.problem or "")
