"""Step 6, continued: a caller's receipt checked offline against pinned keys and cosigned by witnesses, and a
fork made with a stolen audit key that the witnesses refuse and the next evidence bundle reports."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509

from privmesh.common.v1 import common_pb2, common_pb2_grpc
from privmesh.demo.context import DemoContext, expect
from privmesh.runtime.audit import checkpoint as notes
from privmesh.runtime.audit.bundle import export_bundle, verify_bundle
from privmesh.runtime.audit.chain import Event
from privmesh.runtime.audit.log import load_or_create_signing_key
from privmesh.runtime.audit.receipt import fetch_receipt, to_json, verify_receipt
from privmesh.runtime.audit.store import AuditStore
from privmesh.runtime.audit.trust import Trust
from privmesh.runtime.client import secure_channel
from privmesh.runtime.db import Database
from privmesh.runtime.errors import read_error

TRUST_DOMAIN = "privmesh.local"


def _key_file(ctx: DemoContext, service: str) -> Path:
    return ctx.layout.data_dir / service / "audit-signing-key.pem"


def pinned_keys(ctx: DemoContext) -> dict[str, str]:
    return ctx.layout.audit_key_ids(ctx.targets)


async def receipt_step(ctx: DemoContext, trust: dict[str, str]) -> None:
    for service, target in ctx.targets.items():
        try:
            receipt = await fetch_receipt(target, ctx.layout.identity("demo-client"), ctx.peers[service])
        except grpc.aio.AioRpcError:
            continue  # the demo client did nothing on this service
        path = ctx.work_dir / "receipt.json"
        path.write_text(json.dumps(to_json(receipt), indent=1))
        ca = x509.load_pem_x509_certificates(ctx.layout.pki.ca_file.read_bytes())
        for pins in (Trust(trust, trust_domain=TRUST_DOMAIN), Trust(roots=ca, trust_domain=TRUST_DOMAIN)):
            verdict = verify_receipt(json.loads(path.read_text()), pins, min_witnesses=2)
            expect(verdict.ok, f"the receipt does not verify: {verdict.problem}")
        ctx.console.print(f"   receipt for {service} entry {verdict.sequence} ({receipt.entry.operation}) verified "
                          f"offline: in the tree of {verdict.size}, cosigned by {', '.join(verdict.witnesses)} "
                          "(under the pinned keys, and under the mesh CA)")
        return
    expect(False, "the demo client has no audit entry to get a receipt for")


async def _witnessed_size(service: str, ctx: DemoContext, origin: str) -> int:
    async with secure_channel(ctx.targets[service], ctx.layout.identity("auditor"), timeout_seconds=10,
                              peer=ctx.peers[service]) as channel:
        held = await common_pb2_grpc.AuditLogStub(channel).ListWitnessedCheckpoints(
            common_pb2.ListWitnessedCheckpointsRequest())
    latest = next((w.latest_checkpoint for w in held.logs if w.origin == origin), "")
    return notes.parse_checkpoint(notes.parse_note(latest).text).size if latest else 0


async def fork_step(ctx: DemoContext, trust: dict[str, str]) -> None:
    """A thief with a service's audit key and mesh identity rewrites its history and asks a witness to cosign."""
    victim, witness = sorted(ctx.targets)[-1], sorted(ctx.targets)[0]
    origin = notes.log_origin(TRUST_DOMAIN, victim)
    key = load_or_create_signing_key(_key_file(ctx, victim))
    old = await _witnessed_size(witness, ctx, origin)
    with tempfile.TemporaryDirectory(prefix="privmesh-fork-") as tmp:
        db = Database(f"sqlite:///{Path(tmp) / 'fork.db'}")
        fork = AuditStore(db, victim, key, checkpoint_every=100_000, origin=origin)
        fork.append_batch([Event(victim, "spiffe://privmesh.local/ns/privmesh/sa/mallory", "Rewritten", f"r/{i}")
                           for i in range(old + 1)])
        fork.checkpoint_head()
        forged, proof = fork.tlog.checkpoint(old + 1) or "", fork.tlog.consistency(old, old + 1) if old else []
        db.close()
    request = common_pb2.AddCheckpointRequest(old_size=old, consistency_proof=proof, checkpoint=forged,
                                              log_public_key=notes.raw_public_key(key.public_key()))
    try:
        async with secure_channel(ctx.targets[witness], ctx.layout.identity(victim), timeout_seconds=10,
                                  peer=ctx.peers[witness]) as channel:
            await common_pb2_grpc.AuditWitnessStub(channel).AddCheckpoint(request)
        refused: Any = None
    except grpc.aio.AioRpcError as exc:
        refused = read_error(exc)
    expect(refused is not None and refused.reason == "INCONSISTENT_CHECKPOINT",
           "a witness cosigned a forked checkpoint")
    ctx.console.print(f"   forged {victim} history (size {old + 1}, signed with the stolen key) refused by witness "
                      f"{witness}: {refused.message}")
    bundle = await export_bundle({s: (t, ctx.peers[s]) for s, t in ctx.targets.items()}, ctx.layout.identity("auditor"))
    [verdict] = [v for v in verify_bundle(bundle, Trust(trust)) if v.service == victim]
    expect(verdict.finding is not None and "fork" in verdict.finding.message,
           "the next evidence bundle does not report the fork")
    ctx.console.print(f"   next bundle: {victim} BROKEN: {verdict.finding.message}")  # type: ignore[union-attr]
