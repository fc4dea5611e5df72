"""Batched tokenization throughput (values/s) through the token-vault service on SQLite, against a plain-loop
baseline measured in the same run; and FF1 batched against FF1 value by value.

The vault and the key broker run as their own processes (the local mesh's way: mTLS, authorization, audit,
metrics), the vault with its embedded SQLite default; a client sends Tokenize batches of 1000 values
(several in flight). Profiles measured: random (opaque tokens) and FF1 (format-preserving, 16 digits).
Baseline: for each of the same values, AES-256-GCM encryption and one SQLite INSERT, in a plain loop (one
transaction). FF1: the vault's vectorised FF1 on a batch of 1000 values against the same FF1 called once
per value (goals: random >= 50,000 values/s; FF1 batched >= 10x).

Last line: `ratio: <random-profile service throughput / baseline throughput>`.

Usage: .venv/bin/python scripts/bench/tokenvault_throughput.py [--batches 40] [--in-flight 4]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sqlite3
import tempfile
import time
from pathlib import Path

from benchkit import cpu_seconds
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf.duration_pb2 import Duration

from privmesh.keybroker.policy import ADMIN_OPERATIONS
from privmesh.keybroker.v1 import keybroker_pb2 as kb
from privmesh.mesh.catalog import CATALOG
from privmesh.mesh.local import LocalMesh, MeshLayout
from privmesh.runtime.client import secure_channel
from privmesh.sdk.keybroker.client import SERVICES as KEYBROKER_SERVICES
from privmesh.sdk.keybroker.client import KeyBrokerClient, allow
from privmesh.tokenvault.ff1 import FF1, RADIX_10, encrypt_strings
from privmesh.tokenvault.v1 import tokenvault_pb2 as pb
from privmesh.tokenvault.v1 import tokenvault_pb2_grpc

BATCH = 1000
TENANT = "tenants/bench"


def values(count: int) -> list[str]:
    return [f"{secrets.randbelow(10 ** 16):016d}" for _ in range(count)]


def baseline(batch: list[str], path: Path) -> float:
    """AES-GCM + one SQLite INSERT per value, in a plain loop: the floor a vault pays per value stored."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE IF NOT EXISTS entries (token TEXT, nonce BLOB, ciphertext BLOB)")
    cipher = AESGCM(AESGCM.generate_key(256))
    began = time.perf_counter()
    conn.execute("BEGIN")
    for value in batch:
        nonce = secrets.token_bytes(12)
        conn.execute("INSERT INTO entries VALUES (?, ?, ?)",
                     (secrets.token_urlsafe(16), nonce, cipher.encrypt(nonce, value.encode(), None)))
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - began
    conn.close()
    return len(batch) / elapsed


def ff1_rates(count: int) -> tuple[float, float]:
    cipher, tweak = FF1(secrets.token_bytes(32), 10), b"tenants/bench/fields/fpe"
    batch = values(count)
    began = time.perf_counter()
    batched = encrypt_strings(cipher, RADIX_10, batch, tweak)
    batched_rate = count / (time.perf_counter() - began)
    began = time.perf_counter()
    one_by_one = [encrypt_strings(cipher, RADIX_10, [v], tweak)[0] for v in batch]
    single_rate = count / (time.perf_counter() - began)
    assert one_by_one == batched
    return batched_rate, single_rate


async def service_rate(stub: tokenvault_pb2_grpc.TokenVaultStub, field: str, batches: int, in_flight: int,
                       vault_pid: int) -> tuple[float, float]:
    """(values/s, server CPU µs per value); requests are built before the clock starts."""
    prepared = [pb.TokenizeRequest(parent=TENANT, items=[pb.TokenizeItem(field=field, value=v) for v in values(BATCH)])
                for _ in range(batches)]
    await stub.Tokenize(prepared[0])  # warm-up: field keys and data key from key-broker
    queue = list(prepared[1:])

    async def worker() -> None:
        while queue:
            request = queue.pop()
            reply = await stub.Tokenize(request, timeout=60)
            assert len(reply.results) == BATCH

    cpu, began = cpu_seconds(vault_pid), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    count = (batches - 1) * BATCH
    return count / (time.perf_counter() - began), (cpu_seconds(vault_pid) - cpu) / count * 1e6


async def measure(layout: MeshLayout, targets: dict[str, str], batches: int, in_flight: int,
                  vault_pid: int) -> tuple[tuple[float, float], tuple[float, float]]:
    admin = layout.identity("admin")
    async with secure_channel(targets["key-broker"], admin, KEYBROKER_SERVICES,
                              peer=layout.pki.spiffe_id("key-broker")) as channel:
        policy = kb.KeyPolicy(statements=[allow([layout.pki.spiffe_id("admin")], ADMIN_OPERATIONS),
                                          allow([layout.pki.spiffe_id("token-vault")],
                                                [kb.KEY_OPERATION_GENERATE_DATA_KEY, kb.KEY_OPERATION_DECRYPT])])
        await KeyBrokerClient(channel).create_key(alias="bench", policy=policy, caching=kb.DataKeyCaching(
            max_age=Duration(seconds=600), max_messages=10_000_000))
    async with secure_channel(targets["token-vault"], admin, [pb.DESCRIPTOR.services_by_name["TokenVault"]],
                              timeout_seconds=60, peer=layout.pki.spiffe_id("token-vault")) as channel:
        stub = tokenvault_pb2_grpc.TokenVaultStub(channel)
        for field, profile in (("random", pb.TokenProfile(random=pb.RandomProfile())),
                               ("fpe", pb.TokenProfile(format_preserving=pb.FormatPreservingProfile()))):
            await stub.CreateField(pb.CreateFieldRequest(parent=TENANT, field_id=field,
                                                         field=pb.Field(profile=profile, key="aliases/bench")))
        random_rate = await service_rate(stub, "random", batches, in_flight, vault_pid)
        fpe_rate = await service_rate(stub, "fpe", batches, in_flight, vault_pid)
    return random_rate, fpe_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=40, help="Tokenize batches of 1000 values per profile")
    parser.add_argument("--in-flight", type=int, default=4, help="concurrent Tokenize calls")
    args = parser.parse_args()
    specs = tuple(s for s in CATALOG if s.name in ("key-broker", "token-vault"))
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        layout = MeshLayout(tmp / "mesh")
        mesh = LocalMesh(layout, specs)
        endpoints = asyncio.run(mesh.start())
        try:
            targets = {e.service: e.target for e in endpoints}
            base_a = baseline(values(BATCH * 10), tmp / "baseline-a.db")
            (random_rate, random_cpu), (fpe_rate, fpe_cpu) = asyncio.run(
                measure(layout, targets, args.batches, args.in_flight, mesh.processes["token-vault"].pid))
            base_b = baseline(values(BATCH * 10), tmp / "baseline-b.db")
        finally:
            mesh.stop()
    batched, single = ff1_rates(BATCH)
    base = (base_a + base_b) / 2
    print(f"batches of {BATCH} values, {args.in_flight} in flight, vault on SQLite in its own process")
    print(f"baseline (AES-GCM + SQLite INSERT per value, plain loop): {base:10.0f} values/s")
    print(f"service, random profile:                                   {random_rate:10.0f} values/s (goal >= 50000)")
    print(f"  vault server CPU per value, random profile:              {random_cpu:10.1f} µs")
    print(f"service, FF1 profile (16 digits):                          {fpe_rate:10.0f} values/s")
    print(f"  vault server CPU per value, FF1 profile:                 {fpe_cpu:10.1f} µs")
    print(f"FF1 batched (1000 values, one AES call per round):         {batched:10.0f} values/s")
    print(f"FF1 value by value:                                        {single:10.0f} values/s")
    print(f"FF1 batched / value by value:                              {batched / single:10.1f}x (goal >= 10x)")
    print(f"ratio: {random_rate / base:.3f}")


if __name__ == "__main__":
    main()
