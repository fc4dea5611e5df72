"""Step 3's accuracy check fails by chance (DP noise alone) with probability under 1e-6.

The round is reproduced as the federation runs it: each hospital trains logistic regression from the
initial weights on its own records (full batches, so the order seed does not matter), its update is clipped
to the clipping norm, FedAvg averages the three (equal record counts), and the server adds Gaussian noise of
std noise_multiplier x clipping_norm / 3 to each weight (Flower's client-side fixed clipping). The chance
that the noisy model's accuracy is at most MIN_ACCURACY is estimated by importance sampling: the noise is
drawn with twice its std and each draw weighted by the ratio of the two densities.
"""

from __future__ import annotations

import numpy as np

from privmesh.demo import records
from privmesh.demo.fl_step import MIN_ACCURACY, PATIENTS, _federation
from privmesh.fl.app.model import Architecture, TrainingConfig, train

DRAWS, SPREAD = 400_000, 2.0


def _noise_free_round() -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    federation = _federation()
    patients = records.patients(PATIENTS)
    x = np.array([records.scaled_features(p) for p in patients])
    y = np.array([int(p.high_risk) for p in patients])
    arch = Architecture(federation.model.feature_count, federation.model.class_count)
    start = arch.initial_weights(federation.model.seed)
    local = federation.local_training
    clip = federation.differential_privacy.clipping_norm
    updates = []
    for hospital in records.HOSPITALS:
        rows = [i for i, p in enumerate(patients) if p.hospital == hospital]
        assert len(rows) == PATIENTS // len(records.HOSPITALS)  # equal weights in FedAvg
        assert local.batch_size >= len(rows)  # full batches: the local seed does not matter
        trained, _ = train(arch, start, x[rows], y[rows],
                           TrainingConfig(local.epochs, local.batch_size, local.learning_rate, "sgd", 0.0, 0))
        delta = np.concatenate([(t - s).ravel() for t, s in zip(trained, start, strict=True)])
        updates.append(delta * min(1.0, clip / float(np.linalg.norm(delta))))
    theta = np.concatenate([s.ravel() for s in start]) + np.mean(updates, axis=0)
    design = np.hstack([x, np.ones((len(x), 1))])  # [coef..., intercept], as the weights are laid out
    noise_std = federation.differential_privacy.noise_multiplier * clip / len(records.HOSPITALS)
    return theta, design, np.where(y == 1, 1.0, -1.0), noise_std


def test_noise_alone_fails_the_accuracy_check_with_probability_below_1e_6() -> None:
    theta, design, signs, std = _noise_free_round()
    assert ((signs * (design @ theta)) > 0).mean() > MIN_ACCURACY + 0.15  # the noise-free model is good
    rng = np.random.default_rng(2026)
    dims = theta.size
    estimate = 0.0
    for _ in range(DRAWS // 50_000):
        z = rng.normal(0.0, SPREAD * std, (dims, 50_000))
        weight = SPREAD ** dims * np.exp(-(z ** 2).sum(0) / (2 * std ** 2) * (1 - 1 / SPREAD ** 2))
        fails = ((signs[:, None] * (design @ (theta[:, None] + z))) > 0).mean(0) <= MIN_ACCURACY
        estimate += float((weight * fails).sum())
    probability = estimate / DRAWS
    assert probability < 1e-6, probability
