"""Requests the runtime refuses before a handler sees them (undecodable bodies, out-of-range Timestamp and
Duration fields, calls over a caller's rate limit), over real mTLS on loopback, unary and streaming."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import BaseModel

from privmesh.common.v1 import common_pb2
from privmesh.runtime.access import Declaration
from privmesh.runtime.config import RateLimitGroup
from privmesh.runtime.errors import ResourceExhausted, read_error
from privmesh.runtime.pki import DevPki
from privmesh.runtime.ratelimit import RateLimiter
from privmesh.runtime.requests import check_request
from privmesh.runtime.server import Registration, Runtime, ServiceDefinition
from tests.conftest import identity, server_config, spiffe

SERVICE = "privmesh.testing.v1.Stamps"
RULES = [{"name": "all", "principals": [spiffe("alice"), spiffe("bob")], "methods": [f"{SERVICE}/*"]}]
ENTRY = common_pb2.AuditEntry


class _Settings(BaseModel):
    pass


class _Stamps:
    """Counts what reaches the handlers: a refused request must never get there."""

    def __init__(self) -> None:
        self.seen = 0

    async def one(self, request: common_pb2.AuditEntry, context: grpc.aio.ServicerContext) -> common_pb2.AuditEntry:
        self.seen += 1
        request.time.ToDatetime()  # raises for an out-of-range value: the runtime must have refused it first
        return request

    async def many(self, requests: AsyncIterator[common_pb2.AuditEntry],
                   context: grpc.aio.ServicerContext) -> common_pb2.AuditEntry:
        count = 0
        async for request in requests:
            self.seen += 1
            request.time.ToDatetime()
            count += 1
        return ENTRY(sequence=count)

    async def echo_all(self, requests: AsyncIterator[common_pb2.AuditEntry],
                       context: grpc.aio.ServicerContext) -> AsyncIterator[common_pb2.AuditEntry]:
        async for request in requests:
            self.seen += 1
            yield request


STAMPS = _Stamps()


async def _build(runtime: Runtime, settings: _Settings) -> Sequence[Registration]:
    codec = {"request_deserializer": ENTRY.FromString, "response_serializer": ENTRY.SerializeToString}
    handlers = {"One": grpc.unary_unary_rpc_method_handler(STAMPS.one, **codec),
                "Many": grpc.stream_unary_rpc_method_handler(STAMPS.many, **codec),
                "EchoAll": grpc.stream_stream_rpc_method_handler(STAMPS.echo_all, **codec)}
    generic = grpc.method_handlers_generic_handler(SERVICE, handlers)
    declarations = {f"{SERVICE}/{name}": Declaration.without_contract(f"{SERVICE}/{name}") for name in handlers}
    return [Registration(SERVICE, lambda server: server.add_generic_rpc_handlers((generic,)), declarations)]


DEFINITION = ServiceDefinition("stamps", "stamps.privmesh.dev", _Settings, _build)


@pytest.fixture
async def stamps(tmp_path: Path, pki: DevPki, start_server):  # type: ignore[no-untyped-def]
    STAMPS.seen = 0
    limits = [{"name": "writes", "methods": [f"{SERVICE}/One"], "per_second": 5, "burst": 3}]
    return await start_server(DEFINITION, server_config(tmp_path, pki, RULES, rate_limits=limits))


def _channel(server, pki: DevPki, name: str = "alice") -> grpc.aio.Channel:  # type: ignore[no-untyped-def]
    from privmesh.runtime.client import secure_channel

    return secure_channel(f"127.0.0.1:{server.port}", identity(pki, name), timeout_seconds=5, peer=spiffe("server"))


async def _refusal(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call  # type: ignore[misc]
    return err.value


def _bytes_of(*entries: common_pb2.AuditEntry) -> list[bytes]:
    return [e.SerializeToString() for e in entries]


GARBAGE = b"\x0a\xff\xff\xff\xff\x0f"  # field 1 as a length-delimited field longer than the message


async def test_undecodable_bodies_are_invalid_argument_on_unary_and_streaming_methods(stamps, pki: DevPki) -> None:
    async with _channel(stamps, pki) as ch:
        errors = [
            await _refusal(ch.unary_unary(f"/{SERVICE}/One")(GARBAGE)),
            await _refusal(ch.stream_unary(f"/{SERVICE}/Many")(iter([ENTRY(sequence=1).SerializeToString(), GARBAGE]))),
        ]
        call = ch.stream_stream(f"/{SERVICE}/EchoAll")(iter([GARBAGE]))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in call:
                pass
        errors.append(err.value)
    for error in errors:
        details = read_error(error)
        assert details.code == grpc.StatusCode.INVALID_ARGUMENT
        assert details.reason == "MALFORMED_REQUEST" and details.domain == "stamps.privmesh.dev"
        assert "DecodeError" not in (error.details() or "") and "class" not in (error.details() or "")
    assert STAMPS.seen == 1  # only the stream's first, valid message reached a handler


@pytest.mark.parametrize(("entry", "field"), [
    (ENTRY(time=Timestamp(seconds=253_402_300_800)), "time.seconds"),
    (ENTRY(time=Timestamp(seconds=-62_135_596_801)), "time.seconds"),
    (ENTRY(time=Timestamp(seconds=1, nanos=-1)), "time.nanos"),
    (ENTRY(time=Timestamp(seconds=1, nanos=1_000_000_000)), "time.nanos"),
])
async def test_out_of_range_timestamps_are_invalid_argument_naming_the_field(stamps, pki: DevPki, entry, field) -> None:
    async with _channel(stamps, pki) as ch:
        error = await _refusal(ch.unary_unary(f"/{SERVICE}/One")(entry.SerializeToString()))
        streamed = await _refusal(ch.stream_unary(f"/{SERVICE}/Many")(iter(_bytes_of(entry))))
    for refused in (error, streamed):
        details = read_error(refused)
        assert details.code == grpc.StatusCode.INVALID_ARGUMENT
        assert [v.field for v in details.violations] == [field]
        assert details.message.count(field) == 1
    assert STAMPS.seen == 0


def test_durations_nested_and_in_range_values_are_checked() -> None:
    from privmesh.attestation.v1 import attestation_pb2 as pb
    from privmesh.runtime.errors import InvalidArgument

    check_request(pb.PutPolicyRequest(policy=pb.Policy(max_document_age=Duration(seconds=60))))
    check_request(ENTRY(time=Timestamp(seconds=253_402_300_799, nanos=999_999_999)))
    for bad, field in [(Duration(seconds=315_576_000_001), "policy.max_document_age.seconds"),
                       (Duration(seconds=1, nanos=-1), "policy.max_document_age.nanos"),
                       (Duration(nanos=1_000_000_000), "policy.max_document_age.nanos")]:
        with pytest.raises(InvalidArgument) as err:
            check_request(pb.PutPolicyRequest(policy=pb.Policy(max_document_age=bad)))
        assert [v.field for v in err.value.violations] == [field]


async def test_a_caller_over_its_rate_limit_gets_resource_exhausted_with_retry_info(stamps, pki: DevPki) -> None:
    async with _channel(stamps, pki, "alice") as alice, _channel(stamps, pki, "bob") as bob:
        one = f"/{SERVICE}/One"
        for _ in range(3):
            await alice.unary_unary(one)(ENTRY(sequence=1).SerializeToString())
        details = read_error(await _refusal(alice.unary_unary(one)(ENTRY().SerializeToString())))
        assert details.code == grpc.StatusCode.RESOURCE_EXHAUSTED and details.reason == "RATE_LIMITED"
        assert details.retry_delay_seconds is not None and 0 < details.retry_delay_seconds <= 0.2
        assert details.quota_violations == (spiffe("alice"),)
        await bob.unary_unary(one)(ENTRY().SerializeToString())  # another identity has its own bucket
        await alice.stream_unary(f"/{SERVICE}/Many")(iter(_bytes_of(ENTRY())))  # another group: not limited
        await asyncio.sleep(details.retry_delay_seconds + 0.05)
        await alice.unary_unary(one)(ENTRY().SerializeToString())


async def test_a_noisy_caller_does_not_starve_another(stamps, pki: DevPki) -> None:
    """alice floods One from many tasks; bob's calls at his own modest pace all succeed meanwhile."""
    one = f"/{SERVICE}/One"
    async with _channel(stamps, pki, "alice") as alice, _channel(stamps, pki, "bob") as bob:
        stop = asyncio.Event()
        outcomes: dict[str, int] = {"ok": 0, "limited": 0}

        async def flood() -> None:
            while not stop.is_set():
                try:
                    await alice.unary_unary(one)(ENTRY().SerializeToString())
                    outcomes["ok"] += 1
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                    outcomes["limited"] += 1

        flooders = [asyncio.create_task(flood()) for _ in range(8)]
        try:
            for _ in range(5):  # 4 calls/s: within bob's 5/s
                await bob.unary_unary(one)(ENTRY().SerializeToString())
                await asyncio.sleep(0.25)
        finally:
            stop.set()
            await asyncio.gather(*flooders)
    assert outcomes["limited"] > 10 * outcomes["ok"] > 0


def test_token_bucket_refills_at_its_rate_and_keeps_few_buckets() -> None:
    now = [0.0]
    limiter = RateLimiter([RateLimitGroup(name="g", methods=("s/*",), per_second=2, burst=2)], max_buckets=2,
                          clock=lambda: now[0])
    limiter.acquire("a", "s/M")
    limiter.acquire("a", "s/M")
    with pytest.raises(ResourceExhausted):
        limiter.acquire("a", "s/M")
    now[0] = 0.5
    limiter.acquire("a", "s/M")  # one token back after 1/rate seconds
    limiter.acquire("a", "grpc.health.v1.Health/Check")  # probes are never limited
    limiter.acquire("a", "other/M")  # in no group
    for name in ("b", "c", "d"):
        limiter.acquire(name, "s/M")
    limiter.acquire("a", "s/M")  # "a" was dropped (least recently used): a fresh, full bucket


def test_enum_values_the_enum_does_not_declare_are_refused_with_their_path() -> None:
    from privmesh.dpgateway.v1 import dpgateway_pb2 as dp
    from privmesh.runtime.errors import InvalidArgument

    check_request(dp.RegisterDatasetRequest(dataset=dp.Dataset(accounting=dp.PRIVACY_ACCOUNTING_ZCDP)))
    bad = dp.RegisterDatasetRequest.FromString(bytes.fromhex("120d1a0b1080808080f8ffffffff01"))  # found by fuzzing
    with pytest.raises(InvalidArgument) as err:
        check_request(bad)
    assert [v.field for v in err.value.violations] == ["dataset.source.format"]
    columns = dp.Dataset(columns=[dp.ColumnSchema(name="a"), dp.ColumnSchema(name="b", type=99)])
    with pytest.raises(InvalidArgument) as err:
        check_request(dp.RegisterDatasetRequest(dataset=columns))
    assert [v.field for v in err.value.violations] == ["dataset.columns[1].type"]
