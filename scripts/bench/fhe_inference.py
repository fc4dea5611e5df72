"""Encrypted logistic-regression inference through fhe-inference, against the same circuit called directly on
OpenFHE in the same run.

The model: 32 features, sigmoid of degree 5 on [-8, 8], HEStd_128_classic at ring dimension 2^14, 256 samples
per ciphertext. Both sides start from the same serialized encrypted inputs and end with serialized encrypted
outputs, because deserializing and serializing is work the service cannot skip:
- direct: in this process, input by input, OpenFHE deserializes the input, runs the circuit
  (privmesh.fhe.circuit on the OpenFHE evaluator) and serializes the output (earlier versions started
  from ciphertexts already deserialized, which left ~6 ms of each ~130 ms input out of the baseline only);
- service: the inputs' BINARY serializations streamed on one Infer call to the service (its own process, mTLS,
  authorization, audit of every input, evaluation in its sandbox worker), outputs streamed back.
The two alternate for --rounds rounds and the medians are compared (these machines are noisy). Last line:
`ratio: <service time / direct time>`, i.e. direct samples/s over service samples/s (goal <= 1.10).

Usage: .venv/bin/python scripts/bench/fhe_inference.py [--inputs 16]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import numpy as np
import openfhe
from benchkit import RunningService, serve_in_process

from privmesh.fhe.circuit import Circuit
from privmesh.fhe.client import ClientKeys, infer_encrypted, register_keys
from privmesh.fhe.model import ModelSpec, load_model, model_file
from privmesh.fhe.openfhe_evaluator import OpenFheEvaluator
from privmesh.fhe.v1 import fhe_pb2 as pb
from privmesh.fhe.v1 import fhe_pb2_grpc
from privmesh.runtime.client import secure_channel

FEATURES, SAMPLES = 32, 256


def measure_direct(spec: ModelSpec, keys: ClientKeys, inputs: list[bytes]) -> float:
    """samples/s from serialized inputs to serialized outputs in this process (no transport, no sandbox)."""
    circuit = Circuit(spec, OpenFheEvaluator(keys.context))

    def infer(raw: bytes) -> bytes:
        return openfhe.Serialize(circuit(openfhe.DeserializeCiphertextString(raw, openfhe.BINARY)), openfhe.BINARY)

    infer(inputs[0])  # warm-up
    began = time.perf_counter()
    for raw in inputs:
        infer(raw)
    return SAMPLES * len(inputs) / (time.perf_counter() - began)


async def measure_service(stub: fhe_pb2_grpc.FHEInferenceStub, session: str, inputs: list[bytes]) -> float:
    await infer_encrypted(stub, session, [(inputs[0], SAMPLES)])  # warm-up: the worker loads the keys
    began = time.perf_counter()
    outputs = await infer_encrypted(stub, session, [(raw, SAMPLES) for raw in inputs])
    elapsed = time.perf_counter() - began
    assert len(outputs) == len(inputs)
    return SAMPLES * len(inputs) / elapsed


async def run(service: RunningService, spec: ModelSpec, count: int, rounds: int) \
        -> tuple[list[float], list[float], float]:
    async with secure_channel(service.target, service.identity, timeout_seconds=600, peer=service.peer) as channel:
        stub = fhe_pb2_grpc.FHEInferenceStub(channel)
        model = (await stub.GetModel(pb.GetModelRequest(name="models/bench"))).model
        keys = ClientKeys.generate(model)
        session = (await register_keys(stub, keys)).name
        rng = np.random.default_rng(1)
        inputs = [keys.encrypt(rng.uniform(-1, 1, (SAMPLES, FEATURES))) for _ in range(count)]
        direct, service = [], []
        for _ in range(rounds):  # alternated, so both sides see the same background load
            direct.append(measure_direct(spec, keys, inputs))
            service.append(await measure_service(stub, session, inputs))
        outputs = await infer_encrypted(stub, session, [(inputs[0], SAMPLES)])
        got = keys.decrypt(outputs[0], SAMPLES)
        truth = spec.predict(_unpack_inputs(keys, inputs[0]))
        return direct, service, float(np.max(np.abs(got - truth)))


def _unpack_inputs(keys: ClientKeys, raw: bytes) -> np.ndarray:
    plaintext = keys.context.Decrypt(keys.key_pair.secretKey, openfhe.DeserializeCiphertextString(raw, openfhe.BINARY))
    plaintext.SetLength(keys.packing.slots)
    values = np.array(plaintext.GetRealPackedValue())
    return values.reshape(SAMPLES, keys.packing.stride)[:, :FEATURES]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=16, help="ciphertexts (of 256 samples) per measurement")
    parser.add_argument("--rounds", type=int, default=5, help="alternating measurements of each side")
    args = parser.parse_args()
    weights = np.random.default_rng(0).normal(0, 0.3, FEATURES)
    model = model_file("logistic_regression", weights=weights, bias=0.1, sigmoid={"degree": 5, "interval": [-8, 8]})
    spec = load_model("bench", model)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        (tmp / "bench.json").write_bytes(model)
        settings = {"database": f"sqlite:///{tmp / 'fhe.db'}", "key_dir": str(tmp / "keys"),
                    "model_files": [str(tmp / "bench.json")]}
        with serve_in_process("privmesh.fhe.server:DEFINITION", tmp, ["privmesh.fhe.v1.FHEInference/*"],
                              settings) as running:
            direct_runs, service_runs, error = asyncio.run(run(running, spec, args.inputs, args.rounds))
    direct, service = float(np.median(direct_runs)), float(np.median(service_runs))
    params = spec.params
    print(f"logistic regression, {FEATURES} features, ring 2^{params.ring_dimension.bit_length() - 1}, depth "
          f"{params.multiplicative_depth}, {params.security_level}, {SAMPLES} samples per ciphertext, "
          f"{args.inputs} ciphertexts per measurement; max |decrypted - plaintext| = {error:.2e}")
    runs = "  (runs: {})"
    print(f"direct OpenFHE circuit (in process):       {direct:9.1f} samples/s median"
          + runs.format(", ".join(f"{r:.0f}" for r in direct_runs)))
    print(f"through the service (mTLS, audit, worker): {service:9.1f} samples/s median"
          + runs.format(", ".join(f"{r:.0f}" for r in service_runs)))
    print(f"ratio: {direct / service:.3f}")


if __name__ == "__main__":
    main()
