"""fhe-inference over real mTLS with real OpenFHE: every model kind end to end, sessions, run-time models,
audit of every inference, and the server state's inability to decrypt."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from datetime import timedelta
from pathlib import Path

import grpc
import numpy as np
import openfhe
import pytest

from privmesh.fhe.client import ClientKeys, infer, register_keys
from privmesh.fhe.model import model_file
from privmesh.fhe.v1 import fhe_pb2 as pb
from privmesh.runtime.errors import read_error
from tests.fhe.conftest import Fhe, keys_for, model, small_model_files

pytestmark = pytest.mark.insecure_params

RETRY_ID, PG_RETRY_ID = "9a1e44c0-0000-4000-8000-000000000001", "9a1e44c0-0000-4000-8000-000000000002"


def _raw(count: int, features: int = 6, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (count, features))


async def test_models_publish_parameters_packing_and_no_weights(fhe: Fhe) -> None:
    listed = (await fhe.bob.ListModels(pb.ListModelsRequest())).models
    assert [m.name for m in listed] == ["models/linear", "models/logistic-3", "models/logistic-5",
                                        "models/logistic-7", "models/mlp"]
    logistic = await model(fhe.bob, "logistic-7")
    assert logistic.kind == pb.MODEL_KIND_LOGISTIC_REGRESSION and logistic.logistic_regression.sigmoid.degree == 7
    assert logistic.parameters.security_level == pb.SECURITY_LEVEL_HESTD_NOT_SET
    assert list(logistic.parameters.rotation_indices) == [1, 2, 4]
    assert logistic.input_packing.stride == 8 and logistic.input_packing.samples_per_ciphertext == 128
    assert set(logistic.required_key_parts) == {pb.KEY_PART_KIND_CRYPTO_CONTEXT, pb.KEY_PART_KIND_PUBLIC_KEY,
                                                pb.KEY_PART_KIND_RELINEARIZATION_KEY, pb.KEY_PART_KIND_ROTATION_KEYS}
    linear = await model(fhe.bob, "linear")
    assert pb.KEY_PART_KIND_RELINEARIZATION_KEY not in linear.required_key_parts
    weights = json.loads(small_model_files()["logistic-7"])["weights"]
    assert f"{weights[0]!r}" not in str(logistic)
    only_mlp = await fhe.bob.ListModels(pb.ListModelsRequest(kind=pb.MODEL_KIND_MLP, page_size=1))
    assert [m.name for m in only_mlp.models] == ["models/mlp"]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await fhe.bob.GetModel(pb.GetModelRequest(name="models/nope"))
    error = read_error(caught.value)
    assert error.code == grpc.StatusCode.NOT_FOUND and error.reason == "MODEL_NOT_FOUND"
    assert error.domain == "fhe.privmesh.dev"


@pytest.mark.parametrize("name", ["linear", "logistic-3", "logistic-5", "logistic-7", "mlp"])
async def test_encrypted_inference_matches_plaintext_for_every_model_kind(fhe: Fhe, name: str) -> None:
    from privmesh.fhe.model import load_model

    keys = await keys_for(fhe.bob, name)
    session = await register_keys(fhe.bob, keys)
    raw = _raw(keys.packing.samples_per_ciphertext + 5)  # two inputs on one stream
    scores = await infer(fhe.bob, session.name, keys, raw)
    expected = load_model(name, small_model_files()[name]).predict(raw)
    assert scores.shape == expected.shape
    assert np.max(np.abs(scores - expected)) < keys.model.tolerance
    stored = (await fhe.bob.GetSession(pb.GetSessionRequest(name=session.name))).session
    assert stored.inference_count == 2 and stored.owner.endswith("/sa/bob")
    inferences = [(resource, outcome, json.loads(details)) for op, resource, outcome, details in fhe.audit()
                  if op == "Infer"]
    assert inferences == [(session.name, "SUCCESS", {"model": f"models/{name}", "session": session.name,
                                                     "sample_count": str(c)})
                          for c in (keys.packing.samples_per_ciphertext, 5)]


async def test_session_lifecycle_retry_delete_and_isolation(fhe: Fhe) -> None:
    keys = await keys_for(fhe.bob, "linear")
    session = await register_keys(fhe.bob, keys, ttl=timedelta(minutes=5), request_id=RETRY_ID)
    again = await register_keys(fhe.bob, keys, ttl=timedelta(minutes=5), request_id=RETRY_ID)
    assert again.name == session.name and len(fhe.sessions()) == 1
    assert (session.expire_time.seconds - session.create_time.seconds) == 300
    other = await keys_for(fhe.bob, "linear")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await register_keys(fhe.bob, other, request_id=RETRY_ID)
    assert read_error(caught.value).reason == "REQUEST_ID_CONFLICT" and len(fhe.sessions()) == 1
    for call in (fhe.stub.GetSession(pb.GetSessionRequest(name=session.name)),
                 fhe.stub.DeleteSession(pb.DeleteSessionRequest(name=session.name))):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert read_error(caught.value).reason == "SESSION_NOT_FOUND"  # alice cannot see bob's session
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await infer(fhe.stub, session.name, keys, _raw(2))
    assert read_error(caught.value).code == grpc.StatusCode.NOT_FOUND
    assert fhe.key_dirs() == [".incoming", session.name.split("/")[1]]
    await fhe.bob.DeleteSession(pb.DeleteSessionRequest(name=session.name))
    assert fhe.key_dirs() == [".incoming"] and fhe.sessions() == []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await infer(fhe.bob, session.name, keys, _raw(2))
    assert read_error(caught.value).reason == "SESSION_NOT_FOUND"
    assert ("DeleteSession", session.name, "SUCCESS") in [row[:3] for row in fhe.audit()]


async def test_expired_session_is_refused_and_swept(start_server, tmp_path: Path, pki) -> None:  # type: ignore[no-untyped-def]
    from privmesh.fhe import server as fhe_server
    from privmesh.fhe.v1 import fhe_pb2_grpc
    from privmesh.runtime.client import secure_channel
    from tests.conftest import identity, server_config, spiffe
    from tests.fhe.conftest import RULES, fhe_settings

    settings = fhe_settings(tmp_path, sweep_seconds=0.2)
    server = await start_server(fhe_server.DEFINITION, server_config(tmp_path, pki, RULES, settings))
    async with secure_channel(f"127.0.0.1:{server.port}", identity(pki, "bob"), peer=spiffe("server")) as channel:
        bob = fhe_pb2_grpc.FHEInferenceStub(channel)
        keys = ClientKeys.generate(await model(bob, "linear"))
        session = await register_keys(bob, keys)
        expired = time.time_ns() // 1000 - 1  # as if its TTL (here 3 s) had passed: the sweeper deletes its keys
        with sqlite3.connect(tmp_path / "fhe.db") as conn:  # at once, its row 3 s later (request_id memory)
            conn.execute("UPDATE fhe_sessions SET expire_us = ?, create_us = ?", (expired, expired - 3_000_000))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await bob.GetSession(pb.GetSessionRequest(name=session.name))
        assert read_error(caught.value).reason == "SESSION_EXPIRED"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await infer(bob, session.name, keys, _raw(1))
        assert read_error(caught.value).reason == "SESSION_EXPIRED"

        def swept() -> tuple[list[str], int]:
            with sqlite3.connect(tmp_path / "fhe.db") as conn:
                rows = conn.execute("SELECT COUNT(*) FROM fhe_sessions").fetchone()[0]
            return sorted(p.name for p in (tmp_path / "keys").iterdir()), rows

        for _ in range(150):
            if swept() == ([".incoming"], 0):
                break
            await asyncio.sleep(0.1)
        assert swept() == ([".incoming"], 0)


async def test_runtime_models_create_serve_and_delete(fhe: Fhe) -> None:
    weights = np.array([0.5, -0.25, 1.0])
    created = (await fhe.stub.CreateModel(pb.CreateModelRequest(model_id="fresh", model_file=model_file(
        "linear_regression", weights=weights, bias=0.1, security="HEStd_NotSet",
        features=["a", {"name": "b", "offset": 1.0, "scale": 2.0}, "c"])))).model
    assert created.name == "models/fresh" and created.features[1].scale == 2.0
    keys = ClientKeys.generate(created)
    session = await register_keys(fhe.bob, keys)
    raw = _raw(4, features=3)
    scores = await infer(fhe.bob, session.name, keys, raw)
    scaled = (raw - [0.0, 1.0, 0.0]) / [1.0, 2.0, 1.0]
    assert np.max(np.abs(scores[:, 0] - (scaled @ weights + 0.1))) < created.tolerance
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await fhe.stub.CreateModel(pb.CreateModelRequest(model_id="fresh", model_file=model_file(
            "linear_regression", weights=weights, security="HEStd_NotSet")))
    assert read_error(caught.value).code == grpc.StatusCode.ALREADY_EXISTS
    for bad_id, bad_file, field in (("fresh-2", b"{}", "model_file"), ("Bad!", model_file("linear_regression",
                                    weights=weights, security="HEStd_NotSet"), "model_id")):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await fhe.stub.CreateModel(pb.CreateModelRequest(model_id=bad_id, model_file=bad_file))
        error = read_error(caught.value)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT and error.reason == "MODEL_INVALID"
        assert error.violations[0].field == field
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await fhe.bob.CreateModel(pb.CreateModelRequest(model_id="x", model_file=b"{}"))
    assert read_error(caught.value).code == grpc.StatusCode.PERMISSION_DENIED
    names = [m.name for m in (await fhe.bob.ListModels(pb.ListModelsRequest())).models]
    assert "models/fresh" in names and "models/fresh-2" not in names
    await fhe.stub.DeleteModel(pb.DeleteModelRequest(name="models/fresh"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await infer(fhe.bob, session.name, keys, raw)
    assert read_error(caught.value).reason == "MODEL_NOT_FOUND"
    operations = [(row[0], row[2]) for row in fhe.audit()]
    assert operations.count(("CreateModel", "SUCCESS")) == 1 and operations.count(("DeleteModel", "SUCCESS")) == 1
    assert operations.count(("CreateModel", "DENIED")) == 1  # bob's refusal, audited by the interceptor


async def test_server_state_cannot_decrypt(fhe: Fhe) -> None:
    keys = await keys_for(fhe.bob, "logistic-5")
    session = await register_keys(fhe.bob, keys)
    secret = openfhe.Serialize(keys.key_pair.secretKey, openfhe.BINARY)
    probe = keys.context.Encrypt(keys.key_pair.publicKey, keys.context.MakeCKKSPackedPlaintext([0.25] * 8))
    secret_tail = bytes(secret[-4096:])  # the secret polynomial's coefficients
    state = [p for p in fhe.tmp.rglob("*") if p.is_file()]
    assert any(session.name.split("/")[1] in str(p) for p in state)
    for path in state:
        data = path.read_bytes()
        assert secret_tail not in data, path
        try:
            candidate = openfhe.DeserializePrivateKeyString(data, openfhe.BINARY)
            decrypted = keys.context.Decrypt(candidate, probe)
        except Exception:  # not a private key: the expected outcome
            continue
        decrypted.SetLength(8)
        assert not np.allclose(decrypted.GetRealPackedValue(), 0.25, atol=1e-3), path
    assert not any(f.name in {"secret_key", "private_key"} for f in pb.KeyChunk.DESCRIPTOR.fields)
    assert not [k for k in pb.KeyPartKind.DESCRIPTOR.values_by_name if "SECRET" in k or "PRIVATE" in k]


@pytest.mark.postgres
async def test_sessions_and_runtime_models_on_postgres(start_server, tmp_path: Path, pki,  # type: ignore[no-untyped-def]
                                                       postgres_db: str) -> None:
    from privmesh.fhe import server as fhe_server
    from privmesh.fhe.v1 import fhe_pb2_grpc
    from privmesh.runtime.client import secure_channel
    from tests.conftest import identity, server_config, spiffe
    from tests.fhe.conftest import RULES, fhe_settings

    config = server_config(tmp_path, pki, RULES, fhe_settings(tmp_path, postgres_db))
    server = await start_server(fhe_server.DEFINITION, config)
    async with secure_channel(f"127.0.0.1:{server.port}", identity(pki, "alice"), peer=spiffe("server")) as channel:
        stub = fhe_pb2_grpc.FHEInferenceStub(channel)
        await stub.CreateModel(pb.CreateModelRequest(model_id="pg", model_file=model_file(
            "linear_regression", weights=[1.0, 2.0], bias=0.0, security="HEStd_NotSet")))
        keys = ClientKeys.generate(await model(stub, "pg"))
        session = await register_keys(stub, keys, request_id=PG_RETRY_ID)
        scores = await infer(stub, session.name, keys, np.array([[0.5, 0.25]]))
        assert abs(scores[0, 0] - 1.0) < 1e-3
        assert (await stub.GetSession(pb.GetSessionRequest(name=session.name))).session.inference_count == 1
        assert (await register_keys(stub, keys, request_id=PG_RETRY_ID)).name == session.name
    await server.stop(grace=0)
    restarted = await start_server(fhe_server.DEFINITION, config)  # sessions and run-time models persist
    async with secure_channel(f"127.0.0.1:{restarted.port}", identity(pki, "alice"), peer=spiffe("server")) as channel:
        stub = fhe_pb2_grpc.FHEInferenceStub(channel)
        scores = await infer(stub, session.name, keys, np.array([[1.0, 1.0]]))
        assert abs(scores[0, 0] - 3.0) < 1e-3
