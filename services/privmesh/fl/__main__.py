"""`python -m privmesh.fl --config FILE` runs the fl-coordinator."""

import sys

from privmesh.fl.server import DEFINITION
from privmesh.runtime.server import run_service

sys.exit(run_service(DEFINITION))
