"""The plaintext health-only port (for the kubelet's native grpc probe, which cannot do mTLS): it answers
grpc.health.v1 with the server's own statuses and serves nothing else."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from privmesh.runtime import echo
from privmesh.runtime.pki import DevPki
from tests.conftest import server_config, spiffe

RULES = [{"name": "alice-echo", "principals": [spiffe("alice")], "methods": ["privmesh.testing.v1.Echo/*"]}]


async def test_health_port_answers_health_and_nothing_else(tmp_path: Path, pki: DevPki, start_server) -> None:
    config = server_config(tmp_path, pki, RULES, {"database": f"sqlite:///{tmp_path / 'echo.db'}"},
                           health_listen="127.0.0.1:0")
    server = await start_server(echo.DEFINITION, config)
    assert server.health_port not in (0, server.port)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.health_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", echo.SERVICE):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await health.Check(health_pb2.HealthCheckRequest(service="nope.Service"), timeout=5)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        for method in ("/privmesh.testing.v1.Echo/Echo", "/privmesh.common.v1.AuditLog/GetAuditHead",
                       "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"):
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await channel.unary_unary(method)(b"", timeout=5)
            assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED, method
        await server.health.enter_graceful_shutdown()  # what stop() does first: the probe sees the drain
        reply = await health.Check(health_pb2.HealthCheckRequest(service=echo.SERVICE), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_without_health_listen_there_is_no_plaintext_port(tmp_path: Path, pki: DevPki, start_server) -> None:
    server = await start_server(echo.DEFINITION, server_config(
        tmp_path, pki, RULES, {"database": f"sqlite:///{tmp_path / 'echo.db'}"}))
    assert server.health_port == 0 and server.token_port == 0
