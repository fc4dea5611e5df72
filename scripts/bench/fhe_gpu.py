"""The torch CKKS evaluator (privmesh.fhe.gpu) against OpenFHE on the CPU, in the same run: HMult with
relinearization, rescale and rotation at ring 2^16 with a production modulus chain (depth 12, HEStd_128_classic,
HYBRID key switching), and the logistic-regression inference of fhe_inference.py (32 features, sigmoid of degree 5,
ring 2^14, 256 samples per ciphertext) from serialized input to serialized output.

Both sides compute on the same ciphertexts and keys (the client's, made by OpenFHE); the torch side's HMult,
rescale and rotation are checked bit-identical to OpenFHE's, and its LR output decrypted against OpenFHE's.
Times are medians of --reps runs after one warm-up, with the device synchronized. It prints the device it
ran on; last line: `ratio: <OpenFHE LR time / torch LR time>` (goal on an H200: >= 20; HMult >= 50).

Usage: .venv/bin/python scripts/bench/fhe_gpu.py [--reps 5] [--ring-log 16] [--device auto|cuda|cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import openfhe as o
import torch

from privmesh.fhe.circuit import Circuit, Packing
from privmesh.fhe.gpu import serial
from privmesh.fhe.gpu.evaluator import TorchEvaluator, pick_device
from privmesh.fhe.model import load_model, model_file
from privmesh.fhe.openfhe_evaluator import OpenFheEvaluator
from privmesh.fhe.params import CkksParams, create_context

FEATURES, SAMPLES = 32, 256


def timed(work: Callable[[], Any], reps: int, device: torch.device) -> tuple[float, Any]:
    """Median seconds of `reps` runs after a warm-up, and the last result."""
    result = work()
    runs = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        began = time.perf_counter()
        result = work()
        if device.type == "cuda":
            torch.cuda.synchronize()
        runs.append(time.perf_counter() - began)
    return statistics.median(runs), result


def keyed(params: CkksParams, device: torch.device) -> tuple[Any, Any, TorchEvaluator]:
    cc = create_context(params)
    kp = cc.KeyGen()
    cc.EvalMultKeyGen(kp.secretKey)
    cc.EvalRotateKeyGen(kp.secretKey, list(params.rotation_indices))
    tag = kp.publicKey.GetKeyTag()
    evaluator = TorchEvaluator(cc, kp.publicKey, o.SerializeEvalMultKeyString(o.BINARY, tag),
                               o.SerializeEvalAutomorphismKeyString(o.BINARY, tag), device)
    return cc, kp, evaluator


def identical(mine: Any, theirs: Any) -> bool:
    ref = serial.load_ciphertext(o.Serialize(theirs, o.BINARY))
    expected = np.stack([e.residues() for e in ref.elements]).view(np.int64)
    return bool(mine.data.shape == expected.shape and np.array_equal(mine.data.cpu().numpy(), expected))


def operations(ring_log: int, reps: int, device: torch.device) -> None:
    params = CkksParams(ring_dimension=1 << ring_log, multiplicative_depth=12, scaling_mod_size=50,
                        first_mod_size=60, batch_size=32, rotation_indices=(1,),
                        security_level="HEStd_128_classic" if ring_log >= 16 else "HEStd_NotSet")  # small: quick checks
    cc, kp, ev = keyed(params, device)
    e = ev.engine
    x = cc.Encrypt(kp.publicKey, cc.MakeCKKSPackedPlaintext([0.5, -1.5, 2.0]))
    y = cc.Encrypt(kp.publicKey, cc.MakeCKKSPackedPlaintext([1.25, 0.75, -0.5]))
    a, b = ev.load(o.Serialize(x, o.BINARY)), ev.load(o.Serialize(y, o.BINARY))
    print(f"ring 2^{ring_log}, {len(e.q_moduli)} Q towers + {len(e.p_moduli)} P towers, dnum {e.context.dnum}, "
          f"{params.security_level}")
    product, relinearized = cc.EvalMult(x, y), ev.relinearize(ev.mul(a, b))
    rows = [
        ("HMult+relin", lambda: cc.EvalMult(x, y), lambda: ev.relinearize(ev.mul(a, b)), product),
        ("rescale", lambda: cc.Rescale(product), lambda: ev.rescale(relinearized), cc.Rescale(product)),
        ("rotation", lambda: cc.EvalRotate(x, 1), lambda: ev.rotate(a, 1), cc.EvalRotate(x, 1)),
    ]
    for name, theirs, mine, reference in rows:
        t_openfhe, _ = timed(theirs, reps, device)
        t_torch, result = timed(mine, reps, device)
        check = "bit-identical" if identical(result, reference) else "DIFFERS"
        print(f"{name:12s} OpenFHE {t_openfhe * 1e3:10.2f} ms   torch {t_torch * 1e3:10.2f} ms   "
              f"OpenFHE/torch {t_openfhe / t_torch:8.3f}   {check}")


def inference(reps: int, device: torch.device) -> float:
    weights = np.random.default_rng(0).normal(0, 0.3, FEATURES)
    spec = load_model("bench", model_file("logistic_regression", weights=weights, bias=0.1,
                                          sigmoid={"degree": 5, "interval": [-8, 8]}))
    cc, kp, ev = keyed(spec.params, device)
    packing = Packing.of(spec)
    samples = np.random.default_rng(1).uniform(-1, 1, (SAMPLES, FEATURES))
    raw = o.Serialize(cc.Encrypt(kp.publicKey, cc.MakeCKKSPackedPlaintext(list(packing.pack(samples)))), o.BINARY)
    theirs, mine = Circuit(spec, OpenFheEvaluator(cc)), Circuit(spec, ev)
    t_openfhe, out_openfhe = timed(
        lambda: o.Serialize(theirs(o.DeserializeCiphertextString(raw, o.BINARY)), o.BINARY), reps, device)
    t_torch, out_torch = timed(lambda: ev.dump(mine(ev.load(raw))), reps, device)

    def decrypt(data: bytes) -> np.ndarray:
        plain = cc.Decrypt(kp.secretKey, o.DeserializeCiphertextString(data, o.BINARY))
        plain.SetLength(packing.slots)
        return packing.unpack(plain.GetRealPackedValue(), SAMPLES)

    gap = float(np.max(np.abs(decrypt(out_torch) - decrypt(out_openfhe))))
    print(f"LR inference OpenFHE {t_openfhe * 1e3:10.2f} ms   torch {t_torch * 1e3:10.2f} ms   "
          f"OpenFHE/torch {t_openfhe / t_torch:8.3f}   (ring 2^{spec.params.ring_dimension.bit_length() - 1}, "
          f"{SAMPLES} samples, serialized in and out; max |torch - OpenFHE| decrypted = {gap:.1e})")
    return t_openfhe / t_torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--ring-log", type=int, default=16, help="ring dimension of the operation figures")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    args = parser.parse_args()
    device, reason = pick_device(args.device)
    print(f"device: {device} ({reason}); torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    operations(args.ring_log, args.reps, device)
    ratio = inference(args.reps, device)
    print(f"ratio: {ratio:.3f}")


if __name__ == "__main__":
    main()
