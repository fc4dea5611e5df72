"""A production-parameter model (HEStd_128_classic, ring 2^14) end to end on a server that refuses test
models, with the benchmark's shape: 32 features, 256 samples per ciphertext."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest

from privmesh.fhe import server as fhe_server
from privmesh.fhe.client import ClientKeys, infer, register_keys
from privmesh.fhe.model import load_model, model_file
from privmesh.fhe.v1 import fhe_pb2 as pb
from privmesh.fhe.v1 import fhe_pb2_grpc
from privmesh.runtime.client import secure_channel
from privmesh.runtime.errors import read_error
from privmesh.runtime.pki import DevPki
from tests.conftest import identity, server_config, spiffe
from tests.fhe.conftest import RULES


@pytest.mark.slow
async def test_production_logistic_regression_at_128_bit_security(start_server, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                  pki: DevPki) -> None:
    weights = np.random.default_rng(11).normal(0, 0.3, 32)
    data = model_file("logistic_regression", weights=weights, bias=-0.1, sigmoid={"degree": 7, "interval": [-8, 8]})
    (tmp_path / "risk.json").write_bytes(data)
    settings = {"database": f"sqlite:///{tmp_path / 'fhe.db'}", "key_dir": str(tmp_path / "keys"),
                "model_files": [str(tmp_path / "risk.json")]}
    server = await start_server(fhe_server.DEFINITION, server_config(tmp_path, pki, RULES, settings))
    async with secure_channel(f"127.0.0.1:{server.port}", identity(pki, "bob"), peer=spiffe("server")) as channel:
        stub = fhe_pb2_grpc.FHEInferenceStub(channel)
        model = (await stub.GetModel(pb.GetModelRequest(name="models/risk"))).model
        assert model.parameters.security_level == pb.SECURITY_LEVEL_HESTD_128_CLASSIC
        assert model.parameters.ring_dimension == 16384 and model.input_packing.samples_per_ciphertext == 256
        keys = ClientKeys.generate(model)
        session = await register_keys(stub, keys)
        assert sum(p.size_bytes for p in session.key_parts) > 4 * 1024 * 1024  # really chunked
        raw = np.random.default_rng(12).uniform(-1, 1, (256, 32))
        scores = await infer(stub, session.name, keys, raw)
        expected = load_model("risk", data).predict(raw)
        assert np.max(np.abs(scores - expected)) < model.tolerance and np.ptp(expected) > 0.1
    async with secure_channel(f"127.0.0.1:{server.port}", identity(pki, "alice"), peer=spiffe("server")) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:  # a production server refuses insecure models
            await fhe_pb2_grpc.FHEInferenceStub(channel).CreateModel(pb.CreateModelRequest(
                model_id="toy", model_file=model_file("linear_regression", weights=[1.0], security="HEStd_NotSet")))
        error = read_error(caught.value)
        assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "TEST_MODELS_DISABLED")
