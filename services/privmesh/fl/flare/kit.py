"""What both sides of a FLARE federation share without importing FLARE: the names the coordinator provisions with,
and unpacking a startup kit into a participant's workspace."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

ORG = "privmesh"
ADMIN = "coordinator@privmesh.dev"
DATA_ENV = "PRIVMESH_FL_DATA"  # the site's local CSV, read by privmesh's FLARE executor


def unpack_kit(kit: bytes, workspace: Path) -> None:
    """Extracts a startup kit into a participant's FLARE workspace, refusing paths that leave it."""
    workspace.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(kit)) as archive:
        for member in archive.infolist():
            target = (workspace / member.filename).resolve()
            if not target.is_relative_to(workspace.resolve()):
                raise ValueError(f"startup kit entry {member.filename!r} leaves the workspace")
        archive.extractall(workspace)
