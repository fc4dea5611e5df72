"""Key metadata and policies on PostgreSQL (the production store) and across a restart on SQLite; the keystore
opens only under its root key, which may come from an environment variable."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest

from privmesh.keybroker.keystore import Keystore, KeystoreError, load_root_key
from privmesh.keybroker.policy import ADMIN_OPERATIONS
from privmesh.keybroker.v1 import keybroker_pb2 as pb
from privmesh.sdk.keybroker.client import CRYPTO_OPERATIONS, allow
from tests.keybroker.conftest import ALICE

POLICY = pb.KeyPolicy(statements=[allow([ALICE], [*ADMIN_OPERATIONS, *CRYPTO_OPERATIONS])])


@pytest.mark.postgres
async def test_keys_and_policies_live_in_postgresql(start_broker: Any, tmp_path: Path, postgres_db: str) -> None:
    import psycopg

    broker = await start_broker(tmp_path, database=postgres_db)
    key = await broker.alice.create_key(alias="pg", policy=POLICY)
    plaintext, wrapped, _ = await broker.alice.generate_data_key("aliases/pg", {"a": "b"})
    await broker.alice.rotate_key(key.name)
    assert await broker.alice.decrypt(wrapped, {"a": "b"}) == plaintext
    with psycopg.connect(postgres_db) as conn:
        assert conn.execute("SELECT alias, primary_version FROM keybroker_keys").fetchall() == [("pg", 2)]
        assert conn.execute("SELECT count(*) FROM keybroker_versions").fetchone() == (2,)
        assert conn.execute("SELECT count(*) FROM keybroker_policies").fetchone() == (1,)


async def test_state_survives_a_restart_and_the_root_key_can_come_from_the_environment(
        start_broker: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = os.urandom(32)
    monkeypatch.setenv("KB_ROOT_KEY", base64.b64encode(root).decode())
    first = await start_broker(tmp_path, root_key_env="KB_ROOT_KEY")
    key = await first.alice.create_key(policy=POLICY)
    plaintext, wrapped, _ = await first.alice.generate_data_key(key.name)
    await first.server.stop(grace=0)
    second = await start_broker(tmp_path, root_key_env="KB_ROOT_KEY")
    assert await second.alice.decrypt(wrapped) == plaintext
    assert not (tmp_path / "root-key.bin").exists()
    with pytest.raises(KeystoreError):
        Keystore(tmp_path / "keystore.bin", os.urandom(32))
    monkeypatch.setenv("KB_BAD", "not base64!")
    with pytest.raises(KeystoreError):
        load_root_key(None, "KB_BAD")
