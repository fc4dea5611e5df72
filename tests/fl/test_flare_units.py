"""The FLARE engine's pure parts: aggregation with and without DP, the site executor's client-side clipping, site
names, startup-kit unpacking and job folders (the real FLARE processes are in test_flare.py and the federation
suite, test_coordinator.py)."""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from nvflare.apis.fl_constant import ReservedKey
from nvflare.apis.fl_context import FLContext
from nvflare.apis.signal import Signal
from nvflare.app_common.abstract.fl_model import FLModel
from nvflare.app_common.utils.fl_model_utils import FLModelUtils

from privmesh.fl.app.model import Architecture, TrainingConfig
from privmesh.fl.app.spec import DpSpec, RunSpec
from privmesh.fl.coordinator.service import flare_site_name
from privmesh.fl.flare.controller import NUM_EXAMPLES, aggregate
from privmesh.fl.flare.executor import LocalTrainer
from privmesh.fl.flare.job import write_job
from privmesh.fl.flare.kit import DATA_ENV, unpack_kit
from privmesh.fl.participant.sdk import write_training_csv

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


def test_the_site_executor_clips_its_update_for_client_side_dp(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """What the accountant assumes of client-side clipping: each site's returned update (trained minus received
    weights) has norm at most clipping_norm, and the unclipped training moves farther (so the clip is real)."""
    rng = np.random.default_rng(5)
    data = write_training_csv(tmp_path / "site.csv", ("a", "b"), "y",
                              [(tuple(rng.normal(size=2)), int(rng.integers(2))) for _ in range(40)])
    monkeypatch.setenv(DATA_ENV, str(data))
    spec = replace(SPEC, training=TrainingConfig(epochs=5, batch_size=40, learning_rate=2.0))
    received = {n: w + 0.5 for n, w in zip(spec.architecture.tensor_names(), spec.architecture.initial_weights(1),
                                           strict=True)}
    context = FLContext()
    context.set_prop(ReservedKey.IDENTITY_NAME, "f_a", private=True, sticky=False)

    def update_norm(run: RunSpec) -> float:
        task = FLModelUtils.to_shareable(FLModel(params=dict(received), current_round=1))
        reply = FLModelUtils.from_shareable(LocalTrainer(run.to_json()).execute("train", task, context, Signal()))
        assert reply.meta[NUM_EXAMPLES] == 40
        return float(np.sqrt(sum(np.sum((np.asarray(reply.params[n]) - received[n]) ** 2) for n in received)))

    assert update_norm(spec) > 0.2
    clipped = replace(spec, dp=DpSpec(server_side=False, noise_multiplier=1.0, clipping_norm=0.1, delta=1e-3,
                                      target_epsilon=None))
    assert update_norm(clipped) == pytest.approx(0.1)


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
