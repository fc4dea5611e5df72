"""`python -m privmesh.keybroker --config FILE` runs the key broker."""

import sys

from privmesh.keybroker.server import DEFINITION
from privmesh.runtime.server import run_service

sys.exit(run_service(DEFINITION))
