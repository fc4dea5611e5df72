"""The AuditLog gRPC service every server exposes, and the protobuf <-> chain conversions."""

from __future__ import annotations

import asyncio
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from google.protobuf.timestamp_pb2 import Timestamp

from privmesh.common.v1 import common_pb2, common_pb2_grpc
from privmesh.runtime.audit.chain import Checkpoint, Entry
from privmesh.runtime.audit.endorsement import endorse
from privmesh.runtime.audit.log import AuditLog
from privmesh.runtime.audit.witness import Cosigners, Witness
from privmesh.runtime.authz import Authorizer
from privmesh.runtime.config import TlsConfig
from privmesh.runtime.context import CallContext, current_principal
from privmesh.runtime.errors import InvalidArgument, NotFound
from privmesh.runtime.paging import decode_token, page_size, paginate

LIST_ENTRIES = "privmesh.common.v1.AuditLog/ListAuditEntries"


def _timestamp(time_us: int) -> Timestamp:
    return Timestamp(seconds=time_us // 1_000_000, nanos=(time_us % 1_000_000) * 1000)


def _time_us(ts: Timestamp) -> int:
    return ts.seconds * 1_000_000 + ts.nanos // 1000


def entry_to_proto(entry: Entry) -> common_pb2.AuditEntry:
    return common_pb2.AuditEntry(
        sequence=entry.sequence, time=_timestamp(entry.time_us), service=entry.service, principal=entry.principal,
        operation=entry.operation, resource=entry.resource,
        outcome="AUDIT_OUTCOME_" + entry.outcome, details=dict(entry.details),
        previous_hash=entry.previous_hash, entry_hash=entry.entry_hash)


def entry_from_proto(msg: common_pb2.AuditEntry) -> Entry:
    outcome = common_pb2.AuditOutcome.Name(msg.outcome).removeprefix("AUDIT_OUTCOME_")
    return Entry(msg.sequence, _time_us(msg.time), msg.service, msg.principal, msg.operation, msg.resource, outcome,
                 dict(msg.details), msg.previous_hash, msg.entry_hash)


def checkpoint_to_proto(checkpoint: Checkpoint) -> common_pb2.AuditCheckpoint:
    return common_pb2.AuditCheckpoint(
        service=checkpoint.service, sequence=checkpoint.sequence, head_hash=checkpoint.head_hash,
        time=_timestamp(checkpoint.time_us), key_id=checkpoint.key_id, signature=checkpoint.signature)


def checkpoint_from_proto(msg: common_pb2.AuditCheckpoint) -> Checkpoint:
    return Checkpoint(msg.service, msg.sequence, msg.head_hash, _time_us(msg.time), msg.key_id, msg.signature)


class AuditLogServicer(common_pb2_grpc.AuditLogServicer):
    def __init__(self, audit: AuditLog, tls: TlsConfig, authorizer: Authorizer | None = None,
                 witness: Witness | None = None, cosigners: Cosigners | None = None,
                 trust_domain: str = "privmesh.local") -> None:
        self._audit = audit
        self._trust_domain = trust_domain
        self._tls = tls
        self._authorizer = authorizer
        self._witness = witness
        self._cosigners = cosigners

    async def _signed_head(self) -> Checkpoint:
        """Signs a checkpoint of the current head and has the peer witnesses cosign its tree checkpoint."""
        head = await self._audit.checkpoint()
        if self._cosigners is not None:
            await self._cosigners.collect(head.sequence)
        return head

    async def ListAuditEntries(self, request: common_pb2.ListAuditEntriesRequest,
                               context: CallContext) -> common_pb2.ListAuditEntriesResponse:
        limit = page_size(request.page_size, 100, 1000)
        after = int(decode_token(request.page_token, int) or 0)
        entries, token = paginate(await self._audit.entries(after, limit + 1), limit, lambda e: e.sequence)
        return common_pb2.ListAuditEntriesResponse(entries=[entry_to_proto(e) for e in entries], next_page_token=token)

    async def ListAuditCheckpoints(self, request: common_pb2.ListAuditCheckpointsRequest,
                                   context: CallContext) -> common_pb2.ListAuditCheckpointsResponse:
        limit = page_size(request.page_size, 100, 1000)
        after = int(decode_token(request.page_token, int) or 0)
        found, token = paginate(await self._audit.checkpoints(after, limit + 1), limit, lambda c: c.sequence)
        return common_pb2.ListAuditCheckpointsResponse(checkpoints=[checkpoint_to_proto(c) for c in found],
                                                       next_page_token=token)

    async def GetAuditHead(self, request: common_pb2.GetAuditHeadRequest,
                           context: CallContext) -> common_pb2.GetAuditHeadResponse:
        head = await self._signed_head()
        raw = self._audit.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        # Endorsed with the current mesh credentials (re-read: they rotate without a restart).
        chain, endorsement = await asyncio.to_thread(endorse, Path(self._tls.key_file), Path(self._tls.cert_file), raw,
                                                     self._audit.service)
        return common_pb2.GetAuditHeadResponse(head=checkpoint_to_proto(head), public_key=raw,
                                               certificate_chain=chain, key_endorsement=endorsement)

    async def GetAuditReceipt(self, request: common_pb2.GetAuditReceiptRequest,
                              context: CallContext) -> common_pb2.GetAuditReceiptResponse:
        principal = current_principal.get()
        tlog = self._audit.store.tlog
        sequence = int(request.sequence)
        if not sequence:
            latest: int | None = await asyncio.to_thread(tlog.latest_entry_of, principal)
            sequence = latest or 0
        found = await self._audit.entries(sequence - 1, 1) if sequence else []
        auditor = self._authorizer is not None and self._authorizer.allows(principal, LIST_ENTRIES, "*")
        if not found or found[0].sequence != sequence or not (auditor or found[0].principal == principal):
            raise NotFound("RESOURCE_NOT_FOUND", "no audit entry of yours has that sequence")  # hides others'
        size = await asyncio.to_thread(tlog.latest_checkpoint_size)
        if size is None or size < sequence:
            size = (await self._signed_head()).sequence
        proof = await asyncio.to_thread(tlog.inclusion, sequence - 1, size)
        witnesses = await asyncio.to_thread(tlog.witness_keys, proof.checkpoint, self._trust_domain)
        raw = self._audit.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        chain, signature = await asyncio.to_thread(endorse, Path(self._tls.key_file), Path(self._tls.cert_file), raw,
                                                   self._audit.service)
        keys = {service: key.public_key for service, key in witnesses.items()}
        endorsements = {service: common_pb2.KeyEndorsement(certificate_chain=key.certificate_chain,
                                                           signature=key.endorsement)
                        for service, key in witnesses.items() if key.endorsement}
        keys[self._audit.service] = raw
        endorsements[self._audit.service] = common_pb2.KeyEndorsement(certificate_chain=chain, signature=signature)
        return common_pb2.GetAuditReceiptResponse(receipt=common_pb2.AuditReceipt(
            entry=entry_to_proto(found[0]), leaf_index=sequence - 1, checkpoint=proof.checkpoint,
            inclusion_proof=proof.hashes, public_keys=keys, endorsements=endorsements))

    async def ListTreeCheckpoints(self, request: common_pb2.ListTreeCheckpointsRequest,
                                  context: CallContext) -> common_pb2.ListTreeCheckpointsResponse:
        limit = page_size(request.page_size, 100, 1000)
        after = int(decode_token(request.page_token, int) or 0)
        rows = await asyncio.to_thread(self._audit.store.tlog.checkpoints, after, limit + 1)
        found, token = paginate(rows, limit, lambda row: row[0])
        return common_pb2.ListTreeCheckpointsResponse(checkpoints=[note for _, note in found], next_page_token=token)

    async def GetConsistencyProof(self, request: common_pb2.GetConsistencyProofRequest,
                                  context: CallContext) -> common_pb2.GetConsistencyProofResponse:
        size = (await asyncio.to_thread(self._audit.store.tlog.latest_checkpoint_size)) or 0
        if not 0 < request.first_size <= request.second_size:
            raise InvalidArgument.single("first_size", "must be at least 1 and at most second_size")
        if request.second_size > size:
            raise InvalidArgument.single("second_size", f"must be at most the latest checkpoint's size {size}")
        proof = await asyncio.to_thread(self._audit.store.tlog.consistency, request.first_size, request.second_size)
        return common_pb2.GetConsistencyProofResponse(proof=proof)

    async def ListWitnessedCheckpoints(self, request: common_pb2.ListWitnessedCheckpointsRequest,
                                       context: CallContext
                                       ) -> common_pb2.ListWitnessedCheckpointsResponse:
        if self._witness is None:
            return common_pb2.ListWitnessedCheckpointsResponse()
        logs = await asyncio.to_thread(self._witness.witnessed)
        chain, signature = await asyncio.to_thread(endorse, Path(self._tls.key_file), Path(self._tls.cert_file),
                                                   self._witness.public_key, self._audit.service)
        return common_pb2.ListWitnessedCheckpointsResponse(logs=[
            common_pb2.WitnessedLog(origin=w.origin, log_public_key=w.log_public_key,
                                    latest_checkpoint=w.latest_checkpoint, refused_checkpoints=w.refused_checkpoints)
            for w in logs], witness_public_key=self._witness.public_key,
            witness_key_endorsement=common_pb2.KeyEndorsement(certificate_chain=chain, signature=signature))
