#!/usr/bin/env bash
# Installs the Kubernetes tools the chart tests use into .tools/ (gitignored), built from the Go module
# proxy and cached outside the clone (~/.cache/privmesh/<tool>-<version>) so that only the first run pays:
#   .tools/bin/helm                      helm.sh/helm/v3
#   .tools/bin/kube-apiserver            k8s.io/kubernetes ./cmd/kube-apiserver
#   .tools/bin/kube-scheduler            k8s.io/kubernetes ./cmd/kube-scheduler
#   .tools/bin/etcd                      go.etcd.io/etcd/server/v3
#   .tools/k8s-openapi/<version>/*.json  api/openapi-spec/v3 of each Kubernetes version in SCHEMA_VERSIONS
# `go install` refuses the Kubernetes and etcd server modules (their go.mod replaces point into folders the
# module zip leaves out), so each is copied from the module cache and its replaces are pointed at the
# published modules of the same release before `go build`.
set -euo pipefail
cd "$(dirname "$0")/../.."

HELM_VERSION=v3.22.0
K8S_VERSION=v1.34.4
ETCD_VERSION=v3.6.7
# The chart is validated against the OpenAPI schemas of these Kubernetes minor versions (oldest first).
SCHEMA_VERSIONS="v1.33.13 v1.34.4"

CACHE="${PRIVMESH_CACHE:-$HOME/.cache/privmesh}"
TOOLS="$PWD/.tools"
mkdir -p "$CACHE" "$TOOLS/bin" "$TOOLS/k8s-openapi"
command -v go >/dev/null || { echo "k8s-tools: the Go toolchain (go) is required" >&2; exit 1; }
export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0

# One build at a time per cache (parallel worktrees share it).
exec 9>"$CACHE/.k8s-tools.lock"
flock 9

module_dir() {  # module@version -> its extracted, read-only folder in the module cache
  go mod download -json "$1" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p'
}

writable_copy() {  # module@version destination: a writable copy without go.work files
  local src
  src="$(module_dir "$1")"
  rm -rf "$2" && mkdir -p "$(dirname "$2")"
  cp -r "$src" "$2" && chmod -R u+w "$2"
  rm -f "$2"/go.work "$2"/go.work.sum
}

build_helm() {
  local out="$CACHE/helm-$HELM_VERSION"
  if [ ! -x "$out/bin/helm" ]; then
    echo "k8s-tools: building helm $HELM_VERSION (once)"
    GOBIN="$out/bin" go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  fi
  ln -sf "$out/bin/helm" "$TOOLS/bin/helm"
}

build_kubernetes() {
  local out="$CACHE/k8s-$K8S_VERSION"
  if [ ! -x "$out/bin/kube-apiserver" ] || [ ! -x "$out/bin/kube-scheduler" ]; then
    echo "k8s-tools: building kube-apiserver and kube-scheduler $K8S_VERSION (once; a few minutes)"
    local src="$out/src"
    writable_copy "k8s.io/kubernetes@$K8S_VERSION" "$src"
    # Staging modules k8s.io/X are published as k8s.io/X v0.<minor>.<patch>.
    local staging="v0.${K8S_VERSION#v1.}" edits=() mod
    for mod in $(sed -n 's#^\s*\(k8s.io/[^ ]*\) => ./staging/src/.*#\1#p' "$src/go.mod"); do
      edits+=("-replace=$mod=$mod@$staging")
    done
    mkdir -p "$out/bin"
    (cd "$src" && go mod edit "${edits[@]}" && go build -trimpath -o "$out/bin/" ./cmd/kube-apiserver ./cmd/kube-scheduler)
    rm -rf "$src"
  fi
  ln -sf "$out/bin/kube-apiserver" "$TOOLS/bin/kube-apiserver"
  ln -sf "$out/bin/kube-scheduler" "$TOOLS/bin/kube-scheduler"
}

build_etcd() {
  local out="$CACHE/etcd-$ETCD_VERSION"
  if [ ! -x "$out/bin/etcd" ]; then
    echo "k8s-tools: building etcd $ETCD_VERSION (once)"
    local src="$out/src"
    writable_copy "go.etcd.io/etcd/server/v3@$ETCD_VERSION" "$src"
    # ../api-style replaces -> the published modules of the same release (already in `require`).
    (cd "$src" && go mod edit -dropreplace=go.etcd.io/etcd/api/v3 -dropreplace=go.etcd.io/etcd/client/pkg/v3 \
      -dropreplace=go.etcd.io/etcd/client/v3 -dropreplace=go.etcd.io/etcd/pkg/v3 \
      -dropreplace=go.etcd.io/etcd -dropreplace=go.etcd.io/tests/v3 \
      && go build -trimpath -o "$out/bin/etcd" .)
    rm -rf "$src"
  fi
  ln -sf "$out/bin/etcd" "$TOOLS/bin/etcd"
}

fetch_schemas() {
  local v dst
  for v in $SCHEMA_VERSIONS; do
    dst="$CACHE/k8s-openapi-$v"
    if [ ! -f "$dst/.complete" ]; then
      echo "k8s-tools: Kubernetes $v OpenAPI v3 schemas"
      rm -rf "$dst" && mkdir -p "$dst"
      cp "$(module_dir "k8s.io/kubernetes@$v")"/api/openapi-spec/v3/*.json "$dst/"
      chmod u+w "$dst"/*.json && touch "$dst/.complete"
    fi
    rm -rf "${TOOLS:?}/k8s-openapi/$v" && ln -sfn "$dst" "$TOOLS/k8s-openapi/$v"
  done
}

fetch_schemas
build_helm
build_etcd
build_kubernetes
"$TOOLS/bin/helm" version --short >/dev/null
echo "k8s-tools: helm $HELM_VERSION, kube-apiserver/kube-scheduler $K8S_VERSION, etcd $ETCD_VERSION in .tools/bin"
