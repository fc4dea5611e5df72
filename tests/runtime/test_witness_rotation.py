"""Witness key rotation (docs/evidence.md, "Rotating a witness key") on real servers over mTLS: a witness
restarted with a new `audit.witness_key_file` cosigns with the new key under the same name; each cosignature
line carries its key's ID (C2SP signed-note), so receipts of checkpoints cosigned before and after the
rotation pick the right key and both verify while the verifier accepts the old and the new key (or the mesh
CA, which endorses both), only the matching one verifies once the overlap ends, and an evidence bundle counts
the new key's cosignatures once it is pinned."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509

from privmesh.common.v1 import common_pb2, common_pb2_grpc
from privmesh.runtime import echo
from privmesh.runtime.audit import checkpoint as notes
from privmesh.runtime.audit.bundle import export_bundle, verify_bundle
from privmesh.runtime.audit.log import load_or_create_signing_key
from privmesh.runtime.audit.receipt import to_json, verify_receipt
from privmesh.runtime.audit.trust import Trust
from privmesh.runtime.client import secure_channel
from privmesh.runtime.pki import DevPki
from tests.conftest import identity
from tests.runtime.test_witness import _endpoints, _peer, _raw, _target, _trust, _work, start_mesh


async def _receipt(server: Any, pki: DevPki) -> dict[str, Any]:
    """A receipt for the log's latest entry, in a checkpoint the witnesses have just cosigned."""
    async with secure_channel(_target(server), identity(pki, "auditor"), timeout_seconds=10, peer=_peer(server)) as ch:
        stub = common_pb2_grpc.AuditLogStub(ch)
        head = await stub.GetAuditHead(common_pb2.GetAuditHeadRequest())  # signs and has the head cosigned
        reply = await stub.GetAuditReceipt(common_pb2.GetAuditReceiptRequest(sequence=head.head.sequence))
    return to_json(reply.receipt)


def _id(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


async def test_checkpoints_cosigned_before_and_after_a_witness_key_rotation_verify(
        tmp_path: Path, pki: DevPki, start_server: Any) -> None:
    mesh = await start_mesh(tmp_path, pki, start_server)
    a = mesh["wa"]
    await _work(a, pki, 3)
    before = await _receipt(a, pki)
    old = _raw(mesh["wb"])
    # The rotation: wb restarts with a new witness key file (its audit key, and so its own log, is unchanged).
    await mesh["wb"].stop(grace=0)
    path = tmp_path / "wb" / "config.yaml"
    config = yaml.safe_load(path.read_text())
    config["server"]["audit"]["witness_key_file"] = str(tmp_path / "wb" / "witness-2.pem")
    path.write_text(yaml.safe_dump(config))
    mesh["wb"] = await start_server(dataclasses.replace(echo.DEFINITION, name="wb"), path)
    new = notes.raw_public_key(load_or_create_signing_key(tmp_path / "wb" / "witness-2.pem").public_key())
    assert _raw(mesh["wb"]) == old and new != old
    await _work(a, pki, 3)
    after = await _receipt(a, pki)

    assert base64.b64decode(before["receipt"]["publicKeys"]["wb"]) == old
    assert base64.b64decode(after["receipt"]["publicKeys"]["wb"]) == new
    pins = _trust(mesh)
    overlap = Trust({**pins, "wb": [_id(old), _id(new)]})
    for receipt in (before, after):
        verdict = verify_receipt(receipt, overlap, min_witnesses=2)
        assert verdict.ok and verdict.witnesses == ("wb", "wc"), verdict.problem
    assert verify_receipt(before, Trust({**pins, "wb": _id(new)}), min_witnesses=2).witnesses == ("wc",)
    assert verify_receipt(after, Trust({**pins, "wb": _id(old)}), min_witnesses=2).witnesses == ("wc",)
    assert not verify_receipt(after, Trust({**pins, "wb": _id(old)}), min_witnesses=2).ok
    ca = Trust(roots=x509.load_pem_x509_certificates(pki.ca_file.read_bytes()))
    for receipt in (before, after):
        verdict = verify_receipt(receipt, ca, min_witnesses=2)
        assert verdict.ok and verdict.witnesses == ("wb", "wc"), verdict.problem
    # `evidence verify` counts wb's cosignatures under its new witness key too (pinned, or endorsed by the CA)
    bundle = await export_bundle(_endpoints(mesh), identity(pki, "auditor"))
    for trust in (Trust({**pins, "wb": [pins["wb"], _id(new)]}), ca):
        verdicts = verify_bundle(bundle, trust, min_witnesses=2)
        assert all(v.ok for v in verdicts), [v.finding for v in verdicts]
    assert not all(v.ok for v in verify_bundle(bundle, Trust(pins), min_witnesses=2))  # the new key not pinned
