"""Writes the chart's Grafana dashboards, one per service (charts/privmesh/files/dashboards/<service>.json),
from one panel list, so the six cannot drift apart. Every query names only metrics the runtime exports
(tests/observability checks them against a real scrape).

    .venv/bin/python scripts/dev/dashboards.py [--check]

--check exits 1 when a file on disk differs from what would be written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from privmesh.mesh.catalog import CATALOG

OUT = Path(__file__).resolve().parents[2] / "charts" / "privmesh" / "files" / "dashboards"
SEL = 'namespace="$namespace", job="{job}"'

# (title, unit, [(PromQL with {sel}, legend)])
PANELS: list[tuple[str, str, list[tuple[str, str]]]] = [
    ("Requests per second by method", "reqps",
     [("sum by (grpc_method) (rate(grpc_server_handled_total{{{sel}}}[$__rate_interval]))", "{{grpc_method}}")]),
    ("Non-OK responses per second by code", "reqps",
     [('sum by (grpc_code) (rate(grpc_server_handled_total{{{sel}, grpc_code!="OK"}}[$__rate_interval]))',
       "{{grpc_code}}")]),
    ("Server-fault ratio", "percentunit",
     [('sum(rate(grpc_server_handled_total{{{sel}, grpc_code=~"UNKNOWN|DEADLINE_EXCEEDED|UNIMPLEMENTED|INTERNAL|'
       'UNAVAILABLE|DATA_LOSS"}}[$__rate_interval])) / sum(rate(grpc_server_handled_total{{{sel}}}'
       '[$__rate_interval]))', "server faults")]),
    ("Unary latency p50 / p99", "s",
     [("histogram_quantile(0.5, sum by (le) (rate(grpc_server_handling_seconds_bucket{{{sel}, grpc_type=\"unary\"}}"
       "[$__rate_interval])))", "p50"),
      ("histogram_quantile(0.99, sum by (le) (rate(grpc_server_handling_seconds_bucket{{{sel}, "
       "grpc_type=\"unary\"}}[$__rate_interval])))", "p99")]),
    ("In-flight calls", "short",
     [("sum(grpc_server_started_total{{{sel}}}) - sum(grpc_server_handled_total{{{sel}}})", "in flight")]),
    ("Refusals by reason", "short",
     [("sum by (reason) (increase(privmesh_grpc_server_refusals_total{{{sel}}}[$__rate_interval]))",
       "{{reason}}")]),
    ("Errors by reason", "short",
     [("sum by (reason) (increase(privmesh_grpc_server_errors_total{{{sel}}}[$__rate_interval]))", "{{reason}}")]),
    ("Audit records and write failures", "short",
     [("sum by (outcome) (increase(privmesh_audit_records_total{{{sel}}}[$__rate_interval]))", "{{outcome}}"),
      ("sum(increase(privmesh_audit_write_failures_total{{{sel}}}[$__rate_interval]))", "write failures")]),
    ("Certificate time left", "s",
     [("min(privmesh_tls_certificate_expiry_timestamp_seconds{{{sel}}}) - time()", "time left")]),
    ("Process CPU and memory", "short",
     [("sum(rate(process_cpu_seconds_total{{{sel}}}[$__rate_interval]))", "CPU seconds/s"),
      ("sum(process_resident_memory_bytes{{{sel}}}) / 2^20", "resident MiB")]),
]


def dashboard(service: str) -> dict[str, Any]:
    sel = SEL.format(job=service)
    panels = []
    for index, (title, unit, targets) in enumerate(PANELS):
        panels.append({
            "id": index + 1, "type": "timeseries", "title": title, "datasource": {"uid": "${datasource}"},
            "gridPos": {"x": (index % 2) * 12, "y": (index // 2) * 8, "w": 12, "h": 8},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [{"refId": chr(ord("A") + n), "expr": expr.format(sel=sel), "legendFormat": legend}
                        for n, (expr, legend) in enumerate(targets)],
        })
    return {
        "uid": f"privmesh-{service}", "title": f"privmesh / {service}", "tags": ["privmesh"], "editable": False,
        "schemaVersion": 39, "time": {"from": "now-6h", "to": "now"}, "refresh": "1m",
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"},
            {"name": "namespace", "type": "query", "datasource": {"uid": "${datasource}"}, "label": "Namespace",
             "query": {"query": f'label_values(privmesh_service_info{{privmesh_service="{service}"}}, namespace)',
                       "refId": "namespace"},
             "refresh": 2},
        ]},
        "panels": panels,
    }


def rendered() -> dict[Path, str]:
    return {OUT / f"{spec.name}.json": json.dumps(dashboard(spec.name), indent=2) + "\n" for spec in CATALOG}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    files = rendered()
    if args.check:
        stale = [p.name for p, text in files.items() if not p.exists() or p.read_text() != text]
        if stale:
            print(f"stale dashboards (run scripts/dev/dashboards.py): {', '.join(stale)}", file=sys.stderr)
            return 1
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
