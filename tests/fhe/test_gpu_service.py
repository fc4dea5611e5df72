"""fhe-inference with `evaluator.backend: torch` (on the CPU here; CUDA where a GPU is visible): every input of
a model evaluated by the torch evaluator over real mTLS decrypts to the plaintext model's outputs, and a session
whose keys exceed the device memory allowed per session is refused with RESOURCE_EXHAUSTED."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import torch

from privmesh.fhe import server as fhe_server
from privmesh.fhe.client import MAX_CHUNK_BYTES, infer, infer_job, register_keys
from privmesh.fhe.model import load_model
from privmesh.fhe.v1 import fhe_pb2 as pb
from privmesh.fhe.v1 import fhe_pb2_grpc
from privmesh.runtime.client import secure_channel
from privmesh.runtime.errors import read_error
from privmesh.runtime.pki import DevPki
from tests.conftest import identity, server_config, spiffe
from tests.fhe.conftest import RULES, Fhe, fhe_settings, keys_for, small_model_files

pytestmark = pytest.mark.insecure_params


async def _serve(start_server: Any, tmp: Path, pki: DevPki, evaluator: dict[str, Any]) -> AsyncIterator[Fhe]:
    settings = fhe_settings(tmp, evaluator=evaluator)
    server = await start_server(fhe_server.DEFINITION, server_config(tmp, pki, RULES, settings))
    target = f"127.0.0.1:{server.port}"
    slow = 600.0  # the torch evaluator on two shared CPU cores takes minutes where a GPU takes milliseconds
    async with secure_channel(target, identity(pki, "alice"), timeout_seconds=slow, peer=spiffe("server")) as alice, \
            secure_channel(target, identity(pki, "bob"), timeout_seconds=slow, peer=spiffe("server")) as bob:
        yield Fhe(server, fhe_pb2_grpc.FHEInferenceStub(alice), fhe_pb2_grpc.FHEInferenceStub(bob), tmp)


@pytest.fixture
async def torch_fhe(start_server, tmp_path: Path, pki: DevPki) -> AsyncIterator[Fhe]:  # type: ignore[no-untyped-def]
    async for fhe in _serve(start_server, tmp_path, pki, {"backend": "torch", "device": "auto"}):
        yield fhe


@pytest.mark.parametrize("name", ["linear", "logistic-3"])
async def test_torch_backend_serves_inference_that_decrypts_to_the_model(torch_fhe: Fhe, name: str) -> None:
    keys = await keys_for(torch_fhe.bob, name)
    session = await register_keys(torch_fhe.bob, keys)
    raw = np.random.default_rng(5).uniform(-1, 1, (3, 6))
    scores = await infer(torch_fhe.bob, session.name, keys, raw)
    expected = load_model(name, small_model_files()[name]).predict(raw)
    assert np.max(np.abs(scores - expected)) < keys.model.tolerance
    ciphertext = keys.encrypt(keys.preprocess(raw))

    async def requests() -> AsyncIterator[pb.InferRequest]:
        yield pb.InferRequest(start=pb.InferStart(session=session.name))
        yield pb.InferRequest(input=pb.InferInput(input_id=0, sample_count=3, ciphertexts=[
            pb.CiphertextInfo(size_bytes=len(ciphertext))]))
        for offset in range(0, len(ciphertext), MAX_CHUNK_BYTES):
            yield pb.InferRequest(chunk=pb.CiphertextChunk(input_id=0, offset=offset,
                                                           data=ciphertext[offset:offset + MAX_CHUNK_BYTES]))

    headers = [r.output async for r in torch_fhe.bob.Infer(requests()) if r.WhichOneof("payload") == "output"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    assert [h.evaluator for h in headers] == [f"torch-{device}"]
    outcomes = [outcome for op, _, outcome, _ in torch_fhe.audit() if op == "Infer"]
    assert outcomes == ["SUCCESS", "SUCCESS"]


async def test_session_over_the_device_memory_bound_is_refused(start_server, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                               pki: DevPki) -> None:
    async for fhe in _serve(start_server, tmp_path, pki, {"backend": "torch", "device": "cpu",
                                                          "memory_bytes_per_session": 1 << 20}):
        keys = await keys_for(fhe.bob, "logistic-3")
        session = await register_keys(fhe.bob, keys)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await infer(fhe.bob, session.name, keys, np.zeros((1, 6)))
        error = read_error(caught.value)
        assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED and error.reason == "DEVICE_MEMORY_EXHAUSTED"
        assert "allowed per session" in error.message
        stored = (await fhe.bob.GetSession(pb.GetSessionRequest(name=session.name))).session
        assert stored.inference_count == 0
        assert [(op, outcome, json.loads(d)["sample_count"]) for op, _, outcome, d in fhe.audit() if op == "Infer"] \
            == [("Infer", "FAILURE", "1")]


def test_settings_refuse_an_unknown_backend(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from privmesh.fhe.settings import FheSettings

    with pytest.raises(ValidationError, match="backend"):
        FheSettings(**fhe_settings(tmp_path, evaluator={"backend": "cuda-magic"}))


async def test_torch_backend_runs_jobs_on_the_same_path(torch_fhe: Fhe) -> None:
    """An asynchronous job goes through the same evaluation workers: on the torch evaluator (CUDA where visible)
    its outputs decrypt to the model and say which evaluator computed them."""
    keys = await keys_for(torch_fhe.bob, "linear")
    session = await register_keys(torch_fhe.bob, keys)
    raw = np.random.default_rng(6).uniform(-1, 1, (3, 6))
    scores = await infer_job(torch_fhe.bob, session.name, keys, raw, progress=False, poll_seconds=0.2)
    expected = load_model("linear", small_model_files()["linear"]).predict(raw)
    assert np.max(np.abs(scores - expected)) < keys.model.tolerance
    [job] = (await torch_fhe.bob.ListJobs(pb.ListJobsRequest())).jobs
    replies = [r async for r in torch_fhe.bob.GetJobResult(pb.GetJobResultRequest(name=job.name))]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    assert [r.output.evaluator for r in replies if r.WhichOneof("payload") == "output"] == [f"torch-{device}"]
