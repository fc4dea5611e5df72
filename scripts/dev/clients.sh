#!/usr/bin/env bash
# The polyglot clients (clients/go, clients/ts, clients/java): generates their code with buf.gen.yaml, fails
# when the committed Go code is stale, builds the three SDKs, starts a local mesh and runs each language's
# test runner (go test, node --test, Maven Surefire) on the shared cases (clients/testdata/cases.json).
#
# Usage: scripts/dev/clients.sh            everything above (CI runs it from scripts/dev/test.sh)
#        scripts/dev/clients.sh generate   regenerate the clients' code in place (after changing a .proto)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

scripts/dev/setup.sh
scripts/dev/client-tools.sh
buf=$root/node_modules/.bin/buf

generate() {  # $1: output base directory (the repository root, or a scratch copy for the stale check)
  "$buf" generate -o "$1"
  (cd clients/ts && "$buf" generate -o "$1/clients/ts")
}

if [ "${1:-}" = generate ]; then
  rm -rf clients/go/gen clients/ts/src/gen clients/java/src/gen
  generate "$root"
  echo "generated clients/go/gen (commit it), clients/ts/src/gen and clients/java/src/gen (build outputs)"
  exit 0
fi

echo "== clients: generate"
scratch=$(mktemp -d)
state=$(mktemp -d)
mesh_pid=
cleanup() {
  if [ -n "$mesh_pid" ] && kill -0 "$mesh_pid" 2>/dev/null; then
    kill -TERM "$mesh_pid" && wait "$mesh_pid" || true
  fi
  rm -rf "$scratch" "$state"
}
trap cleanup EXIT
generate "$scratch"
if ! diff -r "$scratch/clients/go/gen" clients/go/gen >/dev/null; then
  echo "clients/go/gen is stale; run: scripts/dev/clients.sh generate (and commit clients/go/gen)" >&2
  diff -rq "$scratch/clients/go/gen" clients/go/gen >&2 || true
  exit 1
fi
rm -rf clients/ts/src/gen clients/java/src/gen
mkdir -p clients/java/src
mv "$scratch/clients/ts/src/gen" clients/ts/src/gen
mv "$scratch/clients/java/src/gen" clients/java/src/gen

echo "== clients: build"
(cd clients/go && go vet ./...)
(cd clients/ts && npm run --silent build)
(cd clients/java && mvn -q -B -DskipTests test-compile)

echo "== clients: local mesh"
start_mesh() {  # `privmesh up` gives the services 60 s to become healthy; a loaded machine may need a second try
  .venv/bin/privmesh up --state-dir "$state" >"$state/up.log" 2>&1 &
  mesh_pid=$!
  while kill -0 "$mesh_pid" 2>/dev/null; do
    grep -q "^credentials:" "$state/up.log" && return 0
    sleep 0.5
  done
  wait "$mesh_pid" || true
  cat "$state/up.log" >&2
  return 1
}
start_mesh || start_mesh || { echo "the local mesh did not start" >&2; exit 1; }
# A certificate from another CA, for the refused-handshake case.
.venv/bin/privmesh pki init --dir "$state/foreign-pki" --identity stranger >/dev/null

export PRIVMESH_MESH_DIR=$state
export PRIVMESH_FIXTURE="$root/.venv/bin/python $root/scripts/dev/client_fixture.py --state-dir $state"
echo "== clients: go test"
(cd clients/go && go test -count=1 ./...)
echo "== clients: node --test"
(cd clients/ts && npm test --silent)
echo "== clients: mvn test"
(cd clients/java && mvn -q -B test)
