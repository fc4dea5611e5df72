#!/usr/bin/env bash
# The main job on embedded defaults: set-up, then `privmesh demo` (starts a temporary local mesh, runs the
# end-to-end scenario, stops it).
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/dev/setup.sh
exec .venv/bin/privmesh demo "$@"
