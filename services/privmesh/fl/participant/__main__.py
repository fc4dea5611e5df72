"""`python -m privmesh.fl.participant`: the participant command."""

from privmesh.fl.participant.cli import participant

participant()
