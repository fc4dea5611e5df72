"""What every step of the scenario shares: the mesh it runs against, and how a step says a check failed."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from privmesh.mesh.local import MeshLayout

CALL_TIMEOUT = 300.0
"""The deadline of every demo call that names none: generous, because a machine kept busy (CI's two cores, a
CPU hog) can stretch a 1-second call past the runtime's 30 s default, and the demo must not fail by chance."""


@dataclass
class DemoContext:
    layout: MeshLayout
    console: Console
    targets: dict[str, str]
    work_dir: Path
    peers: dict[str, str]  # service -> the SPIFFE ID its clients pin (mesh.json)
    facts: dict[str, object] = field(default_factory=dict)
    fl_engine: str = "flower"  # or "flare": the engine of step 3's federation


class StepFailed(Exception):
    """A step's check did not hold."""


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise StepFailed(message)
