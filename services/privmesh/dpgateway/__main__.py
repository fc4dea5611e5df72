"""`python -m privmesh.dpgateway --config FILE` runs the dp-gateway."""

import sys

from privmesh.dpgateway.server import DEFINITION
from privmesh.runtime.server import run_service

sys.exit(run_service(DEFINITION))
