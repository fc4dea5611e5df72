"""Fixtures: a key broker (local backend) over real mTLS on loopback, with clients for alice and bob."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from privmesh.keybroker import server as keybroker_server
from privmesh.keybroker.v1 import keybroker_pb2_grpc
from privmesh.runtime.client import secure_channel
from privmesh.runtime.pki import DevPki
from privmesh.runtime.server import MeshServer
from privmesh.sdk.keybroker.client import SERVICES, KeyBrokerClient
from tests.conftest import identity, server_config, spiffe
from tests.keybroker.kms_stand_in import KmsStandIn, serve

SERVICE = "privmesh.keybroker.v1.KeyBroker"
RULES = [
    {"name": "clients", "principals": [spiffe("alice"), spiffe("bob")], "methods": [f"{SERVICE}/*"]},
    {"name": "auditor", "principals": [spiffe("auditor")], "methods": ["privmesh.common.v1.AuditLog/*"]},
]
ALICE, BOB = spiffe("alice"), spiffe("bob")


def broker_settings(tmp: Path, **overrides: Any) -> dict[str, Any]:
    settings = {"database": f"sqlite:///{tmp / 'keybroker.db'}", "keystore_file": str(tmp / "keystore.bin"),
                "root_key_file": str(tmp / "root-key.bin"), "min_deletion_waiting_seconds": 0}
    settings.update(overrides)
    return settings


@dataclass
class Broker:
    server: MeshServer
    alice: KeyBrokerClient
    bob: KeyBrokerClient
    stub: keybroker_pb2_grpc.KeyBrokerStub  # alice's
    bob_stub: keybroker_pb2_grpc.KeyBrokerStub
    tmp: Path

    def audit(self) -> list[tuple[str, str, str, str, dict[str, str]]]:
        """(principal, operation, resource, outcome, details) of every audit entry, in order."""
        with sqlite3.connect(self.tmp / "audit.db") as conn:
            rows = conn.execute("SELECT principal, operation, resource, outcome, details FROM audit_entries "
                                "ORDER BY sequence").fetchall()
        return [(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]

    def rows(self, table: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.tmp / "keybroker.db") as conn:
            return conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()


@pytest.fixture
async def start_broker(start_server: Callable[..., Any], pki: DevPki) -> AsyncIterator[Callable[..., Any]]:
    channels = []

    async def start(tmp: Path, **settings: Any) -> Broker:
        server = await start_server(keybroker_server.DEFINITION,
                                    server_config(tmp, pki, RULES, broker_settings(tmp, **settings)))
        target = f"127.0.0.1:{server.port}"
        alice = secure_channel(target, identity(pki, "alice"), SERVICES, peer=spiffe("server"))
        bob = secure_channel(target, identity(pki, "bob"), SERVICES, peer=spiffe("server"))
        channels.extend([alice, bob])
        return Broker(server, KeyBrokerClient(alice), KeyBrokerClient(bob), keybroker_pb2_grpc.KeyBrokerStub(alice),
                      keybroker_pb2_grpc.KeyBrokerStub(bob), tmp)

    yield start
    for channel in channels:
        await channel.close()


@pytest.fixture
async def broker(start_broker: Callable[..., Any], tmp_path: Path) -> Broker:
    return await start_broker(tmp_path)


@pytest.fixture(scope="module")
def kms_stand_in() -> Iterator[tuple[str, KmsStandIn]]:
    """moto's KMS over HTTP on loopback, recording each request, with KMS's Recipient (kms_stand_in.py)."""
    yield from serve()


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
