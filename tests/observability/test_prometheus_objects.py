"""The chart's Prometheus objects against what the services export: promtool (built by scripts/dev/obs-tools.sh)
lints every service's scrape, checks the shipped alert rules and runs their unit tests on recorded series; every
metric a dashboard, an alert or the unit tests' series names is one some service exports."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.observability.conftest import ObservedMesh

ROOT = Path(__file__).resolve().parents[2]
PROMTOOL = ROOT / ".tools" / "bin" / "promtool"
RULES = ROOT / "charts" / "privmesh" / "files" / "prometheus-rules.yaml"
RULE_TESTS = Path(__file__).with_name("alerts_test.yaml")
DASHBOARDS = sorted((ROOT / "charts" / "privmesh" / "files" / "dashboards").glob("*.json"))
SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*[{\[]")  # a metric name before its matchers or range


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL.exists(), "promtool is missing: run scripts/dev/obs-tools.sh"
    return subprocess.run([str(PROMTOOL), *args], input=stdin, capture_output=True, text=True, timeout=120)


def exported(observed: ObservedMesh) -> set[str]:
    """Every series name in every service's scrape."""
    names = set()
    for endpoint in observed.mesh.endpoints:
        for line in observed.scrape(endpoint.service).splitlines():
            if line and not line.startswith("#"):
                names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def rule_groups() -> list[dict[str, object]]:
    return list(yaml.safe_load(RULES.read_text())["groups"])


def referenced() -> dict[str, set[str]]:
    """Metric names each dashboard, the alert rules and the rules' unit tests query or feed."""
    found: dict[str, set[str]] = {}
    for path in DASHBOARDS:
        exprs = [t["expr"] for p in json.loads(path.read_text())["panels"] for t in p["targets"]]
        found[path.name] = {m for e in exprs for m in SELECTOR.findall(e)}
    found[RULES.name] = {m for g in rule_groups() for r in g["rules"] for m in SELECTOR.findall(r["expr"])}
    series = [s["series"] for t in yaml.safe_load(RULE_TESTS.read_text())["tests"] for s in t["input_series"]]
    found[RULE_TESTS.name] = {s.split("{", 1)[0] for s in series}
    return found


@pytest.mark.slow
def test_promtool_check_metrics_passes_on_every_services_scrape(observed: ObservedMesh) -> None:
    for endpoint in observed.mesh.endpoints:
        body = observed.scrape(endpoint.service)
        assert "grpc_server_handled_total{" in body and "process_cpu_seconds_total" in body, endpoint.service
        result = promtool("check", "metrics", stdin=body)
        problems = result.stdout + result.stderr
        assert result.returncode == 0 and not result.stdout.strip(), f"{endpoint.service}: {problems}"


def test_promtool_checks_the_alert_rules() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 8 rules found" in result.stdout


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test() -> None:
    alerts = {r["alert"] for g in rule_groups() for r in g["rules"] if "alert" in r}
    tested = {t["alertname"] for t in yaml.safe_load(RULE_TESTS.read_text())["tests"][0]["alert_rule_test"]}
    assert alerts == tested


@pytest.mark.slow
def test_dashboards_and_alerts_name_only_exported_metrics(observed: ObservedMesh) -> None:
    names = exported(observed)
    recorded = {r["record"] for g in rule_groups() for r in g["rules"] if "record" in r}
    assert len(DASHBOARDS) == len(observed.mesh.endpoints)
    for source, metrics in referenced().items():
        assert metrics, source
        unknown = metrics - names - recorded
        assert not unknown, f"{source} names metrics no service exports: {sorted(unknown)}"


def test_the_name_check_catches_a_metric_that_does_not_exist() -> None:
    assert SELECTOR.findall('sum(rate(grpc_server_handled_totl{job="x"}[5m])) / up[1m]') == \
        ["grpc_server_handled_totl", "up"]


def test_dashboards_are_the_generators() -> None:
    sys.path.insert(0, str(ROOT / "scripts" / "dev"))
    try:
        dashboards = importlib.import_module("dashboards")
    finally:
        sys.path.pop(0)
    assert dashboards.main(["--check"]) == 0
