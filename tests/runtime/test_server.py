"""The runtime over real mTLS on loopback: identity, authorization, rich errors, health, reflection,
metrics, tracing and the fail-closed audit log, through the domain-free echo service."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sqlite3
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from privmesh.common.v1 import common_pb2, common_pb2_grpc
from privmesh.runtime import echo
from privmesh.runtime.client import ClientIdentity, secure_channel
from privmesh.runtime.errors import read_error
from privmesh.runtime.pki import DevPki
from tests.conftest import identity, server_config, spiffe

ECHO = "/privmesh.testing.v1.Echo/"
RULES = [
    {"name": "alice-echo", "principals": [spiffe("alice")], "methods": ["privmesh.testing.v1.Echo/*"],
     "resources": ["items/a*"]},
    {"name": "auditor", "principals": [spiffe("auditor")], "methods": ["privmesh.common.v1.AuditLog/*"]},
]


@pytest.fixture
async def echo_server(tmp_path: Path, pki: DevPki, start_server):  # type: ignore[no-untyped-def]
    config = server_config(tmp_path, pki, RULES, {"database": f"sqlite:///{tmp_path / 'echo.db'}"})
    return await start_server(echo.DEFINITION, config)


def channel(server, ident: ClientIdentity) -> grpc.aio.Channel:  # type: ignore[no-untyped-def]
    return secure_channel(f"127.0.0.1:{server.port}", ident, timeout_seconds=5, peer=spiffe("server"))


def items(tmp_path: Path) -> dict[str, str]:
    with sqlite3.connect(tmp_path / "echo.db") as conn:
        return dict(conn.execute("SELECT name, value FROM items").fetchall())


def refusals(tmp_path: Path) -> list[tuple[str, str, str, str]]:
    """Every audit entry, as (principal, operation, outcome, reason): here, only refusals are expected."""
    with sqlite3.connect(tmp_path / "audit.db") as conn:
        rows = conn.execute("SELECT principal, operation, outcome, details FROM audit_entries ORDER BY sequence")
        return [(p, op, outcome, json.loads(details).get("reason", "")) for p, op, outcome, details in rows]


def audit_count(tmp_path: Path) -> int:
    with sqlite3.connect(tmp_path / "audit.db") as conn:
        return int(conn.execute("SELECT COUNT(*) FROM audit_entries").fetchone()[0])


async def test_authorised_call_is_served_and_audited(echo_server, pki: DevPki, tmp_path: Path) -> None:
    async with channel(echo_server, identity(pki, "alice")) as ch:
        assert await ch.unary_unary(ECHO + "Echo")(b"hello") == b"hello"
        assert await ch.unary_unary(ECHO + "Put")(b"apple=1") == b"ok"
    assert items(tmp_path) == {"apple": "1"}
    with sqlite3.connect(tmp_path / "audit.db") as conn:
        rows = conn.execute("SELECT principal, operation, resource FROM audit_entries ORDER BY sequence").fetchall()
    assert rows == [(spiffe("alice"), "Echo", ""), (spiffe("alice"), "Put", "items/apple")]


async def test_client_without_certificate_is_refused(echo_server, pki: DevPki) -> None:
    creds = grpc.ssl_channel_credentials(root_certificates=pki.ca_file.read_bytes())
    async with grpc.aio.secure_channel(f"127.0.0.1:{echo_server.port}", creds) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await ch.unary_unary(ECHO + "Echo")(b"x", timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_plaintext_client_is_refused(echo_server) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{echo_server.port}") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await ch.unary_unary(ECHO + "Echo")(b"x", timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_certificate_from_foreign_ca_is_refused(echo_server, tmp_path: Path) -> None:
    foreign = DevPki(tmp_path / "foreign")
    foreign.init("some other CA")
    foreign.issue("alice")  # same SPIFFE ID, wrong issuer
    bundle = foreign.bundle("alice")
    creds = grpc.ssl_channel_credentials(root_certificates=(tmp_path / "foreign" / "ca.crt").read_bytes()
                                         + echo_server_ca(echo_server), private_key=bundle.key_file.read_bytes(),
                                         certificate_chain=bundle.cert_file.read_bytes())
    async with grpc.aio.secure_channel(f"127.0.0.1:{echo_server.port}", creds) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await ch.unary_unary(ECHO + "Echo")(b"x", timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def echo_server_ca(server) -> bytes:  # type: ignore[no-untyped-def]
    return Path(server.config.tls.ca_file).read_bytes()


async def test_expired_certificate_is_refused(echo_server, pki: DevPki, tmp_path: Path) -> None:
    expired = DevPki(tmp_path / "expired")
    expired.directory.mkdir()
    for name in ("ca.crt", "ca.key"):
        (expired.directory / name).write_bytes((pki.directory / name).read_bytes())
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=2)
    expired.issue("alice", not_before=past, validity=dt.timedelta(hours=1))
    async with channel(echo_server, identity(expired, "alice")) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await ch.unary_unary(ECHO + "Echo")(b"x")
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_unlisted_principal_is_denied_by_default(echo_server, pki: DevPki, tmp_path: Path) -> None:
    async with channel(echo_server, identity(pki, "bob")) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await ch.unary_unary(ECHO + "Put")(b"apple=1")
    details = read_error(err.value)
    assert details.code == grpc.StatusCode.PERMISSION_DENIED
    assert (details.reason, details.domain) == ("PERMISSION_DENIED_BY_POLICY", "echo.privmesh.dev")
    assert items(tmp_path) == {}
    assert refusals(tmp_path) == [(spiffe("bob"), "Put", "DENIED", "PERMISSION_DENIED_BY_POLICY")]


async def test_resource_outside_the_rule_is_denied_and_nothing_changes(echo_server, pki: DevPki,
                                                                        tmp_path: Path) -> None:
    async with channel(echo_server, identity(pki, "alice")) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await ch.unary_unary(ECHO + "Put")(b"banana=1")
    assert read_error(err.value).reason == "PERMISSION_DENIED_BY_POLICY"
    assert items(tmp_path) == {}
    assert refusals(tmp_path) == [(spiffe("alice"), "Put", "DENIED", "PERMISSION_DENIED_BY_POLICY")]


async def test_invalid_argument_names_the_field(echo_server, pki: DevPki, tmp_path: Path) -> None:
    async with channel(echo_server, identity(pki, "alice")) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await ch.unary_unary(ECHO + "Put")(b"apple=")
    details = read_error(err.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.reason == "INVALID_FIELD"
    assert [(v.field, v.description) for v in details.violations] == [("value", "must not be empty")]
    assert items(tmp_path) == {}
    assert audit_count(tmp_path) == 0


async def test_unexpected_error_is_internal_without_details(echo_server, pki: DevPki) -> None:
    async with channel(echo_server, identity(pki, "alice")) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await ch.unary_unary(ECHO + "Fail")(b"")
    details = read_error(err.value)
    assert details.code == grpc.StatusCode.INTERNAL
    assert details.reason == "INTERNAL"
    assert "secret" not in details.message and "secret" not in (err.value.details() or "")


async def test_audit_failure_fails_the_operation_closed(echo_server, pki: DevPki, tmp_path: Path) -> None:
    async with channel(echo_server, identity(pki, "alice")) as ch:
        await ch.unary_unary(ECHO + "Put")(b"apple=1")
        # The audit store starts refusing writes (as a full or read-only disk would).
        with sqlite3.connect(tmp_path / "audit.db") as conn:
            conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON audit_entries "
                         "BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await ch.unary_unary(ECHO + "Put")(b"apple=2")
        details = read_error(err.value)
        assert details.code == grpc.StatusCode.UNAVAILABLE
        assert details.reason == "AUDIT_UNAVAILABLE"
        assert items(tmp_path) == {"apple": "1"}
        assert audit_count(tmp_path) == 1
        # Once the store accepts writes again, the chain continues intact.
        with sqlite3.connect(tmp_path / "audit.db") as conn:
            conn.execute("DROP TRIGGER refuse")
        await ch.unary_unary(ECHO + "Put")(b"apple=3")
    assert items(tmp_path) == {"apple": "3"}
    assert audit_count(tmp_path) == 2


async def test_health_reports_each_service(echo_server, pki: DevPki) -> None:
    async with channel(echo_server, identity(pki, "bob")) as ch:  # health is open to every mesh peer
        stub = health_pb2_grpc.HealthStub(ch)
        for name in ("", echo.SERVICE, "privmesh.common.v1.AuditLog"):
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=name))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("service", ["grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection"])
async def test_reflection_lists_and_describes_services(echo_server, pki: DevPki, service: str) -> None:
    async with channel(echo_server, identity(pki, "bob")) as ch:
        # v1's messages are v1alpha's under another package: the same (de)serializers speak both.
        info = ch.stream_stream(f"/{service}/ServerReflectionInfo",
                                request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                                response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)

        async def ask(request: reflection_pb2.ServerReflectionRequest) -> reflection_pb2.ServerReflectionResponse:
            call = info()
            await call.write(request)
            await call.done_writing()
            return await call.read()

        listed = await ask(reflection_pb2.ServerReflectionRequest(list_services=""))
        names = {s.name for s in listed.list_services_response.service}
        assert {"privmesh.common.v1.AuditLog", "grpc.health.v1.Health", echo.SERVICE, service} <= names
        described = await ask(reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="privmesh.common.v1.AuditLog"))
        assert described.file_descriptor_response.file_descriptor_proto


async def test_metrics_count_requests_by_method_type_and_code(echo_server, pki: DevPki) -> None:
    async with channel(echo_server, identity(pki, "alice")) as ch:
        for _ in range(3):
            await ch.unary_unary(ECHO + "Echo")(b"x")
        with pytest.raises(grpc.aio.AioRpcError):
            await ch.unary_unary(ECHO + "Put")(b"apple=")
    url = f"http://127.0.0.1:{echo_server.metrics_port}/metrics"
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    echo_rpc = 'grpc_method="Echo",grpc_service="privmesh.testing.v1.Echo",grpc_type="unary"'
    assert f'grpc_server_handled_total{{grpc_code="OK",{echo_rpc}}} 3.0' in body
    assert f'grpc_server_started_total{{{echo_rpc}}} 3.0' in body
    assert f'grpc_server_handling_seconds_count{{{echo_rpc}}} 3.0' in body
    assert 'grpc_server_handled_total{grpc_code="INVALID_ARGUMENT",grpc_method="Put",' in body
    assert 'grpc_server_handled_total{grpc_code="DATA_LOSS",grpc_method="Put",' in body  # every series from the start
    assert "_created" not in body
    assert "process_cpu_seconds_total" in body and 'privmesh_service_info{privmesh_service="echo"} 1.0' in body
    assert ' service="' not in body and "{service=" not in body


async def test_tracing_continues_the_callers_trace(tmp_path: Path, pki: DevPki, start_server) -> None:
    exporter = InMemorySpanExporter()
    config = server_config(tmp_path, pki, RULES, {"database": f"sqlite:///{tmp_path / 'echo.db'}"})
    server = await start_server(echo.DEFINITION, config, span_exporter=exporter)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    async with channel(server, identity(pki, "alice")) as ch:
        await ch.unary_unary(ECHO + "Echo")(b"x", metadata=(("traceparent", f"00-{trace_id}-00f067aa0ba902b7-01"),))
    [span] = exporter.get_finished_spans()
    assert span.name == "privmesh.testing.v1.Echo/Echo"
    assert format(span.context.trace_id, "032x") == trace_id
    assert span.attributes["privmesh.principal"] == spiffe("alice")
    assert span.attributes["rpc.system"] == "grpc" and span.attributes["rpc.service"] == "privmesh.testing.v1.Echo"
    assert span.attributes["rpc.method"] == "Echo" and span.attributes["rpc.grpc.status_code"] == 0
    assert span.attributes["server.port"] == server.port and span.attributes["client.address"] == "127.0.0.1"


async def test_audit_log_service_pages_entries_and_signs_the_head(echo_server, pki: DevPki) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from privmesh.runtime.audit.chain import verify_log
    from privmesh.runtime.audit.servicer import checkpoint_from_proto, entry_from_proto

    async with channel(echo_server, identity(pki, "alice")) as ch:
        for i in range(12):
            await ch.unary_unary(ECHO + "Echo")(str(i).encode())
    async with channel(echo_server, identity(pki, "auditor")) as ch:
        stub = common_pb2_grpc.AuditLogStub(ch)
        head = await stub.GetAuditHead(common_pb2.GetAuditHeadRequest())
        entries, token = [], ""
        while True:
            page = await stub.ListAuditEntries(common_pb2.ListAuditEntriesRequest(page_size=5, page_token=token))
            entries += page.entries
            token = page.next_page_token
            if not token:
                break
        checkpoints = (await stub.ListAuditCheckpoints(common_pb2.ListAuditCheckpointsRequest())).checkpoints
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ListAuditEntries(common_pb2.ListAuditEntriesRequest(page_token="forged"))
        assert read_error(err.value).reason == "INVALID_PAGE_TOKEN"
    assert [e.sequence for e in entries] == list(range(1, 13))
    assert [c.sequence for c in checkpoints][:2] == [5, 10]
    key = Ed25519PublicKey.from_public_bytes(head.public_key)
    finding = verify_log("echo", [entry_from_proto(e) for e in entries],
                         [checkpoint_from_proto(c) for c in checkpoints], checkpoint_from_proto(head.head), key)
    assert finding is None
