#!/bin/sh
# The services image's install step, run by images/services.Dockerfile and by tests/k8s/test_images.py (the same
# script, in a clean virtualenv): privmesh with the given extras at the versions pinned in
# requirements/constraints.txt, into a new virtualenv, without the development tools.
#   images/install.sh TARGET_VENV [SOURCE_DIR] [EXTRAS]
set -eu
target=$1
src=${2:-.}
extras=${3:-attestation,keybroker,tokenvault,dpgateway,fhe,fl,kubernetes}
"${PYTHON:-python3}" -m venv "$target"
"$target/bin/pip" install --quiet --disable-pip-version-check -c "$src/requirements/constraints.txt" "$src[$extras]"
# Nothing writes byte code at run time (read-only root filesystem): compile it now.
"$target/bin/python" -m compileall -q "$target/lib" >/dev/null
