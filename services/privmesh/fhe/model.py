"""Served models: the model file format, the derived CKKS parameters and packing, and plaintext inference.

Every model kind is a stack of dense layers with polynomial activations (linear regression: one layer, no
activation; logistic regression: one unit and a polynomial sigmoid; MLP: several layers), so one circuit
serves them all. The model file is JSON ("format": "privmesh.fhe.model/v1"); docs/fhe-inference.md has an
example of each kind.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from privmesh.fhe.params import (
    PRODUCTION_SECURITY,
    SECURITY_LEVELS,
    TEST_SECURITY,
    CkksParams,
    create_context,
    smallest_secure_ring,
)
from privmesh.fhe.polynomial import Approximation, depth_of_degree, fit

FORMAT = "privmesh.fhe.model/v1"
KINDS = ("linear_regression", "logistic_regression", "mlp")
MODEL_ID = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
MAX_MODEL_FILE_BYTES = 2 * 1024 * 1024
MAX_FEATURES = 4096
MAX_LAYERS = 8
SCALING_MOD_SIZE = 40
FIRST_MOD_SIZE = 60
DEFAULT_TEST_RING = 4096
DEFAULT_TOLERANCE = 1e-3
MAX_INPUTS_PER_STREAM = 10_000
LEVELS_PER_DENSE_LAYER = 2  # the plaintext weights, then the mask that keeps only each block's sum


class InvalidModel(ValueError):
    """The model file is not a valid model; the message says which field and why (never a weight value)."""


@dataclass(frozen=True)
class Feature:
    name: str
    offset: float = 0.0
    scale: float = 1.0


@dataclass(frozen=True)
class Activation:
    kind: str  # "identity", "square" or "polynomial"
    approximation: Approximation | None = None

    @property
    def depth(self) -> int:
        if self.kind == "identity":
            return 0
        if self.kind == "square":
            return 1
        assert self.approximation is not None
        return depth_of_degree(self.approximation.degree)

    def __call__(self, z: NDArray[np.float64]) -> NDArray[np.float64]:
        if self.kind == "identity":
            return z
        if self.kind == "square":
            return z * z
        assert self.approximation is not None
        return self.approximation(z)


@dataclass(frozen=True)
class Layer:
    weights: NDArray[np.float64]  # units x inputs
    bias: NDArray[np.float64]  # units
    activation: Activation

    @property
    def units(self) -> int:
        return int(self.weights.shape[0])


@dataclass(frozen=True)
class Limits:
    max_total_key_bytes: int
    max_ciphertext_bytes: int
    max_inputs_per_stream: int


@dataclass(frozen=True)
class ModelSpec:
    model_id: str
    display_name: str
    description: str
    kind: str
    features: tuple[Feature, ...]
    layers: tuple[Layer, ...]
    output_names: tuple[str, ...]
    params: CkksParams
    stride: int  # slot distance between samples (a power of two >= every layer's width)
    samples_per_ciphertext: int
    tolerance: float
    limits: Limits
    weights_sha256: str
    etag: str
    source: bytes  # the model file, kept to persist and reload the model

    @property
    def name(self) -> str:
        return f"models/{self.model_id}"

    @property
    def outputs(self) -> int:
        return self.layers[-1].units

    def preprocess(self, raw: NDArray[np.float64]) -> NDArray[np.float64]:
        """(x - offset) / scale per feature, as clients must encode."""
        offsets = np.array([f.offset for f in self.features], dtype=np.float64)
        scales = np.array([f.scale or 1.0 for f in self.features], dtype=np.float64)
        return (np.asarray(raw, dtype=np.float64) - offsets) / scales

    def predict(self, inputs: NDArray[np.float64]) -> NDArray[np.float64]:
        """Plaintext inference on preprocessed inputs (samples x features): what decryption must match."""
        values = np.asarray(inputs, dtype=float)
        for layer in self.layers:
            values = layer.activation(values @ layer.weights.T + layer.bias)
        return values


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidModel(f"{where}: must be a finite number")
    return float(value)


def _matrix(value: Any, where: str) -> NDArray[np.float64]:
    try:
        array = np.array(value, dtype=float)
    except (TypeError, ValueError):
        raise InvalidModel(f"{where}: must be numbers") from None
    if array.ndim == 1:
        array = array.reshape(1, -1)
    if array.ndim != 2 or array.size == 0 or not np.all(np.isfinite(array)):
        raise InvalidModel(f"{where}: must be a non-empty matrix of finite numbers")
    return array


def _activation(value: Any, where: str) -> Activation:
    if value in (None, "identity"):
        return Activation("identity")
    if value == "square":
        return Activation("square")
    if not isinstance(value, dict):
        raise InvalidModel(f"{where}: 'identity', 'square' or {{function, degree, interval}}")
    interval = value.get("interval", [-8.0, 8.0])
    if not isinstance(interval, list) or len(interval) != 2:
        raise InvalidModel(f"{where}.interval: must be [low, high]")
    try:
        approximation = fit(str(value.get("function", "sigmoid")), int(value.get("degree", 5)),
                            _number(interval[0], f"{where}.interval"), _number(interval[1], f"{where}.interval"))
    except (TypeError, ValueError) as exc:
        raise InvalidModel(f"{where}: {exc}") from None
    return Activation("polynomial", approximation)


def _features(value: Any, count: int) -> tuple[Feature, ...]:
    if value is None:
        return tuple(Feature(f"x{i}") for i in range(count))
    if not isinstance(value, list) or len(value) != count:
        raise InvalidModel(f"features: must list {count} features (one per weight column)")
    out = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            raise InvalidModel(f"features[{i}]: must be a name or {{name, offset, scale}}")
        scale = _number(item.get("scale", 1.0), f"features[{i}].scale")
        out.append(Feature(item["name"], _number(item.get("offset", 0.0), f"features[{i}].offset"), scale or 1.0))
    return tuple(out)


def _layers(doc: dict[str, Any], kind: str) -> tuple[Layer, ...]:
    if kind == "mlp":
        raw = doc.get("layers")
        if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_LAYERS:
            raise InvalidModel(f"layers: must list 1..{MAX_LAYERS} layers")
        layers: list[Layer] = []
        for i, item in enumerate(raw):
            if not isinstance(item, dict):
                raise InvalidModel(f"layers[{i}]: must be an object")
            weights = _matrix(item.get("weights"), f"layers[{i}].weights")
            bias: NDArray[np.float64] = _matrix(item.get("bias", [0.0] * weights.shape[0]), f"layers[{i}].bias").ravel()
            if bias.shape[0] != weights.shape[0]:
                raise InvalidModel(f"layers[{i}].bias: must have one entry per unit ({weights.shape[0]})")
            if layers and layers[-1].units != weights.shape[1]:
                raise InvalidModel(f"layers[{i}].weights: must have {layers[-1].units} columns")
            layers.append(Layer(weights, bias, _activation(item.get("activation"), f"layers[{i}].activation")))
        return tuple(layers)
    weights = _matrix(doc.get("weights"), "weights")
    if weights.shape[0] != 1:
        raise InvalidModel("weights: must be one list of numbers")
    bias = np.array([_number(doc.get("bias", 0.0), "bias")])
    if kind == "linear_regression":
        return (Layer(weights, bias, Activation("identity")),)
    sigmoid = doc.get("sigmoid", {})
    if not isinstance(sigmoid, dict) or sigmoid.get("function", "sigmoid") != "sigmoid":
        raise InvalidModel("sigmoid: must be {degree, interval}")
    if int(sigmoid.get("degree", 5)) not in (3, 5, 7):
        raise InvalidModel("sigmoid.degree: must be 3, 5 or 7")
    return (Layer(weights, bias, _activation({**sigmoid, "function": "sigmoid"}, "sigmoid")),)


def _limits(params: CkksParams) -> Limits:
    towers = params.multiplicative_depth + 2
    ciphertext = 2 * params.ring_dimension * towers * 8 + 64 * 1024
    eval_key = 4 * params.ring_dimension * towers * 8 * 3 + 64 * 1024
    keys = ciphertext * 2 + 64 * 1024 + eval_key * (1 + len(params.rotation_indices))
    return Limits(keys, ciphertext, MAX_INPUTS_PER_STREAM)


def _parse(model_file: bytes) -> dict[str, Any]:
    if len(model_file) > MAX_MODEL_FILE_BYTES:
        raise InvalidModel(f"the model file is larger than {MAX_MODEL_FILE_BYTES} bytes")
    try:
        doc = json.loads(model_file.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidModel(f"not UTF-8 JSON ({type(exc).__name__})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise InvalidModel(f"format: must be {FORMAT!r}")
    if doc.get("kind") not in KINDS:
        raise InvalidModel(f"kind: must be one of {', '.join(KINDS)}")
    return doc


def load_model(model_id: str, model_file: bytes) -> ModelSpec:
    """Validates a model file and derives everything a client needs; raises InvalidModel."""
    if not MODEL_ID.match(model_id):
        raise InvalidModel("model_id: lower-case letters, digits and '-', 1..63 characters")
    doc = _parse(model_file)
    kind = str(doc["kind"])
    layers = _layers(doc, kind)
    features = _features(doc.get("features"), int(layers[0].weights.shape[1]))
    if len(features) > MAX_FEATURES:
        raise InvalidModel(f"features: at most {MAX_FEATURES}")
    widths = [len(features), *(layer.units for layer in layers)]
    stride = 1 << max(0, math.ceil(math.log2(max(widths))))
    depth = sum(LEVELS_PER_DENSE_LAYER + layer.activation.depth for layer in layers)
    rotations = [1 << k for k in range(int(math.log2(stride)))]
    rotations += [-u for u in range(1, max(layer.units for layer in layers))]
    security = doc.get("security", PRODUCTION_SECURITY)
    if security not in SECURITY_LEVELS:
        raise InvalidModel(f"security: must be one of {', '.join(SECURITY_LEVELS)}")
    ring = doc.get("ring_dimension", 0 if security == PRODUCTION_SECURITY else DEFAULT_TEST_RING)
    if not isinstance(ring, int) or (ring and (ring < 1024 or ring & (ring - 1) or ring > 1 << 17)):
        raise InvalidModel("ring_dimension: a power of two in 1024..131072, or 0 to let OpenFHE choose")
    params = CkksParams(ring, depth, SCALING_MOD_SIZE, FIRST_MOD_SIZE, 0, tuple(rotations), security)
    try:
        smallest = smallest_secure_ring(params) if security == PRODUCTION_SECURITY else 0
        if ring and ring < smallest:
            raise InvalidModel(f"ring_dimension: {ring} is too small for 128-bit security at depth {depth} "
                               f"(at least {smallest})")
        ring = ring or smallest
        ring = max(ring, 2 * stride)
        params = CkksParams(**{**params.to_json(), "ring_dimension": ring, "batch_size": ring // 2,
                               "rotation_indices": params.rotation_indices})
        create_context(params)  # OpenFHE checks the security level and the modulus chain here
    except RuntimeError as exc:
        raise InvalidModel(f"parameters: OpenFHE refuses ring dimension {ring} at depth {depth} "
                           f"({type(exc).__name__})") from None
    most = params.batch_size // stride
    samples = doc.get("samples_per_ciphertext", most)
    if not isinstance(samples, int) or not 1 <= samples <= most:
        raise InvalidModel(f"samples_per_ciphertext: must be 1..{most}")
    outputs = doc.get("outputs", ["probability" if kind == "logistic_regression" else f"y{u}"
                                  for u in range(layers[-1].units)])
    if not isinstance(outputs, list) or len(outputs) != layers[-1].units or not all(isinstance(o, str)
                                                                                      for o in outputs):
        raise InvalidModel(f"outputs: must name the {layers[-1].units} output values")
    tolerance = _number(doc.get("tolerance", DEFAULT_TOLERANCE), "tolerance")
    digest = hashlib.sha256(model_file).hexdigest()
    etag = hashlib.sha256(digest.encode() + json.dumps(params.to_json(), sort_keys=True).encode()).hexdigest()[:16]
    return ModelSpec(model_id, str(doc.get("display_name", model_id)), str(doc.get("description", "")), kind,
                     features, layers, tuple(outputs), params, stride, samples, tolerance, _limits(params), digest,
                     etag, model_file)


def model_file(kind: str, *, weights: Any = None, bias: Any = 0.0, layers: list[dict[str, Any]] | None = None,
               features: list[Any] | None = None, sigmoid: dict[str, Any] | None = None,
               security: str = PRODUCTION_SECURITY, **extra: Any) -> bytes:
    """Writes a model file (for operators' scripts, the demo and tests)."""
    doc: dict[str, Any] = {"format": FORMAT, "kind": kind, "security": security, **extra}
    if features is not None:
        doc["features"] = features
    if kind == "mlp":
        doc["layers"] = layers
    else:
        doc["weights"] = [float(w) for w in np.asarray(weights, dtype=float).ravel()]
        doc["bias"] = float(bias)
        if kind == "logistic_regression":
            doc["sigmoid"] = sigmoid or {"degree": 5, "interval": [-8.0, 8.0]}
    if security == TEST_SECURITY:
        doc.setdefault("ring_dimension", DEFAULT_TEST_RING)
    return json.dumps(doc, sort_keys=True).encode()
