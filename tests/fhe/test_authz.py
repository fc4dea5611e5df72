"""fhe-inference authorization by model (issue 25): GetSession, DeleteSession and Infer check the session's model
against the policy, so a rule limited to other models refuses a session the caller already holds."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import grpc
import numpy as np
import pytest

from privmesh.fhe import server as fhe_server
from privmesh.fhe.client import infer, register_keys
from privmesh.fhe.v1 import fhe_pb2 as pb
from privmesh.fhe.v1 import fhe_pb2_grpc
from privmesh.runtime.client import secure_channel
from privmesh.runtime.errors import read_error
from privmesh.runtime.pki import DevPki
from tests.conftest import identity, server_config, spiffe
from tests.fhe.conftest import SERVICE, fhe_settings, keys_for

pytestmark = pytest.mark.insecure_params
SESSION_METHODS = [f"{SERVICE}/GetSession", f"{SERVICE}/DeleteSession", f"{SERVICE}/Infer"]
RULES = [
    {"name": "keys-for-any-model", "principals": [spiffe("bob")],
     "methods": [f"{SERVICE}/GetModel", f"{SERVICE}/RegisterKeys"]},
    {"name": "sessions-of-one-model", "principals": [spiffe("bob")], "methods": SESSION_METHODS,
     "resources": ["models/logistic-3"]},
]


async def test_session_methods_check_the_sessions_model(start_server, tmp_path: Path, pki: DevPki) -> None:  # type: ignore[no-untyped-def]
    server = await start_server(fhe_server.DEFINITION, server_config(tmp_path, pki, RULES, fhe_settings(tmp_path)))
    async with secure_channel(f"127.0.0.1:{server.port}", identity(pki, "bob"), peer=spiffe("server")) as channel:
        bob = fhe_pb2_grpc.FHEInferenceStub(channel)
        keys = await keys_for(bob, "linear")
        session = await register_keys(bob, keys)  # allowed: RegisterKeys covers every model
        raw = np.random.default_rng(1).uniform(-1, 1, (2, 6))
        for call in (bob.GetSession(pb.GetSessionRequest(name=session.name)),
                     bob.DeleteSession(pb.DeleteSessionRequest(name=session.name)),
                     infer(bob, session.name, keys, raw)):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            error = read_error(caught.value)
            assert error.code == grpc.StatusCode.PERMISSION_DENIED and "models/linear" in error.message
        kept = await register_keys(bob, await keys_for(bob, "logistic-3"))
        assert (await bob.GetSession(pb.GetSessionRequest(name=kept.name))).session.name == kept.name
    with sqlite3.connect(tmp_path / "fhe.db") as conn:  # the refused DeleteSession deleted nothing
        assert sorted(r[0] for r in conn.execute("SELECT session_id FROM fhe_sessions")) == sorted(
            s.split("/")[1] for s in (session.name, kept.name))
    with sqlite3.connect(tmp_path / "audit.db") as conn:  # the refusals are audited, nothing was done
        rows = conn.execute("SELECT operation, outcome FROM audit_entries").fetchall()
    assert sorted(r for r in rows if r[0] in ("GetSession", "Infer", "DeleteSession")) == [
        ("DeleteSession", "DENIED"), ("GetSession", "DENIED"), ("Infer", "DENIED")]
