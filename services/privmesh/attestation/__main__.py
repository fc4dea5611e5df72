"""`python -m privmesh.attestation --config FILE` runs the attestation-verifier."""

import sys

from privmesh.attestation.server import DEFINITION
from privmesh.runtime.server import run_service

sys.exit(run_service(DEFINITION))
