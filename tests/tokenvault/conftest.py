"""Fixtures: a real key broker and a token vault that takes its data keys from it, both over real mTLS on
loopback. The vault's identity (the test PKI's "server") is allowed to use the broker's key by its policy."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.duration_pb2 import Duration

from privmesh.keybroker import server as keybroker_server
from privmesh.keybroker.policy import ADMIN_OPERATIONS
from privmesh.keybroker.v1 import keybroker_pb2 as kb
from privmesh.mesh.local import check_health
from privmesh.runtime.client import secure_channel
from privmesh.runtime.db import Database
from privmesh.runtime.pki import DevPki
from privmesh.runtime.ports import free_loopback_port
from privmesh.runtime.server import MeshServer
from privmesh.sdk.keybroker.client import SERVICES as KB_SERVICES
from privmesh.sdk.keybroker.client import KeyBrokerClient, allow
from privmesh.tokenvault import server as tokenvault_server
from privmesh.tokenvault.v1 import tokenvault_pb2 as pb
from privmesh.tokenvault.v1 import tokenvault_pb2_grpc
from tests.conftest import identity, server_config, spiffe

TV = "privmesh.tokenvault.v1.TokenVault"
KB = "privmesh.keybroker.v1.KeyBroker"
TV_RULES = [
    {"name": "admin", "principals": [spiffe("alice")], "methods": [f"{TV}/*"]},
    {"name": "admin-plaintext", "principals": [spiffe("alice")], "methods": [f"{TV}/Detokenize"],
     "resources": ["tenants/*/fields/*:plaintext"]},
    {"name": "analyst", "principals": [spiffe("bob")], "methods": [f"{TV}/Detokenize", f"{TV}/Tokenize"],
     "resources": ["tenants/acme/fields/*"]},
    {"name": "auditor", "principals": [spiffe("auditor")], "methods": ["privmesh.common.v1.AuditLog/*"]},
]
KB_RULES = [
    {"name": "admin", "principals": [spiffe("alice")], "methods": [f"{KB}/*"]},
    {"name": "vault", "principals": [spiffe("server")], "methods": [f"{KB}/*"]},
]
VAULT_OPERATIONS = (kb.KEY_OPERATION_GENERATE_DATA_KEY, kb.KEY_OPERATION_DECRYPT, kb.KEY_OPERATION_RE_ENCRYPT_FROM,
                    kb.KEY_OPERATION_RE_ENCRYPT_TO, kb.KEY_OPERATION_ROTATE)
KEY = "aliases/vault"
TENANT = "tenants/acme"


def key_policy(caching: bool = True) -> kb.KeyPolicy:
    return kb.KeyPolicy(statements=[allow([spiffe("alice")], ADMIN_OPERATIONS, "admin"),
                                    allow([spiffe("server")], VAULT_OPERATIONS, "token-vault")])


SERVICES = [pb.DESCRIPTOR.services_by_name["TokenVault"]]


@dataclass
class VaultEnv:
    vault: MeshServer
    broker: MeshServer
    alice: tokenvault_pb2_grpc.TokenVaultStub
    bob: tokenvault_pb2_grpc.TokenVaultStub
    keys: KeyBrokerClient
    tmp: Path
    database: str
    vault_keys: KeyBrokerClient  # key-broker as the vault's own identity (the only one its subject KEKs allow)

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        db = Database(self.database)
        try:
            return db.read(sql, params)
        finally:
            db.close()

    def count(self, table: str = "tv_entries") -> int:
        return int(self.rows(f"SELECT COUNT(*) FROM {table}")[0][0])

    def audit(self) -> list[tuple[str, str, str, str, dict[str, str]]]:
        """(principal, operation, resource, outcome, details) of the vault's audit entries."""
        with sqlite3.connect(self.tmp / "tv" / "audit.db") as conn:
            rows = conn.execute("SELECT principal, operation, resource, outcome, details FROM audit_entries "
                                "ORDER BY sequence").fetchall()
        return [(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]

    def audit_text(self) -> str:
        with sqlite3.connect(self.tmp / "tv" / "audit.db") as conn:
            return "\n".join(str(r) for r in conn.execute("SELECT * FROM audit_entries").fetchall())


def broker_settings(tmp: Path) -> dict[str, Any]:
    return {"database": f"sqlite:///{tmp / 'keybroker.db'}", "keystore_file": str(tmp / "keystore.bin"),
            "root_key_file": str(tmp / "root-key.bin"), "min_deletion_waiting_seconds": 0}


def workdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


async def start_broker(start_server: Callable[..., Any], pki: DevPki, tmp: Path) -> MeshServer:
    return await start_server(keybroker_server.DEFINITION,
                              server_config(workdir(tmp), pki, KB_RULES, broker_settings(tmp)))


async def create_key(keys: KeyBrokerClient, alias: str = "vault", caching: bool = True) -> kb.Key:
    limits = kb.DataKeyCaching(max_age=Duration(seconds=300), max_messages=100_000) if caching else None
    return await keys.create_key(alias=alias, policy=key_policy(), caching=limits)


def vault_settings(tmp: Path, broker_port: int, database: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"database": database or f"sqlite:///{tmp / 'vault.db'}",
            "key_broker_target": f"127.0.0.1:{broker_port}", "key_broker_identity": spiffe("server"), **extra}


@pytest.fixture
async def start_vault(start_server: Callable[..., Any], pki: DevPki,
                      tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    channels = []

    async def start(database: str | None = None, caching: bool = True, **extra: Any) -> VaultEnv:
        broker = await start_broker(start_server, pki, tmp_path / "kb")
        kb_channel = secure_channel(f"127.0.0.1:{broker.port}", identity(pki, "alice"), KB_SERVICES,
                                    peer=spiffe("server"))
        channels.append(kb_channel)
        keys = KeyBrokerClient(kb_channel)
        await create_key(keys, caching=caching)
        tv_tmp = workdir(tmp_path / "tv")
        settings = vault_settings(tv_tmp, broker.port, database, **extra)
        vault = await start_server(tokenvault_server.DEFINITION, server_config(tv_tmp, pki, TV_RULES, settings))
        alice = secure_channel(f"127.0.0.1:{vault.port}", identity(pki, "alice"), SERVICES, peer=spiffe("server"))
        bob = secure_channel(f"127.0.0.1:{vault.port}", identity(pki, "bob"), SERVICES, peer=spiffe("server"))
        as_vault = secure_channel(f"127.0.0.1:{broker.port}", identity(pki, "server"), KB_SERVICES,
                                  peer=spiffe("server"))
        channels.extend([alice, bob, as_vault])
        return VaultEnv(vault, broker, tokenvault_pb2_grpc.TokenVaultStub(alice),
                        tokenvault_pb2_grpc.TokenVaultStub(bob), keys, tmp_path, settings["database"],
                        KeyBrokerClient(as_vault))

    yield start
    for channel in channels:
        await channel.close()


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A vault database shared by several vaults, on each engine."""
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_db"))
    return f"sqlite:///{tmp_path / 'shared-vault.db'}"


@pytest.fixture
async def another_vault(start_server: Callable[..., Any], pki: DevPki,
                        tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Starts one more in-process vault beside a VaultEnv's, with the same key broker: (server, alice's stub)."""
    channels = []

    async def start(env: VaultEnv, database: str, **extra: Any) -> tokenvault_pb2_grpc.TokenVaultStub:
        directory = workdir(tmp_path / f"tv-{len(channels) + 1}")
        config = server_config(directory, pki, TV_RULES, vault_settings(directory, env.broker.port, database, **extra))
        vault = await start_server(tokenvault_server.DEFINITION, config)
        channel = secure_channel(f"127.0.0.1:{vault.port}", identity(pki, "alice"), SERVICES, peer=spiffe("server"))
        channels.append(channel)
        return tokenvault_pb2_grpc.TokenVaultStub(channel)

    yield start
    for channel in channels:
        await channel.close()


@pytest.fixture
def vault_processes(tmp_path: Path, pki: DevPki) -> Iterator[Callable[..., list[subprocess.Popen[bytes]]]]:
    """Starts vault server processes on one database (`targets` gets their addresses); stops them after."""
    processes: list[subprocess.Popen[bytes]] = []

    def spawn(broker_port: int, database: str, count: int, targets: list[str],
              **extra: Any) -> list[subprocess.Popen[bytes]]:
        started = []
        for _ in range(count):
            directory = workdir(tmp_path / f"vault-{len(processes)}")
            port = free_loopback_port()
            settings = vault_settings(directory, broker_port, database, **extra)
            config = server_config(directory, pki, TV_RULES, settings, listen=f"127.0.0.1:{port}")
            log = (directory / "log").open("wb")
            process = subprocess.Popen([sys.executable, "-m", "privmesh.tokenvault", "--config", str(config)],
                                       stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
            processes.append(process)
            started.append(process)
            targets.append(f"127.0.0.1:{port}")
        return started

    yield spawn
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        process.wait(timeout=20)


async def healthy(target: str, pki: DevPki) -> None:
    for _ in range(300):
        if await check_health(target, identity(pki, "alice"), "privmesh.tokenvault.v1.TokenVault",
                              peer=spiffe("server")) == "SERVING":
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"vault process at {target} did not start")


@pytest.fixture
async def env(start_vault: Callable[..., Any]) -> VaultEnv:
    return await start_vault()


def reader_policy(*rules: tuple[list[str], int]) -> pb.DetokenizePolicy:
    return pb.DetokenizePolicy(rules=[pb.DetokenizeRule(principals=p, view=v) for p, v in rules])


def field(profile: pb.TokenProfile, **kwargs: Any) -> pb.Field:
    kwargs.setdefault("detokenize_policy", reader_policy(([spiffe("alice")], pb.DETOKENIZE_VIEW_VALUE),
                                                         ([spiffe("bob")], pb.DETOKENIZE_VIEW_MASKED)))
    return pb.Field(profile=profile, key=KEY, **kwargs)


async def create_field(stub: tokenvault_pb2_grpc.TokenVaultStub, field_id: str, profile: pb.TokenProfile,
                       **kwargs: Any) -> pb.Field:
    reply = await stub.CreateField(pb.CreateFieldRequest(parent=TENANT, field_id=field_id,
                                                         field=field(profile, **kwargs)))
    return reply.field


async def tokenize(stub: tokenvault_pb2_grpc.TokenVaultStub, *items: tuple[str, str] | pb.TokenizeItem,
                   request_id: str = "") -> list[str]:
    built = [i if isinstance(i, pb.TokenizeItem) else pb.TokenizeItem(field=i[0], value=i[1]) for i in items]
    reply = await stub.Tokenize(pb.TokenizeRequest(parent=TENANT, items=built, request_id=request_id))
    return [r.token for r in reply.results]


async def detokenize(stub: tokenvault_pb2_grpc.TokenVaultStub, *refs: tuple[str, str],
                     view: int = pb.DETOKENIZE_VIEW_UNSPECIFIED, purpose: str = "test") -> list[str]:
    reply = await stub.Detokenize(pb.DetokenizeRequest(parent=TENANT, items=[pb.TokenRef(field=f, token=t)
                                                                             for f, t in refs],
                                                       view=view, purpose=purpose))
    return [r.value for r in reply.results]
