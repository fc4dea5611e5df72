"""Asynchronous jobs against a synchronous Infer stream: the same encrypted inputs, the same service.

The model and inputs are those of fhe_inference.py (logistic regression, 32 features, HEStd_128_classic, ring
2^14, 256 samples per ciphertext). Per round, alternated so both see the same background load: (a) one Infer
stream of every input, outputs streamed back; (b) SubmitJob of the same inputs, polled with GetJob until it
succeeded, then GetJobResult. (b) adds what a job costs on top of the shared evaluation path: inputs and
outputs written to disk, a database commit per output, polling. Last line: `ratio: <job time / Infer time>`.

Usage: .venv/bin/python scripts/bench/fhe_jobs.py [--inputs 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import numpy as np
from benchkit import RunningService, serve_in_process

from privmesh.fhe.client import ClientKeys, infer_encrypted, job_result, register_keys, submit_job, wait_for_job
from privmesh.fhe.model import model_file
from privmesh.fhe.v1 import fhe_pb2 as pb
from privmesh.fhe.v1 import fhe_pb2_grpc
from privmesh.runtime.client import secure_channel

FEATURES, SAMPLES = 32, 256


async def run(service: RunningService, count: int, rounds: int) -> tuple[list[float], list[float], float]:
    async with secure_channel(service.target, service.identity, timeout_seconds=600, peer=service.peer) as channel:
        stub = fhe_pb2_grpc.FHEInferenceStub(channel)
        keys = ClientKeys.generate((await stub.GetModel(pb.GetModelRequest(name="models/bench"))).model)
        session = (await register_keys(stub, keys)).name
        rng = np.random.default_rng(1)
        inputs = [(keys.encrypt(rng.uniform(-1, 1, (SAMPLES, FEATURES))), SAMPLES) for _ in range(count)]
        await infer_encrypted(stub, session, inputs[:1])  # warm-up: the worker loads the keys
        streamed, queued = [], []
        difference = 0.0
        for _ in range(rounds):
            began = time.perf_counter()
            direct = await infer_encrypted(stub, session, inputs)
            streamed.append(time.perf_counter() - began)
            began = time.perf_counter()
            job = await submit_job(stub, session, inputs)
            await wait_for_job(stub, job.name, poll_seconds=0.02, progress=False)
            outputs = await job_result(stub, job.name)
            queued.append(time.perf_counter() - began)
            first = keys.decrypt(outputs[0], SAMPLES) - keys.decrypt(direct[0], SAMPLES)
            difference = max(difference, float(np.max(np.abs(first))))
        return streamed, queued, difference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=8, help="ciphertexts (of 256 samples) per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating measurements of each side")
    args = parser.parse_args()
    weights = np.random.default_rng(0).normal(0, 0.3, FEATURES)
    model = model_file("logistic_regression", weights=weights, bias=0.1, sigmoid={"degree": 5, "interval": [-8, 8]})
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        (tmp / "bench.json").write_bytes(model)
        settings = {"database": f"sqlite:///{tmp / 'fhe.db'}", "key_dir": str(tmp / "keys"),
                    "model_files": [str(tmp / "bench.json")], "jobs": {"poll_seconds": 0.05}}
        with serve_in_process("privmesh.fhe.server:DEFINITION", tmp, ["privmesh.fhe.v1.FHEInference/*"],
                              settings) as running:
            streamed, queued, difference = asyncio.run(run(running, args.inputs, args.rounds))
    infer_s, job_s = float(np.median(streamed)), float(np.median(queued))
    print(f"logistic regression, ring 2^14, {args.inputs} inputs of {SAMPLES} samples; max |job - Infer| after "
          f"decryption = {difference:.2e}")
    print(f"Infer stream:                 {infer_s:7.2f} s median  (runs: {', '.join(f'{r:.2f}' for r in streamed)})")
    print(f"job (submit, poll, result):   {job_s:7.2f} s median  (runs: {', '.join(f'{r:.2f}' for r in queued)})")
    print(f"ratio: {job_s / infer_s:.3f}")


if __name__ == "__main__":
    main()
