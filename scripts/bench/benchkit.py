"""What every benchmark needs to measure a service the way its users meet it: a development PKI, a server
configuration whose policy lets the bench client call it, and the service in its own process (so the
load generator does not share its interpreter).

    with serve_in_process("privmesh.keybroker.server:DEFINITION", tmp, ["privmesh.keybroker.v1.KeyBroker/*"],
                          {"database": ...}) as service:
        async with secure_channel(service.target, service.identity, peer=service.peer) as channel: ...

The baseline most RPC benchmarks compare against is `bare_echo()`: a grpc.aio server with no TLS, policy,
audit or metrics that returns its request, loaded by `echo_load` exactly as the service is.

Run as a script it is a server process: `benchkit.py --serve MODULE:ATTR|bare [--config FILE] --port-file FILE`.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import yaml

from privmesh.runtime.client import ClientIdentity
from privmesh.runtime.pki import DevPki

CLIENT = "client"
ECHO_SERVICE = "privmesh.testing.v1.Echo"
ECHO_METHOD = f"/{ECHO_SERVICE}/Echo"


@dataclass(frozen=True)
class RunningService:
    port: int
    pid: int  # the server process, for cpu_seconds()
    identity: ClientIdentity  # the bench client's, allowed the methods given to serve_in_process
    pki: DevPki
    peer: str  # the server's SPIFFE ID, which the bench client pins

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


def write_config(tmp: Path, server_name: str, methods: Sequence[str], service: dict[str, Any]) -> tuple[Path, DevPki]:
    """A PKI with `server_name` and `client`, a policy granting the client `methods`, and the server config."""
    pki = DevPki(tmp / "pki")
    if not (tmp / "pki" / "ca.crt").exists():
        pki.init()
    for name in (server_name, CLIENT):
        pki.issue(name)
    policy = tmp / f"{server_name}-policy.yaml"
    policy.write_text(yaml.safe_dump({"rules": [{"name": "bench", "principals": [pki.spiffe_id(CLIENT)],
                                                 "methods": list(methods)}]}))
    bundle = pki.bundle(server_name)
    config = tmp / f"{server_name}.yaml"
    config.write_text(yaml.safe_dump({
        "server": {"listen": "127.0.0.1:0",
                   "tls": {"ca_file": str(bundle.ca_file), "cert_file": str(bundle.cert_file),
                           "key_file": str(bundle.key_file)},
                   "authz_policy": str(policy), "log": {"level": "WARNING"}, "metrics": {"enabled": True, "port": 0},
                   "audit": {"database": f"sqlite:///{tmp / f'{server_name}-audit.db'}",
                             "signing_key_file": str(tmp / f"{server_name}-audit.pem")}},
        "service": service,
    }))
    return config, pki


def start_process(args: Sequence[str], port_file: Path, timeout: float = 120) -> tuple[subprocess.Popen[bytes], int]:
    """Starts `python <args>` and waits until it writes the port it listens on into `port_file`."""
    process = subprocess.Popen([sys.executable, *args, "--port-file", str(port_file)])
    deadline = time.monotonic() + timeout
    while not port_file.exists() or not port_file.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"{' '.join(args)} did not start")
        time.sleep(0.05)
    return process, int(port_file.read_text())


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc): a server's cost per call, whatever else the
    shared cores are doing."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop_process(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait()


@contextmanager
def serve_in_process(definition: str, tmp: Path, methods: Sequence[str],
                     service: dict[str, Any]) -> Iterator[RunningService]:
    """Runs the service `definition` ("module:ATTR") in its own process for the duration of the block."""
    name = definition.split(":")[0].split(".")[1]
    config, pki = write_config(tmp, name, methods, service)
    process, port = start_process([__file__, "--serve", definition, "--config", str(config)], tmp / f"{name}.port")
    try:
        bundle = pki.bundle(CLIENT)
        yield RunningService(port, process.pid, ClientIdentity(bundle.ca_file, bundle.cert_file, bundle.key_file), pki,
                             pki.spiffe_id(name))
    finally:
        stop_process(process)


@contextmanager
def bare_echo(tmp: Path) -> Iterator[int]:
    """A bare grpc.aio echo in its own process (insecure, nothing else); yields its port."""
    process, port = start_process([__file__, "--serve", "bare"], tmp / "bare-echo.port")
    try:
        yield port
    finally:
        stop_process(process)


def print_rounds(label: str, values: Sequence[float], unit: str, note: str = "") -> None:
    """One measured side of an alternating benchmark: its median, then every round's figure."""
    print(f"{label + ':':<48}median {statistics.median(values):8.0f} {unit:<6} {[round(v) for v in values]}{note}")


def print_ratio(ratios: Sequence[float]) -> None:
    """Every round's ratio, then a benchmark's last line: their median."""
    print(f"per-round ratios: {[round(r, 3) for r in ratios]}")
    print(f"ratio: {statistics.median(ratios):.3f}")


async def closed_loop(call: Any, request: Any, seconds: float, concurrency: int,
                      warm_up: int = 20) -> tuple[float, int]:
    """(calls per second, calls made) from `concurrency` callers each awaiting `call(request)` in turn for
    `seconds`, after `warm_up` calls (connection, handshake, caches)."""
    for _ in range(warm_up):
        await call(request, timeout=10)
    done = 0
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            await call(request, timeout=10)
            done += 1

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - began), done


async def echo_load(channel: grpc.aio.Channel, seconds: float, concurrency: int, payload: bytes) -> float:
    """Echo calls per second from `concurrency` callers over `seconds`, after a warm-up."""
    rate, _ = await closed_loop(channel.unary_unary(ECHO_METHOD), payload, seconds, concurrency)
    return rate


async def _serve_bare(port_file: Path) -> None:
    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(ECHO_SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(echo)})
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await asyncio.to_thread(port_file.write_text, str(port))
    await server.wait_for_termination()


async def _serve(definition: str, config: Path, port_file: Path) -> None:
    from privmesh.runtime.config import load_config
    from privmesh.runtime.server import MeshServer

    module, attr = definition.split(":")
    service = getattr(importlib.import_module(module), attr)
    server_config, settings = load_config(config, service.settings_model)
    server = MeshServer(service, server_config, settings)
    await server.start()
    await asyncio.to_thread(port_file.write_text, str(server.port))
    await server.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="a benchmark's server process")
    parser.add_argument("--serve", required=True, help="MODULE:ATTR of a ServiceDefinition, or `bare`")
    parser.add_argument("--config", type=Path)
    parser.add_argument("--port-file", type=Path, required=True)
    args = parser.parse_args()
    if args.serve == "bare":
        asyncio.run(_serve_bare(args.port_file))
    else:
        asyncio.run(_serve(args.serve, args.config, args.port_file))
