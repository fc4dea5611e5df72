"""A model's encrypted circuit, written against the evaluator seam only, and the sample-major packing.

Packing: value j of sample i sits in slot i * stride + j. A dense layer multiplies by the unit's weights tiled
over the samples, sums each stride-wide block with log2(stride) rotations, keeps only the block sums with a
0/1 mask (so no partial sum of the weights reaches the client), moves unit u's sum to offset u, adds the bias
and applies the activation. A polynomial activation p(x) on [low, high] is evaluated as a polynomial in
t = (x - center) / half_width, whose affine map is folded into the layer's weights and bias for free; the
powers are combined so a degree-d polynomial costs ceil(log2(d + 1)) levels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic

import numpy as np
from numpy.typing import NDArray

from privmesh.fhe.evaluator import C, Evaluator, P
from privmesh.fhe.model import ModelSpec

NEGLIGIBLE = 1e-12  # coefficients this small (the even terms of an odd function) are skipped


@dataclass(frozen=True)
class Packing:
    """Where a batch's values go: what a model publishes as InputPacking and OutputPacking."""

    features: int
    outputs: int
    stride: int
    slots: int
    samples_per_ciphertext: int

    @classmethod
    def of(cls, spec: ModelSpec) -> Packing:
        return cls(len(spec.features), spec.outputs, spec.stride, spec.params.batch_size, spec.samples_per_ciphertext)

    def pack(self, samples: NDArray[np.float64]) -> NDArray[np.float64]:
        """Preprocessed samples (n x features, n <= samples_per_ciphertext) as one ciphertext's slot values."""
        values = np.asarray(samples, dtype=float)
        if values.ndim != 2 or values.shape[1] != self.features:
            raise ValueError(f"samples must be an n x {self.features} array")
        if not 1 <= values.shape[0] <= self.samples_per_ciphertext:
            raise ValueError(f"1..{self.samples_per_ciphertext} samples per ciphertext")
        slots = np.zeros(self.slots)
        for i, row in enumerate(values):
            slots[i * self.stride:i * self.stride + self.features] = row
        return slots

    def unpack(self, slots: Sequence[float], count: int) -> NDArray[np.float64]:
        """The outputs (count x outputs) of an output ciphertext's slot values."""
        values = np.asarray(slots, dtype=float)
        return np.array([values[i * self.stride:i * self.stride + self.outputs] for i in range(count)])


@dataclass(frozen=True)
class _Layer:
    unit_weights: tuple[NDArray[np.float64], ...]  # per unit: its weights tiled over the samples
    bias: NDArray[np.float64]  # unit u's bias at slot i * stride + u
    mask: NDArray[np.float64]  # 1 at slot i * stride for every sample
    activation: str  # "identity", "square" or "polynomial"
    coefficients: tuple[float, ...]  # power basis in t, for "polynomial"


def _layers(spec: ModelSpec) -> list[_Layer]:
    slots, stride, samples = spec.params.batch_size, spec.stride, spec.samples_per_ciphertext
    out = []
    for layer in spec.layers:
        weights, bias = layer.weights, layer.bias
        coefficients: tuple[float, ...] = ()
        approximation = layer.activation.approximation
        if approximation is not None:
            weights = weights / approximation.half_width
            bias = (bias - approximation.center) / approximation.half_width
            coefficients = approximation.power_coefficients()
        tiled = []
        for row in weights:
            vector = np.zeros(slots)
            for i in range(samples):
                vector[i * stride:i * stride + len(row)] = row
            tiled.append(vector)
        bias_vector, mask = np.zeros(slots), np.zeros(slots)
        for i in range(samples):
            bias_vector[i * stride:i * stride + len(bias)] = bias
            mask[i * stride] = 1.0
        out.append(_Layer(tuple(tiled), bias_vector, mask, layer.activation.kind, coefficients))
    return out


class Circuit(Generic[C, P]):
    """A model's circuit bound to one evaluator: its plaintexts are encoded once and reused for every input."""

    def __init__(self, spec: ModelSpec, evaluator: Evaluator[C, P]) -> None:
        self.spec = spec
        self.ev = evaluator
        self._layers: list[dict[str, Any]] = [
            {"weights": [evaluator.encode(w) for w in layer.unit_weights], "bias": evaluator.encode(layer.bias),
             "mask": evaluator.encode(layer.mask), "activation": layer.activation,
             "coefficients": layer.coefficients}
            for layer in _layers(spec)
        ]

    def __call__(self, ciphertext: C) -> C:
        value = ciphertext
        for layer in self._layers:
            value = self._dense(value, layer["weights"], layer["mask"], layer["bias"])
            if layer["activation"] == "square":
                value = self._product(value, value)
            elif layer["activation"] == "polynomial":
                value = self._polynomial(value, layer["coefficients"])
        return value

    def _block_sum(self, value: C) -> C:
        steps = 1
        while steps < self.spec.stride:
            value = self.ev.add(value, self.ev.rotate(value, steps))
            steps *= 2
        return value

    def _dense(self, value: C, weights: list[P], mask: P, bias: P) -> C:
        ev = self.ev
        units = []
        for unit, unit_weights in enumerate(weights):
            summed = self._block_sum(ev.rescale(ev.mul_plain(value, unit_weights)))
            kept = ev.rescale(ev.mul_plain(summed, mask))
            units.append(ev.rotate(kept, -unit) if unit else kept)
        return ev.add_plain(ev.sum(units), bias)

    def _product(self, a: C, b: C) -> C:
        return self.ev.rescale(self.ev.relinearize(self.ev.mul(a, b)))

    def _polynomial(self, t: C, coefficients: Sequence[float]) -> C:
        powers: dict[int, C] = {1: t}

        def power(k: int) -> C:  # k a power of two
            if k not in powers:
                half = power(k // 2)
                powers[k] = self._product(half, half)
            return powers[k]

        def scaled(c: float, k: int) -> C:  # c * t^k at depth ceil(log2(k + 1))
            if k == 1:
                return self.ev.rescale(self.ev.mul_scalar(t, c))
            high = 1 << (k - 1).bit_length() - 1
            return self._product(power(high), scaled(c, k - high))

        terms = [scaled(c, k) for k, c in enumerate(coefficients) if k and abs(c) > NEGLIGIBLE]
        if not terms:
            terms = [self.ev.rescale(self.ev.mul_scalar(t, 0.0))]
        return self.ev.add_scalar(self.ev.sum(terms), coefficients[0])
