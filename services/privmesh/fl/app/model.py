"""The federation's models in NumPy: logistic regression and a small MLP, with local training and evaluation.

Written by hand because scikit-learn's estimators can neither add FedProx's proximal term to the local loss
nor use the square activation fhe-inference needs; the models are a few matrix products, so NumPy suffices.
The parameter list (Flower's order) is [W0, b0, W1, b1, ...]; logistic regression is the MLP without hidden
layers. Training is deterministic for a seed, so a run's aggregate can be reproduced and compared.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Arrays = list[npt.NDArray[np.float64]]
ACTIVATIONS = ("relu", "tanh", "square")


@dataclass(frozen=True)
class Architecture:
    feature_count: int
    class_count: int
    hidden_units: tuple[int, ...] = ()  # empty: logistic regression
    activation: str = "relu"
    l2_penalty: float = 0.0

    @property
    def outputs(self) -> int:
        return 1 if self.class_count == 2 else self.class_count

    def tensor_names(self) -> list[str]:
        if not self.hidden_units:
            return ["coef", "intercept"]
        return [f"layers.{i}.{part}" for i in range(len(self.hidden_units) + 1) for part in ("weight", "bias")]

    def initial_weights(self, seed: int) -> Arrays:
        """Glorot-uniform weights, zero biases; logistic regression starts at zero."""
        sizes = [self.feature_count, *self.hidden_units, self.outputs]
        rng = np.random.default_rng(seed)
        weights: Arrays = []
        for fan_in, fan_out in itertools.pairwise(sizes):
            limit = 0.0 if not self.hidden_units else float(np.sqrt(6.0 / (fan_in + fan_out)))
            weights.append(rng.uniform(-limit, limit, size=(fan_in, fan_out)))
            weights.append(np.zeros(fan_out))
        return weights


def _activate(name: str, z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "tanh":
        return np.tanh(z)
    return z * z


def _activation_grad(name: str, z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    if name == "relu":
        return (z > 0).astype(np.float64)
    if name == "tanh":
        return 1.0 - np.tanh(z) ** 2
    return 2.0 * z


def _output(arch: Architecture, logits: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    if arch.outputs == 1:
        return 1.0 / (1.0 + np.exp(-np.clip(logits, -40, 40)))
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities: npt.NDArray[np.float64] = shifted / shifted.sum(axis=1, keepdims=True)
    return probabilities


def predict_proba(arch: Architecture, weights: Arrays, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    a = x
    for layer in range(len(weights) // 2 - 1):
        a = _activate(arch.activation, a @ weights[2 * layer] + weights[2 * layer + 1])
    return _output(arch, a @ weights[-2] + weights[-1])


def _targets(arch: Architecture, y: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    if arch.outputs == 1:
        return y.reshape(-1, 1).astype(np.float64)
    return np.eye(arch.outputs)[y]


def loss_and_accuracy(arch: Architecture, weights: Arrays, x: npt.NDArray[np.float64],
                      y: npt.NDArray[np.int64]) -> tuple[float, float]:
    """Cross-entropy loss and accuracy on (x, y)."""
    p = np.clip(predict_proba(arch, weights, x), 1e-12, 1 - 1e-12)
    t = _targets(arch, y)
    if arch.outputs == 1:
        loss = -np.mean(t * np.log(p) + (1 - t) * np.log(1 - p))
        predicted = (p[:, 0] >= 0.5).astype(np.int64)
    else:
        loss = -np.mean(np.sum(t * np.log(p), axis=1))
        predicted = p.argmax(axis=1)
    return float(loss), float(np.mean(predicted == y))


def _gradients(arch: Architecture, weights: Arrays, x: npt.NDArray[np.float64],
               y: npt.NDArray[np.int64]) -> Arrays:
    layers = len(weights) // 2
    inputs, pre = [x], []
    a = x
    for layer in range(layers - 1):
        z = a @ weights[2 * layer] + weights[2 * layer + 1]
        pre.append(z)
        a = _activate(arch.activation, z)
        inputs.append(a)
    delta = (_output(arch, a @ weights[-2] + weights[-1]) - _targets(arch, y)) / len(x)
    grads: Arrays = [np.zeros_like(w) for w in weights]
    for layer in reversed(range(layers)):
        grads[2 * layer] = inputs[layer].T @ delta + arch.l2_penalty * weights[2 * layer]
        grads[2 * layer + 1] = delta.sum(axis=0)
        if layer:
            delta = (delta @ weights[2 * layer].T) * _activation_grad(arch.activation, pre[layer - 1])
    return grads


@dataclass(frozen=True)
class TrainingConfig:
    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 0.01
    optimizer: str = "sgd"  # or "adam"
    proximal_mu: float = 0.0  # FedProx; 0 for plain local training
    seed: int = 0


def train(arch: Architecture, global_weights: Arrays, x: npt.NDArray[np.float64], y: npt.NDArray[np.int64],
          config: TrainingConfig) -> tuple[Arrays, float]:
    """Local training from the global weights; returns the new weights and the mean training loss."""
    weights = [w.copy() for w in global_weights]
    rng = np.random.default_rng(config.seed)
    first = [np.zeros_like(w) for w in weights]
    second = [np.zeros_like(w) for w in weights]
    step = 0
    for _ in range(config.epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), config.batch_size):
            batch = order[start:start + config.batch_size]
            grads = _gradients(arch, weights, x[batch], y[batch])
            if config.proximal_mu:
                grads = [g + config.proximal_mu * (w - w0) for g, w, w0 in zip(grads, weights, global_weights,
                                                                               strict=True)]
            step += 1
            for i, grad in enumerate(grads):
                if config.optimizer == "adam":
                    first[i] = 0.9 * first[i] + 0.1 * grad
                    second[i] = 0.999 * second[i] + 0.001 * grad * grad
                    m_hat = first[i] / (1 - 0.9 ** step)
                    v_hat = second[i] / (1 - 0.999 ** step)
                    weights[i] = weights[i] - config.learning_rate * m_hat / (np.sqrt(v_hat) + 1e-8)
                else:
                    weights[i] = weights[i] - config.learning_rate * grad
    loss, _ = loss_and_accuracy(arch, weights, x, y)
    return weights, loss
