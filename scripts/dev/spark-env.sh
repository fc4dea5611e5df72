#!/usr/bin/env bash
# Builds the dp-gateway Spark engine's virtualenv: Tumult Analytics on pyspark 3.5 at the versions pinned in
# requirements/spark-engine.txt, in ~/.cache/privmesh/tmlt-<hash of that file> (built once, shared by every
# clone), linked as .tools/spark-env. Its pins conflict with the gateway's, so it never joins .venv; the
# gateway runs `.tools/spark-env/bin/python -m privmesh.dpgateway.spark.worker` (Java 17 must be installed).
# Prints the environment's python.
set -euo pipefail
cd "$(dirname "$0")/../.."

CACHE="${PRIVMESH_CACHE:-$HOME/.cache/privmesh}"
hash=$(sha256sum requirements/spark-engine.txt | cut -c1-12)
env_dir="$CACHE/tmlt-$hash"
mkdir -p "$CACHE" .tools
exec 9>"$CACHE/.spark-env.lock"
flock 9

command -v java >/dev/null || { echo "spark-env: Java (17) is required by Spark" >&2; exit 1; }
if [ ! -f "$env_dir/.complete" ]; then
  python=$(.venv/bin/python -c 'import sys; print(sys.base_prefix)')/bin/python3.10
  echo "spark-env: building $env_dir (once)" >&2
  rm -rf "$env_dir"
  "$python" -m venv "$env_dir"
  "$env_dir/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
    -r requirements/spark-engine.txt
  "$env_dir/bin/python" -c 'import tmlt.analytics, pyspark' >/dev/null
  touch "$env_dir/.complete"
fi
ln -sfn "$env_dir" .tools/spark-env
echo "$env_dir/bin/python"
