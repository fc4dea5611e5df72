"""Server reflection under both protocol names: grpc.reflection.v1 (what grpcurl, Postman and grpc-java's
tools ask first) and v1alpha. Written here because grpcio-reflection implements only v1alpha; v1's
messages are field-for-field the same as v1alpha's, so one servicer answers both paths with v1alpha's
(de)serializers."""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

V1ALPHA_SERVICE_NAME: str = reflection.SERVICE_NAME
V1_SERVICE_NAME = "grpc.reflection.v1.ServerReflection"


def enable_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Registers reflection v1 and v1alpha listing `service_names` and both reflection services."""
    servicer = reflection.aio.ReflectionServicer([*service_names, V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME])
    handlers = {"ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString)}
    for name in (V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME):
        server.add_registered_method_handlers(name, handlers)
