"""The FLARE engine's pure parts: aggregation with and without DP, site names, startup-kit unpacking and job
folders (the real FLARE processes are in test_flare.py)."""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from privmesh.fl.app.model import Architecture, TrainingConfig
from privmesh.fl.app.spec import DpSpec, RunSpec
from privmesh.fl.coordinator.service import flare_site_name
from privmesh.fl.flare.controller import aggregate
from privmesh.fl.flare.job import write_job
from privmesh.fl.flare.kit import unpack_kit

SPEC = RunSpec(run="federations/f/runs/r", architecture=Architecture(2, 2), training=TrainingConfig(),
               feature_names=("a", "b"), label_name="y", strategy="fedavg", strategy_params={}, num_rounds=1,
               min_participants=2, fraction_train=1.0, fraction_evaluate=0.0, round_timeout_seconds=10,
               participant_wait_seconds=10, seed=3, node_ids=(7, 9), flare_sites={"f_a": 7, "f_b": 9})


def test_fedavg_weights_by_examples_and_dp_clips_then_adds_noise_of_the_stated_scale() -> None:
    current = [np.zeros((2, 1)), np.zeros(1)]
    updates = [([np.full((2, 1), 1.0), np.ones(1)], 10), ([np.full((2, 1), 4.0), np.full(1, 4.0)], 30)]
    plain = aggregate(SPEC, current, updates, np.random.default_rng(0))
    assert np.allclose(plain[0], 3.25) and np.allclose(plain[1], 3.25)
    dp = replace(SPEC, dp=DpSpec(server_side=True, noise_multiplier=0.0, clipping_norm=1.0, delta=1e-3,
                                 target_epsilon=None))
    clipped = aggregate(dp, current, updates, np.random.default_rng(0))  # no noise: the clipped, unweighted mean
    norm = float(np.sqrt(sum(float(np.sum(w ** 2)) for w in clipped)))
    assert norm == pytest.approx(1.0) and np.allclose(clipped[0], clipped[1][0])
    noisy = replace(dp, dp=replace(dp.dp, noise_multiplier=1.0))  # type: ignore[type-var]
    samples = np.array([aggregate(noisy, current, updates, np.random.default_rng(s))[0][0, 0] - clipped[0][0, 0]
                        for s in range(400)])
    assert samples.std() == pytest.approx(1.0 / 2, rel=0.15)  # noise_multiplier x clipping_norm / sampled


def test_site_names_are_unique_per_federation_and_participant() -> None:
    assert flare_site_name("federations/risk/participants/hospital-a") == "risk_hospital-a"
    assert flare_site_name("federations/risk-a/participants/b") != flare_site_name("federations/risk/participants/a-b")


def test_a_kit_cannot_write_outside_its_workspace(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("startup/fed_client.json", "{}")
        archive.writestr("../escape.txt", "x")
    with pytest.raises(ValueError, match="leaves the workspace"):
        unpack_kit(buffer.getvalue(), tmp_path / "ws")
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "ws" / "startup").exists()


def test_a_job_names_only_the_federations_sites_and_privmesh_components(tmp_path: Path) -> None:
    job = write_job(SPEC, tmp_path / "job")
    meta = json.loads((job / "meta.json").read_text())
    assert meta["deploy_map"] == {"app": ["server", "f_a", "f_b"]} and meta["min_clients"] == 2
    server = json.loads((job / "app" / "config" / "config_fed_server.json").read_text())
    client = json.loads((job / "app" / "config" / "config_fed_client.json").read_text())
    assert server["workflows"][0]["path"] == "privmesh.fl.flare.controller.RunController"
    assert client["executors"][0]["executor"]["path"] == "privmesh.fl.flare.executor.LocalTrainer"
    assert RunSpec.from_json(server["workflows"][0]["args"]["spec"]) == SPEC
