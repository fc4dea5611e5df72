"""Unary RPCs per second through a privmesh server (mTLS, authorization, audit of every call, metrics)
against a bare grpc.aio server with the same payload, measured in the same run.

Each server runs in its own process; the same client load (CONCURRENCY callers for SECONDS) hits both.
Last line: `ratio: <privmesh rps / bare rps>` (goal >= 0.6).

Usage: .venv/bin/python scripts/bench/runtime_rps.py [--seconds 10] [--rounds 5] [--concurrency 32] [--payload 256]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

import grpc
from benchkit import ECHO_SERVICE, bare_echo, echo_load, print_ratio, print_rounds, serve_in_process


async def measure(seconds: float, concurrency: int, payload_size: int, rounds: int) -> None:
    """Both servers run at once; short windows alternate between them and the median ratio is reported,
    so drift in the machine's load hits both sides alike."""
    import sqlite3

    from privmesh.runtime.client import secure_channel

    payload = bytes(payload_size)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        settings = {"database": f"sqlite:///{tmp / 'echo.db'}", "audit_every_call": True}
        bare_rates, mesh_rates = [], []
        with bare_echo(tmp) as bare_port, \
                serve_in_process("privmesh.runtime.echo:DEFINITION", tmp, [f"{ECHO_SERVICE}/*"], settings) as mesh:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{bare_port}") as plain, \
                    secure_channel(mesh.target, mesh.identity, peer=mesh.peer) as secure:
                for _ in range(rounds):
                    bare_rates.append(await echo_load(plain, seconds / rounds, concurrency, payload))
                    mesh_rates.append(await echo_load(secure, seconds / rounds, concurrency, payload))
        with sqlite3.connect(tmp / "runtime-audit.db") as conn:
            audited = conn.execute("SELECT COUNT(*) FROM audit_entries").fetchone()[0]
    ratios = [m / b for m, b in zip(mesh_rates, bare_rates, strict=True)]
    print(f"payload {payload_size} B, {concurrency} concurrent callers, {rounds} alternating rounds of "
          f"{seconds / rounds:.1f} s per server")
    print_rounds("bare grpc.aio (insecure)", bare_rates, "RPC/s")
    print_rounds("privmesh (mTLS + authz + audit + metrics)", mesh_rates, "RPC/s",
                 f"  ({audited} audit entries written)")
    print_ratio(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per server, over all rounds")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--payload", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(measure(args.seconds, args.concurrency, args.payload, args.rounds))


if __name__ == "__main__":
    main()
