#!/usr/bin/env bash
# Installs the code generators of the polyglot clients into .tools/bin (buf.gen.yaml names them there):
# protoc-gen-go and protoc-gen-go-grpc from the Go module proxy, protoc and protoc-gen-grpc-java from Maven
# Central, and the TypeScript SDK's npm packages (protoc-gen-es among them) in clients/ts/node_modules.
# Downloads stay in each ecosystem's default cache (GOMODCACHE, ~/.m2, ~/.npm); a second run does nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."

PROTOC_GEN_GO=v1.36.12
PROTOC_GEN_GO_GRPC=v1.6.1
PROTOC=4.33.2            # Maven's numbering of protoc 33.2
GRPC_JAVA=1.85.0

bin="$PWD/.tools/bin"
mkdir -p "$bin"

stamp() { [ "$(cat "$bin/.$1.version" 2>/dev/null)" = "$2" ]; }
mark() { echo "$2" > "$bin/.$1.version"; }

if ! stamp protoc-gen-go "$PROTOC_GEN_GO"; then
  GOBIN="$bin" go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO"
  mark protoc-gen-go "$PROTOC_GEN_GO"
fi
if ! stamp protoc-gen-go-grpc "$PROTOC_GEN_GO_GRPC"; then
  GOBIN="$bin" go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC"
  mark protoc-gen-go-grpc "$PROTOC_GEN_GO_GRPC"
fi

maven_exe() {  # group:artifact:version -> .tools/bin/<name> (the linux-x86_64 executable Maven Central serves)
  local coords=$1 name=$2
  mvn -q -B dependency:copy -Dartifact="$coords:exe:linux-x86_64" -Dmdep.stripVersion=true \
      -Dmdep.stripClassifier=true -DoutputDirectory="$bin" >/dev/null
  local artifact=${coords#*:}; mv "$bin/${artifact%%:*}.exe" "$bin/$name"
  chmod +x "$bin/$name"
}
if ! stamp protoc "$PROTOC"; then
  maven_exe "com.google.protobuf:protoc:$PROTOC" protoc
  mark protoc "$PROTOC"
fi
if ! stamp protoc-gen-grpc-java "$GRPC_JAVA"; then
  maven_exe "io.grpc:protoc-gen-grpc-java:$GRPC_JAVA" protoc-gen-grpc-java
  mark protoc-gen-grpc-java "$GRPC_JAVA"
fi

npm_stamp=$(sha256sum clients/ts/package-lock.json | cut -c1-16)
if [ "$(cat clients/ts/node_modules/.privmesh-stamp 2>/dev/null)" != "$npm_stamp" ]; then
  (cd clients/ts && npm ci --no-audit --no-fund --silent)
  echo "$npm_stamp" > clients/ts/node_modules/.privmesh-stamp
fi
