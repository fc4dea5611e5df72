"""A Flower App Bundle per run: only a pyproject.toml naming privmesh's ServerApp and ClientApp (installed with
privmesh on the SuperLink's and the participants' hosts) and carrying the run's spec as run config."""

from __future__ import annotations

import hashlib

import tomli_w
from flwr.cli.build import build_fab_from_files

from privmesh.fl.app.spec import RUN_SPEC_KEY, RunSpec

SERVER_COMPONENT = "privmesh.fl.app.server_app:app"


def build_fab(spec: RunSpec, version: str = "1.0.0") -> tuple[bytes, str]:
    """The FAB's bytes and their SHA-256 (Flower's FAB hash)."""
    pyproject = {
        "build-system": {"requires": ["hatchling"], "build-backend": "hatchling.build"},
        "project": {"name": "privmesh-fl", "version": version, "description": "privmesh federated training",
                    "license": "Apache-2.0", "dependencies": []},
        "tool": {"flwr": {"app": {"publisher": "privmesh",
                                  "components": {"serverapp": SERVER_COMPONENT,
                                                 "clientapp": spec.client_component()},
                                  "config": {RUN_SPEC_KEY: spec.to_json()}}}},
    }
    fab, _ = build_fab_from_files({"pyproject.toml": tomli_w.dumps(pyproject).encode()})
    return fab, hashlib.sha256(fab).hexdigest()
