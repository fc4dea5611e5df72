"""Cross-witnessing (c2sp.org/tlog-witness semantics over gRPC): every service cosigns the other services'
checkpoints, each time after checking that the new checkpoint is consistent with the last one it cosigned,
so a stolen log key cannot show two histories without one of them lacking the witnesses' cosignatures;
a refused checkpoint is kept as signed evidence of the fork.

`Witness` is the cosigning side (AuditWitness.AddCheckpoint); `Cosigners` is the log's side, which submits
its checkpoints to its peers and stores the cosignatures that verify.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from privmesh.common.v1 import common_pb2, common_pb2_grpc
from privmesh.runtime.audit import checkpoint as notes
from privmesh.runtime.audit.endorsement import endorse
from privmesh.runtime.audit.log import load_or_create_signing_key
from privmesh.runtime.audit.merkle import verify_consistency
from privmesh.runtime.audit.store import AuditStore
from privmesh.runtime.audit.tlog import TransparencyLog, WitnessKey
from privmesh.runtime.client import ClientIdentity, secure_channel
from privmesh.runtime.config import ServerConfig, TlsConfig
from privmesh.runtime.context import CallContext, current_principal
from privmesh.runtime.db import Database
from privmesh.runtime.errors import FailedPrecondition, InvalidArgument, PermissionDenied, read_error
from privmesh.runtime.identity import SpiffeId, peer_principal

log = logging.getLogger("privmesh.audit.witness")

MAX_PROOF_HASHES = 63
SIZE_MISMATCH = "WITNESS_SIZE_MISMATCH"
INCONSISTENT = "INCONSISTENT_CHECKPOINT"


@dataclass(frozen=True)
class Witnessed:
    origin: str
    log_public_key: bytes
    latest_checkpoint: str
    refused_checkpoints: tuple[str, ...]


class Witness:
    """What this service cosigns, and the last checkpoint it cosigned per log (updated atomically)."""

    def __init__(self, db: Database, trust_domain: str, service: str, key: Ed25519PrivateKey) -> None:
        self.db = db
        self.trust_domain = trust_domain
        self.service = service
        self.name = notes.witness_name(trust_domain, service)
        self.public_key = notes.raw_public_key(key.public_key())
        self._key = key
        with db.transaction() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS audit_witnessed (witness TEXT NOT NULL, origin TEXT NOT NULL, "
                        f"public_key {db.blob} NOT NULL, size BIGINT NOT NULL, root {db.blob} NOT NULL, "
                        "note TEXT NOT NULL, PRIMARY KEY (witness, origin))")
            cur.execute("CREATE TABLE IF NOT EXISTS audit_witness_refusals (witness TEXT NOT NULL, "
                        "origin TEXT NOT NULL, time_us BIGINT NOT NULL, note TEXT NOT NULL, reason TEXT NOT NULL, "
                        "PRIMARY KEY (witness, origin, time_us))")

    def _check_request(self, principal: str, request: common_pb2.AddCheckpointRequest
                       ) -> tuple[notes.Note, notes.TreeHead, Ed25519PublicKey]:
        try:
            note = notes.parse_note(request.checkpoint)
            head = notes.parse_checkpoint(note.text)
        except notes.NoteError as exc:
            raise InvalidArgument.single("checkpoint", str(exc)) from None
        if len(request.log_public_key) != 32:
            raise InvalidArgument.single("log_public_key", "must be a raw 32-byte Ed25519 key")
        if len(request.consistency_proof) > MAX_PROOF_HASHES or any(len(h) != 32 for h in request.consistency_proof):
            raise InvalidArgument.single("consistency_proof", f"must be at most {MAX_PROOF_HASHES} 32-byte hashes")
        if request.old_size > head.size:
            raise InvalidArgument.single("old_size", "must not exceed the checkpoint's size")
        try:
            caller = SpiffeId.parse(principal)
        except ValueError:
            caller = None
        if caller is None or head.origin != notes.log_origin(caller.trust_domain, caller.service_account) \
                or caller.trust_domain != self.trust_domain:
            raise PermissionDenied("PERMISSION_DENIED_BY_POLICY", "a service may only submit its own log's checkpoints")
        key = Ed25519PublicKey.from_public_bytes(request.log_public_key)
        if not notes.signed_by(note, head.origin, key):
            raise PermissionDenied("UNKNOWN_LOG_KEY", "the checkpoint is not signed by the given log key")
        return note, head, key

    def add_checkpoint(self, principal: str, request: common_pb2.AddCheckpointRequest) -> str:
        """Checks and cosigns; returns the cosignature line. Raises the errors AddCheckpoint documents."""
        note, head, _ = self._check_request(principal, request)
        refusal = None
        with self.db.transaction() as cur:
            cur.execute(self.db.locking("SELECT public_key, size, root FROM audit_witnessed "
                                        "WHERE witness = ? AND origin = ?"), (self.name, head.origin))
            row = cur.fetchone()
            if row is not None and not hmac.compare_digest(bytes(row[0]), request.log_public_key):
                raise PermissionDenied("UNKNOWN_LOG_KEY", f"{head.origin} is pinned to another key")
            latest, root = (0, b"") if row is None else (int(row[1]), bytes(row[2]))
            if request.old_size != latest:
                raise FailedPrecondition(SIZE_MISMATCH, f"this witness last cosigned {head.origin} at size {latest}",
                                         {"latest_size": str(latest)})
            if latest == head.size and root != head.root:
                refusal = f"a different root for size {latest}, which this witness cosigned"
            elif latest and not verify_consistency(latest, head.size, root, head.root, request.consistency_proof):
                refusal = f"not consistent with the checkpoint of size {latest} this witness cosigned"
            if refusal is not None:
                cur.execute("INSERT INTO audit_witness_refusals (witness, origin, time_us, note, reason) "
                            "VALUES (?, ?, ?, ?, ?)", (self.name, head.origin, time.time_ns() // 1000,
                                                       request.checkpoint, refusal))
            else:
                cosignature = notes.cosign(note.text, self.name, self._key, int(time.time()))
                cur.execute("INSERT INTO audit_witnessed (witness, origin, public_key, size, root, note) "
                            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (witness, origin) DO UPDATE SET "
                            "size = excluded.size, root = excluded.root, note = excluded.note",
                            (self.name, head.origin, request.log_public_key, head.size, head.root,
                             notes.Note(note.text, (*note.signatures, cosignature)).render()))
        if refusal is not None:
            log.error("split view of %s: checkpoint of size %d refused (%s); kept as evidence", head.origin,
                      head.size, refusal)
            raise FailedPrecondition(INCONSISTENT, f"checkpoint of {head.origin} refused: {refusal}")
        return cosignature.line()

    def witnessed(self) -> list[Witnessed]:
        with self.db.transaction() as cur:
            cur.execute("SELECT origin, public_key, note FROM audit_witnessed WHERE witness = ? ORDER BY origin",
                        (self.name,))
            logs = cur.fetchall()
            cur.execute("SELECT origin, note FROM audit_witness_refusals WHERE witness = ? ORDER BY time_us",
                        (self.name,))
            refused = cur.fetchall()
        return [Witnessed(origin, bytes(key), note, tuple(n for o, n in refused if o == origin))
                for origin, key, note in logs]


class AuditWitnessServicer(common_pb2_grpc.AuditWitnessServicer):
    def __init__(self, witness: Witness, tls: TlsConfig) -> None:
        self._witness = witness
        self._tls = tls

    async def AddCheckpoint(self, request: common_pb2.AddCheckpointRequest,
                            context: CallContext) -> common_pb2.AddCheckpointResponse:
        line = await asyncio.to_thread(self._witness.add_checkpoint, current_principal.get(), request)
        # Endorsed with the current mesh credentials (re-read: they rotate without a restart).
        chain, signature = await asyncio.to_thread(endorse, Path(self._tls.key_file), Path(self._tls.cert_file),
                                                   self._witness.public_key, self._witness.service)
        return common_pb2.AddCheckpointResponse(
            cosignature=line, witness_public_key=self._witness.public_key,
            witness_key_endorsement=common_pb2.KeyEndorsement(certificate_chain=chain, signature=signature))


@dataclass(frozen=True)
class Peer:
    service: str
    target: str
    spiffe_id: str  # what the channel pins


class Cosigners:
    """Submits this log's checkpoints to its peer witnesses and keeps the cosignatures that verify."""

    def __init__(self, tlog: TransparencyLog, public_key: bytes, peers: Sequence[Peer], identity: ClientIdentity,
                 trust_domain: str, timeout: float = 3.0) -> None:
        self._tlog = tlog
        self._public_key = public_key
        self._peers = list(peers)
        self._identity = identity
        self._trust_domain = trust_domain
        self._timeout = timeout
        self._sizes: dict[str, int] = {}

    async def collect(self, size: int) -> None:
        """Asks every peer to cosign the checkpoint of `size`; a peer that fails is logged and skipped."""
        await asyncio.gather(*(self._submit(peer, size) for peer in self._peers))

    async def _submit(self, peer: Peer, size: int) -> None:
        note = await asyncio.to_thread(self._tlog.checkpoint, size)
        if note is None:
            return
        try:
            async with secure_channel(peer.target, self._identity, timeout_seconds=self._timeout,
                                      peer=peer.spiffe_id) as channel:
                stub = common_pb2_grpc.AuditWitnessStub(channel)
                for _ in range(2):
                    old = self._sizes.get(peer.service, 0)
                    if old >= size:
                        return
                    proof = await asyncio.to_thread(self._tlog.consistency, old, size) if old else []
                    try:
                        reply = await stub.AddCheckpoint(common_pb2.AddCheckpointRequest(
                            old_size=old, consistency_proof=proof, checkpoint=note, log_public_key=self._public_key))
                    except grpc.aio.AioRpcError as exc:
                        details = read_error(exc)
                        if details.reason == INCONSISTENT:
                            log.error("split view: witness %s refused this log's checkpoint of size %d as "
                                      "inconsistent with what it cosigned", peer.service, size)
                            return
                        if details.reason != SIZE_MISMATCH:
                            raise
                        self._sizes[peer.service] = int(details.metadata.get("latest_size", "0"))
                        continue
                    await asyncio.to_thread(self._keep, peer, size, note, reply)
                    return
        except (grpc.aio.AioRpcError, ValueError) as exc:
            log.warning("witness %s did not cosign checkpoint %d: %s", peer.service, size, exc)

    async def run(self, interval: float, sign: Callable[[], Awaitable[int]]) -> None:
        """Every `interval` seconds, signs a checkpoint (`sign` returns its size) and has it cosigned; an error
        is logged and the loop goes on, so a witness that is down delays cosigning, never the service."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.collect(await sign())
            except Exception:
                log.exception("periodic cosigning failed")

    def _keep(self, peer: Peer, size: int, note: str, reply: common_pb2.AddCheckpointResponse) -> None:
        name = notes.witness_name(self._trust_domain, peer.service)
        text = notes.parse_note(note).text
        cosignature = notes.parse_note(text + "\n" + reply.cosignature)
        key = Ed25519PublicKey.from_public_bytes(reply.witness_public_key)
        if notes.cosigned_at(cosignature, name, key) is None:
            raise ValueError("the witness's cosignature does not verify")
        endorsement = reply.witness_key_endorsement
        self._tlog.add_cosignatures(size, peer.service, WitnessKey(reply.witness_public_key,
                                                                   endorsement.certificate_chain,
                                                                   endorsement.signature), cosignature.signatures)
        self._sizes[peer.service] = size


def witnessing(db: Database, store: AuditStore, key: Ed25519PrivateKey, config: ServerConfig,
               service: str) -> tuple[Witness, Cosigners | None]:
    """A service's witness (cosigning with `audit.witness_key_file`, else with the audit key `key`), and the
    cosigners of its own log when its configuration names peers."""
    witness_key = key if config.audit.witness_key_file is None else \
        load_or_create_signing_key(config.audit.witness_key_file)
    witness = Witness(db, config.trust_domain, service, witness_key)
    if not config.audit.witnesses:
        return witness, None
    identity = ClientIdentity(config.tls.ca_file, config.tls.cert_file, config.tls.key_file)
    peers = [Peer(p.service, p.target, peer_principal(None, config.tls.cert_file, p.service))
             for p in config.audit.witnesses]
    return witness, Cosigners(store.tlog, notes.raw_public_key(key.public_key()), peers, identity,
                              config.trust_domain)
