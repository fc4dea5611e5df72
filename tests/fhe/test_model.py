"""Models and circuits without a server: polynomial approximations, model-file validation, derived parameters,
and the circuit of every model kind on the OpenFHE evaluator against plaintext inference."""

from __future__ import annotations

import json

import numpy as np
import pytest

from privmesh.fhe.circuit import Circuit, Packing
from privmesh.fhe.model import InvalidModel, load_model, model_file
from privmesh.fhe.openfhe_evaluator import OpenFheEvaluator
from privmesh.fhe.params import create_context
from privmesh.fhe.polynomial import FUNCTIONS, fit
from tests.fhe.conftest import small_model_files


@pytest.mark.parametrize(("degree", "bound"), [(3, 0.12), (5, 0.065), (7, 0.031)])
def test_sigmoid_approximation_error_is_declared_and_holds(degree: int, bound: float) -> None:
    approximation = fit("sigmoid", degree, -8, 8)
    grid = np.linspace(-8, 8, 1001)
    error = np.max(np.abs(approximation(grid) - FUNCTIONS["sigmoid"](grid)))
    assert error <= approximation.max_abs_error + 1e-12 and approximation.max_abs_error < bound
    assert len(approximation.chebyshev) == degree + 1


def test_openfhe_chebyshev_convention_round_trips() -> None:
    approximation = fit("tanh", 5, -3, 3)
    t = np.linspace(-1, 1, 11)
    c = np.array(approximation.chebyshev)
    openfhe_value = c[0] / 2 + np.polynomial.chebyshev.chebval(t, np.concatenate([[0.0], c[1:]]))
    assert np.allclose(openfhe_value, approximation(0 + 3 * t))


@pytest.mark.parametrize(("change", "message"), [
    ({"format": "other"}, "format"),
    ({"kind": "svm"}, "kind"),
    ({"weights": []}, "weights"),
    ({"weights": ["a", 1]}, "weights"),
    ({"sigmoid": {"degree": 4, "interval": [-8, 8]}}, "sigmoid.degree"),
    ({"sigmoid": {"degree": 3, "interval": [8, -8]}}, "interval"),
    ({"features": ["only-one"]}, "features"),
    ({"ring_dimension": 1000}, "ring_dimension"),
    ({"security": "HEStd_128_classic", "ring_dimension": 2048}, "128-bit security"),
    ({"samples_per_ciphertext": 100_000}, "samples_per_ciphertext"),
])
def test_invalid_model_files_are_refused_with_the_field(change: dict[str, object], message: str) -> None:
    doc = json.loads(small_model_files()["logistic-5"])
    doc.update(change)
    with pytest.raises(InvalidModel, match=message):
        load_model("m", json.dumps(doc).encode())


def test_invalid_model_id_and_non_json() -> None:
    with pytest.raises(InvalidModel, match="model_id"):
        load_model("Bad_Id", small_model_files()["linear"])
    with pytest.raises(InvalidModel, match="JSON"):
        load_model("m", b"\xff\x00")


def test_production_model_publishes_128_bit_parameters_and_packing() -> None:
    spec = load_model("bench", model_file("logistic_regression", weights=np.ones(32) * 0.1, bias=0.0))
    assert spec.params.security_level == "HEStd_128_classic" and spec.params.ring_dimension == 16384
    assert spec.samples_per_ciphertext == 256 and spec.stride == 32
    assert spec.params.rotation_indices == (1, 2, 4, 8, 16) and spec.params.multiplicative_depth == 5


@pytest.mark.insecure_params
@pytest.mark.parametrize("name", ["linear", "logistic-3", "logistic-5", "logistic-7", "mlp"])
def test_circuit_matches_plaintext_inference_within_tolerance(name: str) -> None:
    spec = load_model(name, small_model_files()[name])
    context = create_context(spec.params)
    key_pair = context.KeyGen()
    context.EvalMultKeyGen(key_pair.secretKey)
    context.EvalRotateKeyGen(key_pair.secretKey, list(spec.params.rotation_indices))
    packing = Packing.of(spec)
    samples = np.random.default_rng(3).uniform(-1, 1, (spec.samples_per_ciphertext, len(spec.features)))
    ciphertext = context.Encrypt(key_pair.publicKey, context.MakeCKKSPackedPlaintext(list(packing.pack(samples))))
    output = Circuit(spec, OpenFheEvaluator(context))(ciphertext)
    plaintext = context.Decrypt(key_pair.secretKey, output)
    plaintext.SetLength(spec.params.batch_size)
    decrypted = packing.unpack(plaintext.GetRealPackedValue(), len(samples))
    expected = spec.predict(samples)
    assert decrypted.shape == expected.shape == (len(samples), spec.outputs)
    assert np.max(np.abs(decrypted - expected)) < spec.tolerance
    assert np.ptp(expected) > 10 * spec.tolerance  # the outputs vary, so agreement is not trivial
