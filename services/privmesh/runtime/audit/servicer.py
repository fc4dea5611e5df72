"""The AuditLog gRPC service every server exposes, and the protobuf <-> chain conversions."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
from cryptography.hazmat.primitives import serialization
from google.protobuf.timestamp_pb2 import Timestamp

from privmesh.common.v1 import common_pb2, common_pb2_grpc
from privmesh.runtime.audit.chain import Checkpoint, Entry
from privmesh.runtime.audit.endorsement import endorse
from privmesh.runtime.audit.log import AuditLog
from privmesh.runtime.config import TlsConfig
from privmesh.runtime.paging import decode_token, page_size, paginate


def _timestamp(time_us: int) -> Timestamp:
    return Timestamp(seconds=time_us // 1_000_000, nanos=(time_us % 1_000_000) * 1000)


def _time_us(ts: Timestamp) -> int:
    return ts.seconds * 1_000_000 + ts.nanos // 1000


def entry_to_proto(entry: Entry) -> common_pb2.AuditEntry:
    return common_pb2.AuditEntry(
        sequence=entry.sequence, time=_timestamp(entry.time_us), service=entry.service, principal=entry.principal,
        operation=entry.operation, resource=entry.resource,
        outcome=common_pb2.AuditOutcome.Value("AUDIT_OUTCOME_" + entry.outcome), details=dict(entry.details),
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
    def __init__(self, audit: AuditLog, tls: TlsConfig) -> None:
        self._audit = audit
        self._tls = tls

    async def ListAuditEntries(self, request: common_pb2.ListAuditEntriesRequest,
                               context: grpc.aio.ServicerContext) -> common_pb2.ListAuditEntriesResponse:
        limit = page_size(request.page_size, 100, 1000)
        after = int(decode_token(request.page_token, int) or 0)
        entries, token = paginate(await self._audit.entries(after, limit + 1), limit, lambda e: e.sequence)
        return common_pb2.ListAuditEntriesResponse(entries=[entry_to_proto(e) for e in entries], next_page_token=token)

    async def ListAuditCheckpoints(self, request: common_pb2.ListAuditCheckpointsRequest,
                                   context: grpc.aio.ServicerContext) -> common_pb2.ListAuditCheckpointsResponse:
        limit = page_size(request.page_size, 100, 1000)
        after = int(decode_token(request.page_token, int) or 0)
        found, token = paginate(await self._audit.checkpoints(after, limit + 1), limit, lambda c: c.sequence)
        return common_pb2.ListAuditCheckpointsResponse(checkpoints=[checkpoint_to_proto(c) for c in found],
                                                       next_page_token=token)

    async def GetAuditHead(self, request: common_pb2.GetAuditHeadRequest,
                           context: grpc.aio.ServicerContext) -> common_pb2.GetAuditHeadResponse:
        head = await self._audit.checkpoint()
        raw = self._audit.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        # Endorsed with the current mesh credentials (re-read: they rotate without a restart).
        chain, endorsement = await asyncio.to_thread(endorse, Path(self._tls.key_file), Path(self._tls.cert_file), raw,
                                                     self._audit.service)
        return common_pb2.GetAuditHeadResponse(head=checkpoint_to_proto(head), public_key=raw,
                                               certificate_chain=chain, key_endorsement=endorsement)
