"""Fixtures: small test models (HEStd_NotSet, marked `insecure_params`), a running fhe-inference over mTLS, and
client keys. Small rings keep the quick tests fast on two cores; the `slow` test uses production parameters."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from privmesh.fhe import server as fhe_server
from privmesh.fhe.client import ClientKeys
from privmesh.fhe.model import model_file
from privmesh.fhe.v1 import fhe_pb2 as pb
from privmesh.fhe.v1 import fhe_pb2_grpc
from privmesh.runtime.client import secure_channel
from privmesh.runtime.pki import DevPki
from privmesh.runtime.server import MeshServer
from tests.conftest import identity, server_config, spiffe

SERVICE = "privmesh.fhe.v1.FHEInference"
RULES = [
    {"name": "admin", "principals": [spiffe("alice")], "methods": [f"{SERVICE}/*"]},
    {"name": "users", "principals": [spiffe("bob")], "methods": [
        f"{SERVICE}/ListModels", f"{SERVICE}/GetModel", f"{SERVICE}/RegisterKeys", f"{SERVICE}/GetSession",
        f"{SERVICE}/DeleteSession", f"{SERVICE}/Infer", f"{SERVICE}/SubmitJob", f"{SERVICE}/GetJob",
        f"{SERVICE}/ListJobs", f"{SERVICE}/GetJobResult", f"{SERVICE}/CancelJob"]},
    {"name": "auditor", "principals": [spiffe("auditor")], "methods": ["privmesh.common.v1.AuditLog/*"]},
]
TEST = {"security": "HEStd_NotSet", "ring_dimension": 2048}
CRASH_OFFSET = 115  # a byte of a ciphertext's ring parameters: zeroed, OpenFHE divides by zero (SIGFPE)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "insecure_params: uses small rings without a security level (HEStd_NotSet)")


def small_model_files() -> dict[str, bytes]:
    """One model of every kind, with small rings (HEStd_NotSet); the same weights on every call."""
    rng = np.random.default_rng(7)
    return {
        "linear": model_file("linear_regression", weights=rng.normal(0, 1, 6), bias=0.5, **TEST),
        "logistic-3": model_file("logistic_regression", weights=rng.normal(0, 1, 6), bias=-0.2,
                                 sigmoid={"degree": 3, "interval": [-6, 6]}, **TEST),
        "logistic-5": model_file("logistic_regression", weights=rng.normal(0, 1, 6), bias=0.1, **TEST),
        "logistic-7": model_file("logistic_regression", weights=rng.normal(0, 1, 6), bias=0.3,
                                 sigmoid={"degree": 7, "interval": [-8, 8]}, **TEST),
        "mlp": model_file("mlp", layers=[
            {"weights": rng.normal(0, 0.5, (3, 6)).tolist(), "bias": [0.1, -0.1, 0.0], "activation": "square"},
            {"weights": rng.normal(0, 0.5, (2, 3)).tolist(), "bias": [0.0, 0.2],
             "activation": {"function": "tanh", "degree": 3, "interval": [-4, 4]}}], outputs=["a", "b"],
            security="HEStd_NotSet", ring_dimension=4096),
    }


def crashing(ciphertext: bytes) -> bytes:
    """The ciphertext with bytes that kill the OpenFHE process deserializing it (a real crash, every time)."""
    data = bytearray(ciphertext)
    data[CRASH_OFFSET] = 0
    return bytes(data)


@dataclass
class Fhe:
    server: MeshServer
    stub: fhe_pb2_grpc.FHEInferenceStub
    bob: fhe_pb2_grpc.FHEInferenceStub
    tmp: Path

    @property
    def key_dir(self) -> Path:
        return self.tmp / "keys"

    def sessions(self) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.tmp / "fhe.db") as conn:
            return conn.execute("SELECT session_id, owner, inference_count FROM fhe_sessions").fetchall()

    def key_dirs(self) -> list[str]:
        return sorted(p.name for p in self.key_dir.iterdir())

    def audit(self) -> list[tuple[str, str, str, str]]:
        with sqlite3.connect(self.tmp / "audit.db") as conn:
            return conn.execute("SELECT operation, resource, outcome, details FROM audit_entries "
                                "ORDER BY sequence").fetchall()


def fhe_settings(tmp: Path, database: str | None = None, **extra: Any) -> dict[str, Any]:
    models = tmp / "models"
    models.mkdir(exist_ok=True)
    for name, data in small_model_files().items():
        (models / f"{name}.json").write_bytes(data)
    return {"database": database or f"sqlite:///{tmp / 'fhe.db'}", "key_dir": str(tmp / "keys"),
            "model_files": [str(p) for p in sorted(models.glob("*.json"))], "allow_test_models": True, **extra}


@pytest.fixture
async def fhe(start_server, tmp_path: Path, pki: DevPki) -> AsyncIterator[Fhe]:  # type: ignore[no-untyped-def]
    server = await start_server(fhe_server.DEFINITION, server_config(tmp_path, pki, RULES, fhe_settings(tmp_path)))
    target = f"127.0.0.1:{server.port}"
    async with secure_channel(target, identity(pki, "alice"), peer=spiffe("server")) as alice, \
            secure_channel(target, identity(pki, "bob"), peer=spiffe("server")) as bob:
        yield Fhe(server, fhe_pb2_grpc.FHEInferenceStub(alice), fhe_pb2_grpc.FHEInferenceStub(bob), tmp_path)


async def model(stub: fhe_pb2_grpc.FHEInferenceStub, name: str) -> pb.Model:
    return (await stub.GetModel(pb.GetModelRequest(name=f"models/{name}"))).model


async def keys_for(stub: fhe_pb2_grpc.FHEInferenceStub, name: str) -> ClientKeys:
    return ClientKeys.generate(await model(stub, name))
