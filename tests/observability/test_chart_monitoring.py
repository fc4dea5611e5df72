"""The chart's monitoring objects: off by default; when enabled, a ServiceMonitor on every service's metrics
port, the shipped alerts as a PrometheusRule, a dashboard ConfigMap per enabled service, and with OTLP tracing
the collector endpoint in every container and the one egress rule spans need."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.k8s.chart import CHART, by_kind, render

ON = {"metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True},
                  "dashboards": {"enabled": True}},
      "tracing": {"exporter": "otlp", "otlpEndpoint": "http://otel-collector.monitoring:4317", "sampleRatio": 0.25}}


def test_monitoring_objects_are_off_by_default() -> None:
    objects = render()
    assert not by_kind(objects, "ServiceMonitor") and not by_kind(objects, "PrometheusRule")
    assert not [name for name in by_kind(objects, "ConfigMap") if name.endswith("-dashboard")]
    assert "privmesh-otlp" not in by_kind(objects, "NetworkPolicy")


def test_enabled_monitoring_scrapes_alerts_dashboards_and_traces(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(ON))
    objects = render(values)
    deployments = by_kind(objects, "Deployment")
    [monitor] = by_kind(objects, "ServiceMonitor").values()
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    selected = [s for s in by_kind(objects, "Service").values()
                if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
                and any(p["name"] == "metrics" for p in s["spec"]["ports"])]
    assert {s["metadata"]["name"] for s in selected} == set(deployments)
    [rule] = by_kind(objects, "PrometheusRule").values()
    assert rule["spec"] == yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
    dashboards = {name: cm for name, cm in by_kind(objects, "ConfigMap").items() if name.endswith("-dashboard")}
    assert set(dashboards) == {f"{name}-dashboard" for name in deployments}
    for name, cm in dashboards.items():
        service = name.removesuffix("-dashboard")
        assert json.loads(cm["data"][f"{service}.json"])["uid"] == f"privmesh-{service}"
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    for deployment in deployments.values():
        env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.monitoring:4317"
    configs = [yaml.safe_load(cm["data"]["config.yaml"]) for cm in by_kind(objects, "ConfigMap").values()
               if "config.yaml" in cm.get("data", {})]
    assert configs and all(c["server"]["tracing"] == {"exporter": "otlp", "sample_ratio": 0.25} for c in configs)
    egress = by_kind(objects, "NetworkPolicy")["privmesh-otlp"]["spec"]["egress"]
    assert egress[0]["ports"] == [{"protocol": "TCP", "port": 4317}]
