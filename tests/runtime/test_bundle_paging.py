"""Evidence export pages in bounded time whatever the server answers: a hostile AuditLog server over mTLS that
promises a next page forever (empty pages of entries, the same checkpoint again and again) does not keep
`export_service` looping."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from privmesh.common.v1 import common_pb2, common_pb2_grpc
from privmesh.runtime.audit.bundle import export_service
from privmesh.runtime.pki import DevPki
from tests.conftest import identity, spiffe


class EndlessPages(common_pb2_grpc.AuditLogServicer):
    def __init__(self) -> None:
        self.pages = 0

    async def GetAuditHead(self, request: common_pb2.GetAuditHeadRequest,
                           context: grpc.aio.ServicerContext) -> common_pb2.GetAuditHeadResponse:
        return common_pb2.GetAuditHeadResponse(head=common_pb2.AuditCheckpoint(service="hostile", sequence=3))

    async def ListAuditEntries(self, request: common_pb2.ListAuditEntriesRequest,
                               context: grpc.aio.ServicerContext) -> common_pb2.ListAuditEntriesResponse:
        self.pages += 1
        return common_pb2.ListAuditEntriesResponse(next_page_token="more")

    async def ListAuditCheckpoints(self, request: common_pb2.ListAuditCheckpointsRequest,
                                   context: grpc.aio.ServicerContext) -> common_pb2.ListAuditCheckpointsResponse:
        self.pages += 1
        return common_pb2.ListAuditCheckpointsResponse(
            checkpoints=[common_pb2.AuditCheckpoint(service="hostile", sequence=1)], next_page_token="more")


@pytest.mark.timeout(60)
async def test_export_stops_paging_a_server_that_never_ends(pki: DevPki) -> None:
    bundle = pki.bundle("server")
    credentials = grpc.ssl_server_credentials(
        [(bundle.key_file.read_bytes(), bundle.cert_file.read_bytes())], bundle.ca_file.read_bytes(),
        require_client_auth=True)
    server = grpc.aio.server()
    servicer = EndlessPages()
    common_pb2_grpc.add_AuditLogServicer_to_server(servicer, server)
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        exported = await asyncio.wait_for(export_service(f"127.0.0.1:{port}", identity(pki, "alice"),
                                                         spiffe("server")), 30)
    finally:
        await server.stop(None)
    assert exported["entries"] == [] and len(exported["checkpoints"]) <= 4
    assert servicer.pages <= 1 + 4  # one empty page of entries; checkpoints stop at the head's sequence + 1
