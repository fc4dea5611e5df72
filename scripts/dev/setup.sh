#!/usr/bin/env bash
# Creates (or reuses) everything privmesh needs on this machine: .venv with CPython 3.10 and every extra
# installed at the pinned versions, and buf from the npm registry. A second run only re-installs what changed.
set -euo pipefail
cd "$(dirname "$0")/../.."

find_python310() {
  for candidate in "${PYTHON:-}" python3.10 "$(command -v pyenv >/dev/null 2>&1 && pyenv root)/versions/"3.10*/bin/python3.10 \
                   "$HOME"/.pyenv/versions/3.10*/bin/python3.10 /usr/bin/python3.10 /usr/local/bin/python3.10; do
    [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 \
      && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' 2>/dev/null \
      && { command -v "$candidate"; return 0; }
  done
  return 1
}

stamp=$(cat pyproject.toml requirements/constraints.txt | sha256sum | cut -c1-16)
if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.privmesh-stamp 2>/dev/null)" != "$stamp" ]; then
  if [ ! -x .venv/bin/python ]; then
    py=$(find_python310) || { echo "CPython 3.10 not found (set PYTHON=/path/to/python3.10)" >&2; exit 1; }
    echo "creating .venv with $py"
    "$py" -m venv .venv
  fi
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=24"
  echo "installing privmesh[all,dev] with pinned versions (requirements/constraints.txt)"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -c requirements/constraints.txt -e '.[all,dev]'
  echo "$stamp" > .venv/.privmesh-stamp
fi

npm_stamp=$(sha256sum package-lock.json | cut -c1-16)
if [ ! -x node_modules/.bin/buf ] || [ "$(cat node_modules/.privmesh-stamp 2>/dev/null)" != "$npm_stamp" ]; then
  echo "installing buf (npm ci)"
  npm ci --no-audit --no-fund --silent
  echo "$npm_stamp" > node_modules/.privmesh-stamp
fi
