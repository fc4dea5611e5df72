#!/usr/bin/env bash
# The test command (README, .ci/run): set-up, then lint, contract checks, the whole test suite and the polyglot
# clients (scripts/dev/clients.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/dev/setup.sh

# The PostgreSQL tests start their own server; install the binaries where they are missing.
if ! command -v pg_ctl >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing PostgreSQL (Debian packages)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  else
    echo "PostgreSQL is not installed and cannot be installed here (needs root and apt-get)" >&2
    exit 1
  fi
fi

# helm, kube-apiserver, kube-scheduler, etcd and the Kubernetes OpenAPI schemas for tests/k8s (built from the Go
# module proxy once, then cached under ~/.cache/privmesh).
scripts/dev/k8s-tools.sh
# promtool for tests/observability (built from the Prometheus module once, then cached under ~/.cache/privmesh).
scripts/dev/obs-tools.sh
# The AWS Lambda Runtime Interface Emulator the serverless tests run the handlers under (built once, cached).
scripts/dev/lambda-rie.sh
# The dp-gateway Spark engine's own venv (Tumult Analytics, pyspark 3.5; Java 17), built once into ~/.cache/privmesh.
scripts/dev/spark-env.sh >/dev/null
# The console's browser test drives Debian's Chromium (installed where missing; no browser is downloaded).
scripts/dev/chromium.sh >/dev/null

echo "== ruff"
.venv/bin/ruff check services tests scripts
echo "== import contracts (pyproject.toml [tool.importlinter], docs/architecture.md)"
.venv/bin/lint-imports --no-cache
echo "== mypy --strict (pyproject.toml [tool.mypy])"
.venv/bin/mypy
echo "== pytest"
.venv/bin/python -m pytest "$@"

# The Go, TypeScript and Java SDKs against a local mesh; skipped when pytest was given arguments (a partial run).
if [ $# -eq 0 ]; then
  echo "== polyglot clients"
  scripts/dev/clients.sh
fi
