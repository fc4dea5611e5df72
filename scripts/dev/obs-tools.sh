#!/usr/bin/env bash
# Installs the observability tools the telemetry tests use into .tools/ (gitignored), built from the Go
# module proxy and cached outside the clone (~/.cache/privmesh/<tool>-<version>) so that only the first
# run pays (promtool: ~8 min cold on 2 cores; the collector: see docs/observability.md):
#   .tools/bin/promtool   github.com/prometheus/prometheus ./cmd/promtool (check metrics/rules, test rules)
#   .tools/bin/otelcol    an OpenTelemetry Collector (core otlp receiver + contrib file exporter) assembled
#                         by the collector builder (go.opentelemetry.io/collector/cmd/builder)
set -euo pipefail
cd "$(dirname "$0")/../.."

PROMETHEUS_VERSION=v0.316.0   # the Go module of Prometheus v3.16.0
OTELCOL_VERSION=v0.165.0      # core collector and builder; contrib components of the same release

CACHE="${PRIVMESH_CACHE:-$HOME/.cache/privmesh}"
TOOLS="$PWD/.tools"
mkdir -p "$CACHE" "$TOOLS/bin"
command -v go >/dev/null || { echo "obs-tools: the Go toolchain (go) is required" >&2; exit 1; }
export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0

# One build at a time per cache (parallel worktrees share it).
exec 9>"$CACHE/.obs-tools.lock"
flock 9

build_promtool() {
  local out="$CACHE/promtool-$PROMETHEUS_VERSION"
  if [ ! -x "$out/bin/promtool" ]; then
    echo "obs-tools: building promtool $PROMETHEUS_VERSION (once; about 8 minutes)"
    GOBIN="$out/bin" go install -trimpath "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION"
  fi
  ln -sf "$out/bin/promtool" "$TOOLS/bin/promtool"
}

build_otelcol() {
  local out="$CACHE/otelcol-$OTELCOL_VERSION"
  if [ ! -x "$out/bin/otelcol" ]; then
    echo "obs-tools: building the OpenTelemetry Collector $OTELCOL_VERSION (once; several minutes)"
    local work="$out/build"
    rm -rf "$work" && mkdir -p "$work" "$out/bin"
    GOBIN="$work/bin" go install -trimpath "go.opentelemetry.io/collector/cmd/builder@$OTELCOL_VERSION"
    cat >"$work/builder.yaml" <<YAML
dist:
  name: otelcol
  description: privmesh test collector (OTLP in, JSON files out)
  output_path: $work/src
receivers:
  - gomod: go.opentelemetry.io/collector/receiver/otlpreceiver $OTELCOL_VERSION
exporters:
  - gomod: github.com/open-telemetry/opentelemetry-collector-contrib/exporter/fileexporter $OTELCOL_VERSION
processors:
  - gomod: go.opentelemetry.io/collector/processor/batchprocessor $OTELCOL_VERSION
YAML
    "$work/bin/builder" --config "$work/builder.yaml" --skip-compilation
    (cd "$work/src" && go build -trimpath -ldflags=-s -o "$out/bin/otelcol" .)
    rm -rf "$work"
  fi
  ln -sf "$out/bin/otelcol" "$TOOLS/bin/otelcol"
}

build_promtool
"$TOOLS/bin/promtool" --version >/dev/null
if [ "${PRIVMESH_SKIP_OTELCOL:-0}" != 1 ]; then
  build_otelcol
  "$TOOLS/bin/otelcol" --version >/dev/null
fi
echo "obs-tools: promtool $PROMETHEUS_VERSION and otelcol $OTELCOL_VERSION in .tools/bin"
