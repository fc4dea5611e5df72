"""Shared fixtures: a development PKI, in-process mesh servers over real mTLS on loopback, PostgreSQL."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from privmesh.runtime.client import ClientIdentity
from privmesh.runtime.config import load_config
from privmesh.runtime.pki import DevPki
from privmesh.runtime.ports import free_loopback_port
from privmesh.runtime.server import MeshServer, ServiceDefinition

CLIENTS = ("alice", "bob", "auditor")


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    pki = DevPki(tmp_path_factory.mktemp("pki"))
    pki.init()
    for name in ("server", *CLIENTS):
        pki.issue(name)
    return pki


def identity(pki: DevPki, name: str) -> ClientIdentity:
    bundle = pki.bundle(name)
    return ClientIdentity(bundle.ca_file, bundle.cert_file, bundle.key_file)


def spiffe(name: str) -> str:
    return f"spiffe://privmesh.local/ns/privmesh/sa/{name}"


def write_policy(path: Path, rules: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({"rules": rules}))
    return path


def server_config(tmp: Path, pki: DevPki, rules: list[dict[str, Any]], service: dict[str, Any] | None = None,
                  audit_database: str | None = None, **server: Any) -> Path:
    """Writes a complete config file for an in-process server and returns its path."""
    bundle = pki.bundle("server")
    data = {
        "server": {
            "listen": "127.0.0.1:0",
            "tls": {"ca_file": str(bundle.ca_file), "cert_file": str(bundle.cert_file),
                    "key_file": str(bundle.key_file)},
            "authz_policy": str(write_policy(tmp / "policy.yaml", rules)),
            "audit": {"database": audit_database or f"sqlite:///{tmp / 'audit.db'}",
                      "signing_key_file": str(tmp / "audit-signing.pem"), "checkpoint_every": 5},
            "metrics": {"enabled": True, "port": 0},
            "state_dir": str(tmp),
            **server,
        },
        "service": service or {},
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
async def start_server() -> AsyncIterator[Callable[..., Any]]:
    """Starts MeshServers for a test and stops them afterwards."""
    started: list[MeshServer] = []

    async def start(definition: ServiceDefinition, config_path: Path, **kwargs: Any) -> MeshServer:
        config, settings = load_config(config_path, definition.settings_model, environ={})
        server = MeshServer(definition, config, settings, **kwargs)
        await server.start()
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        await server.stop(grace=0)



def _postgres_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return candidates[-1].parent if candidates else None


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server on loopback, run as an unprivileged user (it refuses to run as root).

    Its files live in a directory of their own under the system temp dir, not under pytest's: every pytest
    session that starts resets /tmp/pytest-of-<user> to mode 0700, which locked a running server out of its
    own data directory whenever two sessions overlapped."""
    bindir = _postgres_bin()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed; the test set-up (scripts/dev/test.sh) installs it")
        pytest.skip("PostgreSQL binaries not found (scripts/dev/test.sh installs them)")
    base = Path(tempfile.mkdtemp(prefix="privmesh-postgres-"))
    data, sockets = base / "data", base / "run"
    sockets.mkdir()
    port = free_loopback_port()
    prefix: list[str] = []
    if os.geteuid() == 0:
        user = "postgres"
        shutil.chown(base, user)
        shutil.chown(sockets, user)
        prefix = ["runuser", "-u", user, "--"]
    for command in ([str(bindir / "initdb"), "-D", str(data), "-U", "privmesh", "--auth=trust", "--no-sync",
                     "-E", "UTF8"],
                    [str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(base / "log"), "-o",
                     f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off", "start"]):
        done = subprocess.run([*prefix, *command], capture_output=True, text=True)
        if done.returncode != 0:  # say why: a bare CalledProcessError hid it in CI once (initdb under load)
            pytest.fail(f"{Path(command[0]).name} exited {done.returncode}: {done.stdout[-2000:]}{done.stderr[-2000:]}")
    try:
        deadline = time.monotonic() + 30
        url = f"postgresql://privmesh@127.0.0.1:{port}/postgres"
        import psycopg

        while True:
            try:
                psycopg.connect(url).close()
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield url
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres_db(postgres_url: str) -> Iterator[str]:
    """A fresh database per test on the shared server."""
    import uuid

    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield postgres_url.rsplit("/", 1)[0] + "/" + name


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc)


@pytest.fixture
def moto_s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Any]]:
    """moto's S3 server on loopback (over HTTP, as a real endpoint is reached) and a boto3 client for it."""
    import boto3
    from moto.server import ThreadedMotoServer

    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    yield endpoint, boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    server.stop()


@pytest.fixture(scope="module")
def moto_server() -> Iterator[str]:
    """One moto server for a module (every AWS service it emulates on one loopback port, reached over HTTP as an
    AWS endpoint is), with test credentials in the environment; its endpoint URL."""
    from moto.server import ThreadedMotoServer

    credentials = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                   "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {name: os.environ.get(name) for name in credentials}
    os.environ.update(credentials)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
