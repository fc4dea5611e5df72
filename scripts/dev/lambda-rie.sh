#!/usr/bin/env bash
# Installs the AWS Lambda Runtime Interface Emulator (aws-lambda-rie) the serverless tests run the handlers
# under, into .tools/bin (gitignored): built from the Go module proxy once, then cached outside the clone
# (~/.cache/privmesh/aws-lambda-rie-<version>) so that only the first run pays.
# The module publishes no release tags to the proxy, so the version is a pinned pseudo-version.
set -euo pipefail
cd "$(dirname "$0")/../.."

RIE_VERSION=v0.0.0-20261030222936-bef5c4ba774d
CACHE="${PRIVMESH_CACHE:-$HOME/.cache/privmesh}"
OUT="$CACHE/aws-lambda-rie-$RIE_VERSION"
mkdir -p "$CACHE" .tools/bin
command -v go >/dev/null || { echo "lambda-rie: the Go toolchain (go) is required" >&2; exit 1; }

exec 9>"$CACHE/.aws-lambda-rie.lock"  # one build at a time per cache (parallel worktrees share it)
flock 9
if [ ! -x "$OUT/bin/aws-lambda-rie" ]; then
  echo "lambda-rie: building aws-lambda-rie $RIE_VERSION (once)"
  GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0 GOBIN="$OUT/bin" \
    go install "github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie@$RIE_VERSION"
fi
ln -sf "$OUT/bin/aws-lambda-rie" .tools/bin/aws-lambda-rie
