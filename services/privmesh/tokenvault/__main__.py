"""`python -m privmesh.tokenvault --config FILE` runs the token vault."""

import sys

from privmesh.runtime.server import run_service
from privmesh.tokenvault.server import DEFINITION

sys.exit(run_service(DEFINITION))
