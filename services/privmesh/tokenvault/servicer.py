"""TokenVault over gRPC: translates protobuf <-> the domain services. The runtime authorizes the resources each
method declares (tenants/{tenant}/fields/{field}, its ":plaintext" view, tenants/{tenant}/rotations/{rotation})."""

from __future__ import annotations

from operator import attrgetter, methodcaller

from google.protobuf.timestamp_pb2 import Timestamp

from privmesh.runtime.authz import Authorizer
from privmesh.runtime.context import CallContext
from privmesh.runtime.errors import FailedPrecondition, InvalidArgument
from privmesh.runtime.paging import name_page, visible_page
from privmesh.tokenvault.field_service import FieldService
from privmesh.tokenvault.fields import LoadedField, field_name, parse_field_name, parse_tenant
from privmesh.tokenvault.rotation import Rotations, RotationView
from privmesh.tokenvault.v1 import tokenvault_pb2 as pb
from privmesh.tokenvault.v1 import tokenvault_pb2_grpc
from privmesh.tokenvault.vault import TokenizeBatch, Vault

_FIELD, _VALUE, _SUBJECT_ID = attrgetter("field"), attrgetter("value"), attrgetter("subject_id")
_HAS_TTL = methodcaller("HasField", "ttl")


def _tokenize_batch(request: pb.TokenizeRequest) -> TokenizeBatch:
    """The items column by column, read with C getters (no Python frame per item)."""
    items = list(request.items)
    ttls = ([i.ttl.ToMicroseconds() if i.HasField("ttl") else None for i in items]
            if any(map(_HAS_TTL, items)) else None)
    return TokenizeBatch(list(map(_FIELD, items)), list(map(_VALUE, items)), list(map(_SUBJECT_ID, items)), ttls)


def _ts(micros: int) -> Timestamp:
    return Timestamp(seconds=micros // 1_000_000, nanos=(micros % 1_000_000) * 1000)


def _tenant(parent: str, field: str = "parent") -> str:
    tenant = parse_tenant(parent)
    if tenant is None:
        raise InvalidArgument.single(field, "must be tenants/{tenant} (lower-case letters, digits, '-')")
    return tenant


def _field(name: str, field: str = "name") -> tuple[str, str]:
    parsed = parse_field_name(name)
    if parsed is None:
        raise InvalidArgument.single(field, "must be tenants/{tenant}/fields/{field}")
    return parsed


def _rotation(name: str) -> tuple[str, str]:
    parts = name.split("/")
    if len(parts) != 4 or parts[0] != "tenants" or parts[2] != "rotations" or parse_tenant("tenants/" + parts[1]) \
            is None or not parts[3].isalnum():
        raise InvalidArgument.single("name", "must be tenants/{tenant}/rotations/{rotation}")
    return parts[1], parts[3]


def field_to_proto(loaded: LoadedField) -> pb.Field:
    field = pb.Field()
    field.CopyFrom(loaded.config)
    stored = loaded.stored
    field.name = loaded.name
    field.create_time.CopyFrom(_ts(stored.create_us))
    field.update_time.CopyFrom(_ts(stored.update_us))
    field.etag = stored.etag
    return field


def rotation_to_proto(view: RotationView) -> pb.Rotation:
    body = view.body
    rotation = pb.Rotation(name=f"tenants/{view.tenant}/rotations/{view.id}", fields=body["fields"],
                           rotate_master_keys=body["rotate_master_keys"],
                           state="ROTATION_STATE_" + view.state,
                           entries_total=view.total, entries_done=view.done, create_time=_ts(body["create_us"]),
                           error_reason=body.get("error_reason", ""), error_message=body.get("error_message", ""),
                           requested_by=body["requested_by"])
    for key, part in (("start_us", "start_time"), ("end_us", "end_time")):
        if key in body:
            getattr(rotation, part).CopyFrom(_ts(body[key]))
    return rotation


class TokenVaultServicer(tokenvault_pb2_grpc.TokenVaultServicer):
    def __init__(self, vault: Vault, fields: FieldService, rotations: Rotations | None,
                 authorizer: Authorizer) -> None:
        """`rotations` None: this entry point runs none (the serverless vault; rotations run in the mesh)."""
        self._vault = vault
        self._fields = fields
        self._rotation_jobs = rotations
        self._authorizer = authorizer

    @property
    def _rotations(self) -> Rotations:
        if self._rotation_jobs is None:
            raise FailedPrecondition("ROTATIONS_UNAVAILABLE", "rotations run in the mesh's token-vault service")
        return self._rotation_jobs

    async def CreateField(self, request: pb.CreateFieldRequest,
                          context: CallContext) -> pb.CreateFieldResponse:
        tenant = _tenant(request.parent)
        _field(field_name(tenant, request.field_id), "field_id")
        loaded = await self._fields.create(tenant, request.field_id, request.field, request.request_id)
        return pb.CreateFieldResponse(field=field_to_proto(loaded))

    async def GetField(self, request: pb.GetFieldRequest, context: CallContext) -> pb.GetFieldResponse:
        tenant, field = _field(request.name)
        return pb.GetFieldResponse(field=field_to_proto(await self._fields.get(tenant, field)))

    async def ListFields(self, request: pb.ListFieldsRequest,
                         context: CallContext) -> pb.ListFieldsResponse:
        tenant = None if request.parent == "tenants/-" else _tenant(request.parent)
        limit, after = name_page(request)

        async def fetch(start: str | None, count: int) -> list[pb.Field]:
            return [field_to_proto(f) for f in await self._fields.list(tenant, start or "", count)]

        page, token = await visible_page(fetch, after, limit, lambda f: f.name, self._authorizer.visible)
        return pb.ListFieldsResponse(fields=page, next_page_token=token)

    async def UpdateField(self, request: pb.UpdateFieldRequest,
                          context: CallContext) -> pb.UpdateFieldResponse:
        tenant, field = _field(request.field.name, "field.name")
        loaded = await self._fields.update(tenant, field, request.field, list(request.update_mask.paths), request.etag)
        return pb.UpdateFieldResponse(field=field_to_proto(loaded))

    async def DeleteField(self, request: pb.DeleteFieldRequest,
                          context: CallContext) -> pb.DeleteFieldResponse:
        tenant, field = _field(request.name)
        return pb.DeleteFieldResponse(deleted_count=await self._fields.delete(tenant, field, request.force,
                                                                              request.etag))

    async def Tokenize(self, request: pb.TokenizeRequest, context: CallContext) -> pb.TokenizeResponse:
        tenant = _tenant(request.parent)
        self._vault.check_batch_size(len(request.items))
        batch = _tokenize_batch(request)
        tokens, expiries = await self._vault.tokenize(tenant, batch, request.request_id)
        reply = pb.TokenizeResponse()
        add = reply.results.add  # in place: 3x faster than building each message and copying it in
        if expiries.count(None) == len(expiries):
            for token in tokens:
                add(token=token)
            return reply
        for token, expire in zip(tokens, expiries, strict=True):
            if expire is None:
                add(token=token)
            else:
                add(token=token, expire_time=_ts(expire))
        return reply

    async def Detokenize(self, request: pb.DetokenizeRequest,
                         context: CallContext) -> pb.DetokenizeResponse:
        tenant = _tenant(request.parent)
        self._vault.check_batch_size(len(request.items))
        if request.view not in pb.DetokenizeView.values():
            raise InvalidArgument.single("view", "unknown view")

        def plaintext_granted(field: str) -> bool:
            return self._authorizer.allows_resource(f"{field_name(tenant, field)}:plaintext")

        results = await self._vault.detokenize(tenant, [(i.field, i.token) for i in request.items], request.view,
                                               request.purpose, plaintext_granted, request.request_id)
        return pb.DetokenizeResponse(results=[pb.DetokenizedValue(value=r.value, view=pb.DetokenizeView.Name(r.view))
                                                 for r in results])

    async def DeleteTokens(self, request: pb.DeleteTokensRequest,
                           context: CallContext) -> pb.DeleteTokensResponse:
        tenant = _tenant(request.parent)
        self._vault.check_batch_size(len(request.items))
        deleted = await self._vault.delete_tokens(tenant, [(i.field, i.token) for i in request.items],
                                                  request.request_id)
        return pb.DeleteTokensResponse(deleted_count=deleted)

    async def ForgetSubject(self, request: pb.ForgetSubjectRequest,
                            context: CallContext) -> pb.ForgetSubjectResponse:
        tenant = _tenant(request.parent)
        erasure = await self._vault.forget_subject(tenant, request.subject_id, request.request_id)
        reply = pb.ForgetSubjectResponse(
            deleted_count=sum(erasure.counts.values()), deleted_by_field=erasure.counts,
            subject_key_destroyed=erasure.destroyed,
            subject_key_deletions=[pb.SubjectKeyDeletion(field=name, deletion_time=_ts(when))
                                   for name, when in sorted(erasure.deletions.items())])
        reply.forget_time.GetCurrentTime()
        return reply

    async def RotateKeys(self, request: pb.RotateKeysRequest,
                         context: CallContext) -> pb.RotateKeysResponse:
        tenant = _tenant(request.parent)
        view = await self._rotations.start(tenant, list(request.fields), request.rotate_master_keys,
                                           request.request_id)
        return pb.RotateKeysResponse(rotation=rotation_to_proto(view))

    async def GetRotation(self, request: pb.GetRotationRequest,
                          context: CallContext) -> pb.GetRotationResponse:
        tenant, rotation = _rotation(request.name)
        return pb.GetRotationResponse(rotation=rotation_to_proto(await self._rotations.get(tenant, rotation)))

    async def ListRotations(self, request: pb.ListRotationsRequest,
                            context: CallContext) -> pb.ListRotationsResponse:
        tenant = _tenant(request.parent)
        limit, before = name_page(request)

        async def fetch(start: str | None, count: int) -> list[pb.Rotation]:
            return [rotation_to_proto(r) for r in await self._rotations.list(tenant, start or "", count)]

        page, token = await visible_page(fetch, before, limit, lambda r: r.name.rsplit("/", 1)[-1],
                                         self._authorizer.visible)
        return pb.ListRotationsResponse(rotations=page, next_page_token=token)

    async def CancelRotation(self, request: pb.CancelRotationRequest,
                             context: CallContext) -> pb.CancelRotationResponse:
        tenant, rotation = _rotation(request.name)
        return pb.CancelRotationResponse(rotation=rotation_to_proto(await self._rotations.cancel(tenant, rotation)))
