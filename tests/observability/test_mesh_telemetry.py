"""What a platform team sees of a running mesh: one trace per request across services over OTLP, with the RPC
semantic-convention attributes; refusals in metrics, logs and traces; JSON log lines with trace ids; and none of
the demo's plaintext values in any span, log line or metric."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import grpc
import pytest

from privmesh.keybroker.v1 import keybroker_pb2 as kb
from privmesh.keybroker.v1 import keybroker_pb2_grpc
from privmesh.runtime.client import secure_channel
from tests.observability.conftest import ObservedMesh
from tests.observability.otlp_receiver import ReceivedSpan

pytestmark = pytest.mark.slow
TOKENIZE = ("privmesh.tokenvault.v1.TokenVault", "Tokenize")
GENERATE = ("privmesh.keybroker.v1.KeyBroker", "GenerateDataKey")
SERVER, CLIENT = 2, 3  # opentelemetry.proto Span.SpanKind


def wait_for(observed: ObservedMesh, found: Callable[[list[ReceivedSpan]], bool], timeout: float = 30.0) \
        -> list[ReceivedSpan]:
    deadline = time.monotonic() + timeout
    while True:
        spans = observed.received.spans()
        if found(spans) or time.monotonic() > deadline:
            return spans
        time.sleep(0.2)


def rpc(span: ReceivedSpan) -> tuple[str, str]:
    return span.attributes.get("rpc.service", ""), span.attributes.get("rpc.method", "")


def test_each_request_is_one_trace_across_token_vault_and_key_broker(observed: ObservedMesh) -> None:
    spans = wait_for(observed, lambda s: any(rpc(x) == GENERATE and x.span.kind == SERVER for x in s)
                     and sum(rpc(x) == TOKENIZE and x.span.kind == SERVER for x in s) >= 2)
    by_id = {s.span_id: s for s in spans}
    tokenize = [s for s in spans if rpc(s) == TOKENIZE and s.span.kind == SERVER]
    assert len(tokenize) == 2  # the two batches
    assert len({s.trace_id for s in tokenize}) == len(tokenize), "two requests share a trace"
    generate = [s for s in spans if rpc(s) == GENERATE and s.span.kind == SERVER]
    assert generate, "key-broker served no GenerateDataKey"
    for served in generate:
        assert served.service == "key-broker"
        caller = by_id[served.parent_id]  # token-vault's client span ...
        assert caller.service == "token-vault" and caller.span.kind == CLIENT and rpc(caller) == GENERATE
        assert caller.trace_id == served.trace_id
        root = by_id[caller.parent_id]  # ... inside the vault's server span of the demo's request
        assert root.service == "token-vault" and root.span.kind == SERVER
        assert rpc(root) in (TOKENIZE, ("privmesh.tokenvault.v1.TokenVault", "CreateField"))
    first = tokenize[0].attributes
    assert first["rpc.system"] == "grpc" and first["rpc.grpc.status_code"] == 0
    assert first["server.address"] == "127.0.0.1" and isinstance(first["server.port"], int)
    assert first["client.address"] == "127.0.0.1" and isinstance(first["client.port"], int)
    assert tokenize[0].span.name == "privmesh.tokenvault.v1.TokenVault/Tokenize"
    client_attributes = by_id[generate[0].parent_id].attributes
    assert client_attributes["server.address"] == "127.0.0.1" and "rpc.grpc.status_code" in client_attributes


def test_a_refused_call_is_counted_traced_and_logged_with_its_reason(observed: ObservedMesh) -> None:
    endpoint = next(e for e in observed.mesh.endpoints if e.service == "key-broker")

    async def refused() -> grpc.StatusCode:
        async with secure_channel(endpoint.target, observed.mesh.layout.identity("auditor"),
                                  peer=endpoint.spiffe_id) as channel:
            stub = keybroker_pb2_grpc.KeyBrokerStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await stub.CreateKey(kb.CreateKeyRequest(alias="refused"))
        async with secure_channel(endpoint.target, observed.mesh.layout.identity("admin"),
                                  peer=endpoint.spiffe_id) as channel:
            garbage = channel.unary_unary("/privmesh.keybroker.v1.KeyBroker/GetKey")
            with pytest.raises(grpc.aio.AioRpcError) as malformed:
                await garbage(b"\xff\xff\xff")
            assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        return error.value.code()

    assert asyncio.run(refused()) == grpc.StatusCode.PERMISSION_DENIED
    body = observed.scrape("key-broker")
    assert ('privmesh_grpc_server_refusals_total{grpc_method="CreateKey",grpc_service="privmesh.keybroker.v1.'
            'KeyBroker",reason="PERMISSION_DENIED_BY_POLICY"} 1.0') in body
    assert 'grpc_method="GetKey",grpc_service="privmesh.keybroker.v1.KeyBroker",reason="MALFORMED_REQUEST"} 1.0' in body
    spans = wait_for(observed, lambda s: any(rpc(x) == ("privmesh.keybroker.v1.KeyBroker", "CreateKey")
                                             and x.attributes.get("privmesh.refused") for x in s))
    [span] = [s for s in spans if rpc(s) == ("privmesh.keybroker.v1.KeyBroker", "CreateKey") and s.span.kind == SERVER
              and s.attributes.get("privmesh.refused")]
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert span.attributes["privmesh.error.reason"] == "PERMISSION_DENIED_BY_POLICY"
    deadline = time.monotonic() + 10
    while not (lines := [r for r in observed.logs("key-broker") if r.get("method", "").endswith("/CreateKey")
                         and r.get("message") == "refused"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    [line] = lines
    assert line["level"] == "WARNING" and line["reason"] == "PERMISSION_DENIED_BY_POLICY"
    assert line["trace_id"] == span.trace_id and line["span_id"] == span.span_id


def test_every_log_line_is_json_with_trace_ids(observed: ObservedMesh) -> None:
    for endpoint in observed.mesh.endpoints:
        records = observed.logs(endpoint.service)  # json.loads raises on a line that is not JSON
        assert records, endpoint.service
        assert all("trace_id" in r and "span_id" in r for r in records)
    rpc_lines = [r for r in observed.logs("token-vault") if r.get("message") in ("rpc", "refused")]
    assert all(r["trace_id"] for r in rpc_lines)


def test_no_sensitive_value_in_any_span_log_or_metric(observed: ObservedMesh) -> None:
    wait_for(observed, lambda s: len(s) > 0)
    telemetry = "\n".join([*observed.received.as_json(),
                           *(line for e in observed.mesh.endpoints for line in observed.log_lines(e.service)),
                           *(observed.scrape(e.service) for e in observed.mesh.endpoints)])
    assert len(observed.sensitive) == 60 and len(telemetry) > 10_000
    leaked = [value for value in observed.sensitive if value in telemetry]
    assert not leaked, f"{len(leaked)} demo values in telemetry, e.g. {leaked[:3]}"
    assert "site-packages" not in telemetry and "/services/privmesh/" not in telemetry
