"""FLCoordinator and FLRunReporter over gRPC: paging over visible items, streaming of events and models; the
runtime authorizes the resources each method declares (the decrypted model is the "{name}:decrypted" view), and
the domain service does the rest."""

from __future__ import annotations

from collections.abc import AsyncIterator

from privmesh.fl.coordinator.service import CoordinatorService
from privmesh.fl.v1 import fl_pb2 as pb
from privmesh.fl.v1 import fl_pb2_grpc, reporter_pb2, reporter_pb2_grpc
from privmesh.runtime.authz import Authorizer
from privmesh.runtime.context import CallContext, current_principal
from privmesh.runtime.errors import InvalidArgument, PermissionDenied
from privmesh.runtime.paging import decode_token, name_page, page_size, visible_page

CHUNK = 1024 * 1024
MAX_UPLOAD = 64 * 1024 * 1024


def _basic(run: pb.Run) -> pb.Run:
    copy = pb.Run()
    copy.CopyFrom(run)
    del copy.rounds[:]
    del copy.participants[:]
    return copy


class FLCoordinatorServicer(fl_pb2_grpc.FLCoordinatorServicer):
    def __init__(self, service: CoordinatorService, authorizer: Authorizer) -> None:
        self._service = service
        self._authorizer = authorizer

    async def CreateFederation(self, request: pb.CreateFederationRequest,
                               context: CallContext) -> pb.CreateFederationResponse:
        federation = await self._service.create_federation(request, current_principal.get())
        return pb.CreateFederationResponse(federation=federation)

    async def GetFederation(self, request: pb.GetFederationRequest,
                            context: CallContext) -> pb.GetFederationResponse:
        return pb.GetFederationResponse(federation=await self._service.get_federation(request.name))

    async def ListFederations(self, request: pb.ListFederationsRequest,
                              context: CallContext) -> pb.ListFederationsResponse:
        limit, after = name_page(request)

        async def fetch(start: str | None, count: int) -> list[pb.Federation]:
            return await self._service.list_federations(start or "", count)

        page, token = await visible_page(fetch, after, limit, lambda f: f.name, self._authorizer.visible)
        return pb.ListFederationsResponse(federations=page, next_page_token=token)

    async def RegisterParticipant(self, request: pb.RegisterParticipantRequest,
                                  context: CallContext) -> pb.RegisterParticipantResponse:
        participant = await self._service.register_participant(request, current_principal.get())
        return pb.RegisterParticipantResponse(participant=participant)

    async def ListParticipants(self, request: pb.ListParticipantsRequest,
                               context: CallContext) -> pb.ListParticipantsResponse:
        limit, after = name_page(request)

        async def fetch(start: str | None, count: int) -> list[pb.Participant]:
            return await self._service.list_participants(request.parent, start or "", count)

        page, token = await visible_page(fetch, after, limit, lambda p: p.name, self._authorizer.visible)
        return pb.ListParticipantsResponse(participants=page, next_page_token=token)

    async def RemoveParticipant(self, request: pb.RemoveParticipantRequest,
                                context: CallContext) -> pb.RemoveParticipantResponse:
        await self._service.remove_participant(request.name)
        return pb.RemoveParticipantResponse()

    async def GetStartupKit(self, request: pb.GetStartupKitRequest,
                            context: CallContext) -> pb.GetStartupKitResponse:
        return await self._service.get_startup_kit(request, current_principal.get())

    async def ReportSiteAudit(self, request: pb.ReportSiteAuditRequest,
                              context: CallContext) -> pb.ReportSiteAuditResponse:
        return await self._service.report_site_audit(request, current_principal.get())

    async def StartRun(self, request: pb.StartRunRequest, context: CallContext) -> pb.StartRunResponse:
        return pb.StartRunResponse(run=await self._service.start_run(request, current_principal.get()))

    async def GetRun(self, request: pb.GetRunRequest, context: CallContext) -> pb.GetRunResponse:
        run = await self._service.get_run(request.name)
        return pb.GetRunResponse(run=_basic(run) if request.view == pb.RUN_VIEW_BASIC else run)

    async def ListRuns(self, request: pb.ListRunsRequest, context: CallContext) -> pb.ListRunsResponse:
        limit = page_size(request.page_size, 50, 500)
        before = decode_token(request.page_token, int)

        async def fetch(start: int | None, count: int) -> list[tuple[int, pb.Run]]:
            return await self._service.list_runs(request.parent, start, count, request.state)

        page, token = await visible_page(fetch, None if before is None else int(before), limit, lambda pair: pair[0],
                                         lambda pairs: [p for p in pairs if self._authorizer.visible([p[1]])])
        runs = [run if request.view == pb.RUN_VIEW_FULL else _basic(run) for _, run in page]
        return pb.ListRunsResponse(runs=runs, next_page_token=token)

    async def StopRun(self, request: pb.StopRunRequest, context: CallContext) -> pb.StopRunResponse:
        return pb.StopRunResponse(run=await self._service.stop_run(request.name))

    async def WatchRun(self, request: pb.WatchRunRequest,
                       context: CallContext) -> AsyncIterator[pb.WatchRunResponse]:
        async for event in self._service.watch_run(request.name, request.after_sequence):
            yield pb.WatchRunResponse(event=event)

    async def GetModel(self, request: pb.GetModelRequest,
                       context: CallContext) -> AsyncIterator[pb.GetModelResponse]:
        decrypted = request.representation == pb.MODEL_REPRESENTATION_DECRYPTED
        header, payload = await self._service.get_model(request.name, decrypted)
        yield pb.GetModelResponse(header=header)
        for offset in range(0, len(payload), CHUNK):
            yield pb.GetModelResponse(chunk=pb.ModelChunk(offset=offset, data=payload[offset:offset + CHUNK]))


class FLRunReporterServicer(reporter_pb2_grpc.FLRunReporterServicer):
    """Reports from the coordinator's own ServerApps: only its own identity may call."""

    def __init__(self, service: CoordinatorService, own_principal: str) -> None:
        self._service = service
        self._own = own_principal

    def _check_caller(self) -> None:
        if current_principal.get() != self._own:
            raise PermissionDenied("PERMISSION_DENIED_BY_POLICY", "only the coordinator's ServerApps report runs")

    async def ReportRun(self, request: reporter_pb2.ReportRunRequest,
                        context: CallContext) -> reporter_pb2.ReportRunResponse:
        self._check_caller()
        return reporter_pb2.ReportRunResponse(stop_requested=await self._service.report(request))

    async def UploadModel(self, request_iterator: AsyncIterator[reporter_pb2.UploadModelRequest],
                          context: CallContext) -> reporter_pb2.UploadModelResponse:
        self._check_caller()
        header: reporter_pb2.UploadedModelHeader | None = None
        parts: list[bytes] = []
        received = 0
        async for message in request_iterator:
            if header is None:
                if message.WhichOneof("payload") != "header":
                    raise InvalidArgument.single("header", "the first message must be the header")
                header = message.header
                if header.size_bytes > MAX_UPLOAD:
                    raise InvalidArgument.single("header.size_bytes", f"at most {MAX_UPLOAD} bytes")
                continue
            received += len(message.chunk)
            if received > header.size_bytes:
                raise InvalidArgument.single("chunk", "more bytes than the header announced")
            parts.append(message.chunk)
        if header is None:
            raise InvalidArgument.single("header", "required")
        model = await self._service.upload_model(header, b"".join(parts))
        return reporter_pb2.UploadModelResponse(model=model)

