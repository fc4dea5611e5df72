"""Unary RPCs per second through a privmesh server (mTLS, authorization, audit of every call, metrics)
against a bare grpc.aio server with the same payload, measured in the same run.

Each server runs in its own process; the same client load (CONCURRENCY callers for SECONDS) hits both.
Last line: `ratio: <privmesh rps / bare rps>` (goal >= 0.6).

Usage: .venv/bin/python scripts/bench/runtime_rps.py [--seconds 10] [--rounds 5] [--concurrency 32] [--payload 256]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import yaml

METHOD = "/privmesh.testing.v1.Echo/Echo"


async def serve_bare(port_file: Path) -> None:
    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler("privmesh.testing.v1.Echo",
                                                   {"Echo": grpc.unary_unary_rpc_method_handler(echo)})
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await asyncio.to_thread(port_file.write_text, str(port))
    await server.wait_for_termination()


async def serve_mesh(config: Path, port_file: Path) -> None:
    from privmesh.runtime import echo
    from privmesh.runtime.config import load_config
    from privmesh.runtime.server import MeshServer

    server_config, settings = load_config(config, echo.EchoSettings)
    server = MeshServer(echo.DEFINITION, server_config, settings)
    await server.start()
    await asyncio.to_thread(port_file.write_text, str(server.port))
    await server.wait()


def mesh_config(tmp: Path) -> Path:
    from privmesh.runtime.pki import DevPki

    pki = DevPki(tmp / "pki")
    pki.init()
    for name in ("server", "client"):
        pki.issue(name)
    policy = tmp / "policy.yaml"
    policy.write_text(yaml.safe_dump({"rules": [{"name": "bench", "principals": [pki.spiffe_id("client")],
                                                 "methods": ["privmesh.testing.v1.Echo/*"]}]}))
    bundle = pki.bundle("server")
    config = tmp / "config.yaml"
    config.write_text(yaml.safe_dump({
        "server": {"tls": {"ca_file": str(bundle.ca_file), "cert_file": str(bundle.cert_file),
                           "key_file": str(bundle.key_file)},
                   "authz_policy": str(policy),
                   "audit": {"database": f"sqlite:///{tmp / 'audit.db'}", "signing_key_file": str(tmp / "k.pem")},
                   "log": {"level": "WARNING"}},
        "service": {"database": f"sqlite:///{tmp / 'echo.db'}", "audit_every_call": True},
    }))
    return config


def start(args: list[str], port_file: Path) -> tuple[subprocess.Popen[bytes], int]:
    process = subprocess.Popen([sys.executable, __file__, *args, "--port-file", str(port_file)])
    deadline = time.monotonic() + 60
    while not port_file.exists() or not port_file.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"server {args} did not start")
        time.sleep(0.05)
    return process, int(port_file.read_text())


async def load(channel: grpc.aio.Channel, seconds: float, concurrency: int, payload: bytes) -> float:
    call = channel.unary_unary(METHOD)
    for _ in range(20):  # warm-up: connection, handshake, caches
        await call(payload, timeout=10)
    done = 0
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            await call(payload, timeout=10)
            done += 1

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - began)


async def measure(seconds: float, concurrency: int, payload_size: int, rounds: int) -> None:
    """Both servers run at once; short windows alternate between them and the median ratio is reported,
    so drift in the machine's load hits both sides alike."""
    import sqlite3
    import statistics

    from privmesh.runtime.client import ClientIdentity, secure_channel

    payload = bytes(payload_size)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        config = mesh_config(tmp)
        bare, bare_port = start(["--serve", "bare"], tmp / "bare.port")
        mesh, mesh_port = start(["--serve", "mesh", "--config", str(config)], tmp / "mesh.port")
        pki = tmp / "pki"
        identity = ClientIdentity(pki / "ca.crt", pki / "client.crt", pki / "client.key")
        bare_rates, mesh_rates = [], []
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{bare_port}") as plain, \
                    secure_channel(f"127.0.0.1:{mesh_port}", identity) as secure:
                for _ in range(rounds):
                    bare_rates.append(await load(plain, seconds / rounds, concurrency, payload))
                    mesh_rates.append(await load(secure, seconds / rounds, concurrency, payload))
        finally:
            for process in (bare, mesh):
                process.terminate()
                process.wait()
        with sqlite3.connect(tmp / "audit.db") as conn:
            audited = conn.execute("SELECT COUNT(*) FROM audit_entries").fetchone()[0]
    ratios = [m / b for m, b in zip(mesh_rates, bare_rates, strict=True)]
    print(f"payload {payload_size} B, {concurrency} concurrent callers, {rounds} alternating rounds of "
          f"{seconds / rounds:.1f} s per server")
    print(f"bare grpc.aio (insecure):                   median {statistics.median(bare_rates):8.0f} RPC/s  "
          f"{[round(r) for r in bare_rates]}")
    print(f"privmesh (mTLS + authz + audit + metrics):  median {statistics.median(mesh_rates):8.0f} RPC/s  "
          f"{[round(r) for r in mesh_rates]}  ({audited} audit entries written)")
    print(f"per-round ratios: {[round(r, 3) for r in ratios]}")
    print(f"ratio: {statistics.median(ratios):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per server, over all rounds")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--payload", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--serve", choices=["bare", "mesh"], help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve == "bare":
        asyncio.run(serve_bare(args.port_file))
    elif args.serve == "mesh":
        asyncio.run(serve_mesh(args.config, args.port_file))
    else:
        asyncio.run(measure(args.seconds, args.concurrency, args.payload, args.rounds))


if __name__ == "__main__":
    main()
