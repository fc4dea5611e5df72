#!/usr/bin/env bash
# Installs the observability tool the telemetry tests use into .tools/ (gitignored), built from the Go
# module proxy and cached outside the clone (~/.cache/privmesh/<tool>-<version>) so that only the first
# run pays (8 min cold on an idle 2-core machine, over an hour on a loaded one):
#   .tools/bin/promtool   github.com/prometheus/prometheus ./cmd/promtool (check metrics/rules, test rules)
# The tests receive OTLP with a receiver of their own rather than the OpenTelemetry Collector: see
# docs/observability.md for why.
set -euo pipefail
cd "$(dirname "$0")/../.."

PROMETHEUS_VERSION=v0.316.0   # the Go module of Prometheus v3.16.0

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

build_promtool
"$TOOLS/bin/promtool" --version >/dev/null
echo "obs-tools: promtool $PROMETHEUS_VERSION in .tools/bin"
