"""A FLARE job per run: meta.json and one app whose server workflow and client executor are privmesh's own
components (installed with privmesh on the server and the sites), configured with the run's spec. The job names
the federation's sites only, so FLARE dispatches it when they are connected and to no other site."""

from __future__ import annotations

import json
from pathlib import Path

from privmesh.fl.app.spec import RunSpec

TASKS = ("train", "validate")


def write_job(spec: RunSpec, directory: Path) -> Path:
    """Writes the job folder for `spec` into `directory` and returns it."""
    app = directory / "app" / "config"
    app.mkdir(parents=True, exist_ok=True)
    sites = sorted(spec.flare_sites)
    text = spec.to_json()
    (directory / "meta.json").write_text(json.dumps({
        "name": spec.run.replace("/", "-") or "privmesh-bare", "resource_spec": {},
        "deploy_map": {"app": ["server", *sites]}, "min_clients": spec.min_participants}))
    (app / "config_fed_server.json").write_text(json.dumps({
        "format_version": 2,
        "workflows": [{"id": "privmesh", "path": "privmesh.fl.flare.controller.RunController",
                       "args": {"spec": text}}],
        "components": []}))
    (app / "config_fed_client.json").write_text(json.dumps({
        "format_version": 2,
        "executors": [{"tasks": list(TASKS), "executor": {"path": "privmesh.fl.flare.executor.LocalTrainer",
                                                          "args": {"spec": text}}}],
        "components": []}))
    return directory
