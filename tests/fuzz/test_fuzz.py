"""Fuzzing every method of every service of a running mesh (unary and streaming) with messages generated
from the contracts' descriptors and with byte mutations of them, over mTLS as the admin identity.

Asserts, for every request: the answer is never INTERNAL or UNKNOWN and names no Python type; a refused
request leaves every listing of its service as it was; afterwards the service still runs and reports
SERVING. CI runs PRIVMESH_FUZZ_EXAMPLES (default 6) derandomized examples per method; `scripts/fuzz.py`
runs many more with fresh randomness.
"""

from __future__ import annotations

import os

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from privmesh.attestation.v1 import attestation_pb2
from privmesh.common.v1 import common_pb2
from privmesh.dpgateway.v1 import dpgateway_pb2
from privmesh.fhe.v1 import fhe_pb2
from privmesh.fl.v1 import fl_pb2, reporter_pb2
from privmesh.keybroker.v1 import keybroker_pb2
from privmesh.tokenvault.v1 import tokenvault_pb2
from tests.fuzz.conftest import Mesh, Target
from tests.fuzz.messages import messages, mutated

EXAMPLES = int(os.environ.get("PRIVMESH_FUZZ_EXAMPLES", "6"))
RANDOM = os.environ.get("PRIVMESH_FUZZ_RANDOM") == "1"
CALL_TIMEOUT = 30.0
NEVER = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
LEAKS = ("<class ", "Traceback", "DecodeError", "Exception")

SERVICES: list[ServiceDescriptor] = [
    *(module.DESCRIPTOR.services_by_name[name] for module, name in [
        (attestation_pb2, "AttestationVerifier"), (keybroker_pb2, "KeyBroker"), (tokenvault_pb2, "TokenVault"),
        (fhe_pb2, "FHEInference"), (dpgateway_pb2, "DPGateway"), (fl_pb2, "FLCoordinator"),
        (reporter_pb2, "FLRunReporter")]),
]
AUDIT = common_pb2.DESCRIPTOR.services_by_name["AuditLog"]
CASES = [pytest.param(s, m, None, id=f"{s.name}.{m.name}") for s in SERVICES for m in s.methods] + [
    pytest.param(AUDIT, m, server, id=f"{server}.AuditLog.{m.name}")
    for server in ("attestation-verifier", "key-broker", "token-vault", "fhe-inference", "dp-gateway",
                   "fl-coordinator") for m in AUDIT.methods]


# List methods that need a parent to list anything; the others list everything from an empty request.
LISTING_REQUESTS = {"ListFields": tokenvault_pb2.ListFieldsRequest(parent="tenants/-").SerializeToString()}


def _path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def call(channel: grpc.Channel, method: MethodDescriptor, requests: list[bytes]) -> tuple[grpc.StatusCode, str]:
    """Sends raw request bytes (one, or a stream) and reads the whole answer; returns its code and message."""
    path = _path(method)
    try:
        if method.client_streaming and method.server_streaming:
            for _ in channel.stream_stream(path)(iter(requests), timeout=CALL_TIMEOUT):
                pass
        elif method.client_streaming:
            channel.stream_unary(path)(iter(requests), timeout=CALL_TIMEOUT)
        elif method.server_streaming:
            for _ in channel.unary_stream(path)(requests[0], timeout=CALL_TIMEOUT):
                pass
        else:
            channel.unary_unary(path)(requests[0], timeout=CALL_TIMEOUT)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""  # type: ignore[attr-defined]
    return grpc.StatusCode.OK, ""


def listings(target: Target) -> dict[str, object]:
    """What every List method of the target's own services answers to an empty request."""
    found: dict[str, object] = {}
    for service in SERVICES:
        if service.full_name not in target.grpc_services:
            continue
        for method in service.methods:
            if method.name.startswith("List") and not method.client_streaming and not method.server_streaming:
                request = LISTING_REQUESTS.get(method.name, b"")
                try:
                    found[method.name] = target.channel.unary_unary(_path(method))(request, timeout=CALL_TIMEOUT)
                except grpc.RpcError as exc:
                    found[method.name] = exc.code()  # type: ignore[attr-defined]
    return found


@st.composite
def _requests(draw: st.DrawFn, method: MethodDescriptor) -> list[bytes]:
    count = draw(st.integers(1, 3)) if method.client_streaming else 1
    raw = [draw(messages(method.input_type)).SerializeToString() for _ in range(count)]
    if draw(st.booleans()):
        index = draw(st.integers(0, count - 1))
        raw[index] = draw(mutated(raw[index]))
    return raw


@pytest.mark.parametrize(("service", "method", "server"), CASES)
def test_no_request_gets_internal_or_changes_state_when_refused(mesh: Mesh, service: ServiceDescriptor,
                                                               method: MethodDescriptor, server: str | None) -> None:
    target = mesh.targets[server] if server else mesh.by_grpc_service(service.full_name)

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=not RANDOM,
              suppress_health_check=list(HealthCheck))
    @given(_requests(method))
    def exercise(requests: list[bytes]) -> None:
        before = listings(target)
        code, message = call(target.channel, method, requests)
        shown = [r.hex() for r in requests]
        assert code not in NEVER, f"{_path(method)} answered {code.name} ({message}) to {shown}"
        assert not any(leak in message for leak in LEAKS), f"{_path(method)}: {message!r} for {shown}"
        if code != grpc.StatusCode.OK:
            assert listings(target) == before, f"the refused {_path(method)} ({code.name}) changed state: {shown}"

    exercise()
    problem = mesh.alive(target)
    assert problem is None, problem
