"""`python -m privmesh.fhe --config FILE` runs fhe-inference."""

import sys

from privmesh.fhe.server import DEFINITION
from privmesh.runtime.server import run_service

sys.exit(run_service(DEFINITION))
