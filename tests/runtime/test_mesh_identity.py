"""Mesh identity both ways: a client reaches only the SPIFFE ID it pins, a server admits only its trust domain."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import grpc
import pytest

from privmesh.runtime import echo
from privmesh.runtime.client import secure_channel
from privmesh.runtime.config import ConfigError
from privmesh.runtime.errors import read_error
from privmesh.runtime.pki import DevPki
from tests.conftest import identity, server_config, spiffe

ECHO = "/privmesh.testing.v1.Echo/"
RULES = [{"name": "all", "principals": [spiffe("alice"), "spiffe://evil.example/ns/privmesh/sa/alice"],
          "methods": ["privmesh.testing.v1.Echo/*"]}]


def same_ca(pki: DevPki, directory: Path, trust_domain: str = "privmesh.local") -> DevPki:
    """Another PKI directory with the mesh's own CA (so its leaves are valid mesh certificates)."""
    other = DevPki(directory, trust_domain)
    directory.mkdir()
    for name in ("ca.crt", "ca.key"):
        (directory / name).write_bytes((pki.directory / name).read_bytes())
    return other


async def start_as(start_server: Any, tmp_path: Path, pki: DevPki, name: str, **server: Any) -> Any:
    bundle = pki.bundle(name)
    tls = {"ca_file": str(bundle.ca_file), "cert_file": str(bundle.cert_file), "key_file": str(bundle.key_file)}
    config = server_config(tmp_path, pki, RULES, {"database": f"sqlite:///{tmp_path / 'echo.db'}"}, tls=tls, **server)
    return await start_server(echo.DEFINITION, config)


async def echo_call(port: int, client: Any, peer: str) -> bytes:
    async with secure_channel(f"127.0.0.1:{port}", client, timeout_seconds=5, peer=peer) as channel:
        return bytes(await channel.unary_unary(ECHO + "Echo")(b"hi"))


async def test_client_refuses_an_impostor_with_another_mesh_identity(start_server, pki: DevPki,
                                                                      tmp_path: Path) -> None:
    # A valid certificate from the mesh CA, but alice's: it must not pass for the service "server".
    impostor = await start_as(start_server, tmp_path, pki, "alice")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await echo_call(impostor.port, identity(pki, "alice"), spiffe("server"))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "Hostname Verification Check failed" in (err.value.details() or "")
    assert await echo_call(impostor.port, identity(pki, "alice"), spiffe("alice")) == b"hi"  # the pin is what failed


async def test_client_refuses_a_server_of_another_trust_domain(start_server, pki: DevPki, tmp_path: Path) -> None:
    foreign = same_ca(pki, tmp_path / "foreign", "evil.example")
    foreign.issue("server")  # same service name and CA, other trust domain
    server = await start_as(start_server, tmp_path, foreign, "server", trust_domain="evil.example")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await echo_call(server.port, identity(pki, "alice"), spiffe("server"))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "Hostname Verification Check failed" in (err.value.details() or "")


async def test_server_refuses_a_peer_of_another_trust_domain(start_server, pki: DevPki, tmp_path: Path) -> None:
    server = await start_as(start_server, tmp_path, pki, "server")
    foreign = same_ca(pki, tmp_path / "foreign", "evil.example")
    foreign.issue("alice")  # signed by the mesh CA, allowed by the policy, but outside privmesh.local
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await echo_call(server.port, identity(foreign, "alice"), spiffe("server"))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    info = read_error(err.value)
    assert info.reason == "FOREIGN_TRUST_DOMAIN"
    assert "spiffe://evil.example/ns/privmesh/sa/alice is outside this service's trust domain" in info.message
    with sqlite3.connect(tmp_path / "audit.db") as conn:  # the refusal is audited with its reason
        [(principal, outcome, details)] = conn.execute("SELECT principal, outcome, details FROM audit_entries")
    assert (principal, outcome) == ("spiffe://evil.example/ns/privmesh/sa/alice", "DENIED")
    assert json.loads(details)["reason"] == "FOREIGN_TRUST_DOMAIN"
    assert await echo_call(server.port, identity(pki, "alice"), spiffe("server")) == b"hi"


async def test_server_whose_certificate_is_outside_its_trust_domain_does_not_start(start_server, pki: DevPki,
                                                                                   tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"outside server\.trust_domain other\.example"):
        await start_as(start_server, tmp_path, pki, "server", trust_domain="other.example")
