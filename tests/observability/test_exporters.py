"""The tracer provider follows the standard OTEL_* variables: OTLP over gRPC or HTTP to the configured endpoint,
the sampler, and refuses an exporter or protocol it does not ship."""

from __future__ import annotations

import pytest

from privmesh.runtime.config import TracingConfig
from privmesh.runtime.tracing import TracingError, exporter_choice, make_tracer_provider, relative_frames
from tests.observability.otlp_receiver import Received, grpc_receiver, http_receiver


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_otlp_export_to_the_endpoint_of_the_standard_variables(protocol: str, monkeypatch: pytest.MonkeyPatch) \
        -> None:
    received = Received()
    if protocol == "grpc":
        server, port = grpc_receiver(received)
        stop = lambda: server.stop(None)  # noqa: E731
        endpoint = f"http://127.0.0.1:{port}"
    else:
        http, port = http_receiver(received)
        stop = http.shutdown
        endpoint = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
    try:
        provider = make_tracer_provider("token-vault", TracingConfig(exporter="otlp"))
        assert provider is not None
        with provider.get_tracer("t").start_as_current_span("privmesh.tokenvault.v1.TokenVault/Tokenize"):
            pass
        assert provider.force_flush(10_000)
        provider.shutdown()
    finally:
        stop()
    [span] = received.spans()
    assert span.service == "token-vault" and span.span.name == "privmesh.tokenvault.v1.TokenVault/Tokenize"
    resource = received.requests[0].resource_spans[0]
    assert resource.schema_url.endswith("/1.37.0")


def test_sampling_ratio_and_the_standard_sampler_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    never = make_tracer_provider("x", TracingConfig(sample_ratio=0.0), exporter)
    assert never is not None
    for _ in range(20):
        with never.get_tracer("t").start_as_current_span("s"):
            pass
    assert exporter.get_finished_spans() == ()
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")
    always = make_tracer_provider("x", TracingConfig(sample_ratio=0.0), exporter)
    assert always is not None
    with always.get_tracer("t").start_as_current_span("s"):
        pass
    assert len(exporter.get_finished_spans()) == 1


def test_unknown_exporters_and_protocols_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    assert exporter_choice(TracingConfig()) == ("none", "grpc")
    assert make_tracer_provider("x", TracingConfig()) is None
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    with pytest.raises(TracingError, match="OTEL_TRACES_EXPORTER=zipkin"):
        exporter_choice(TracingConfig())
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    with pytest.raises(TracingError, match="http/json"):
        exporter_choice(TracingConfig())


def test_exception_frames_carry_no_install_path() -> None:
    try:
        import json

        json.loads("{")
    except ValueError as error:
        frames = relative_frames(error.__traceback__)
    assert "json/decoder.py" in frames and "/usr/" not in frames and "site-packages" not in frames
    assert "test_exporters.py" in frames
