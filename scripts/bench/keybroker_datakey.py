"""GenerateDataKey RPCs per second through the key broker (local backend: mTLS, authorization, key policy,
AES-GCM wrap, audit of every call) against a bare grpc.aio echo of the same response size, measured in the
same run in alternating rounds, with the broker process's CPU time per call (less sensitive to whatever
else shares the cores); and the SDK's envelope encryption throughput (Encryption SDK streaming
with a broker data key) against cryptography's AES-GCM alone over the same bytes and frame size.

Last lines: `envelope ratio: <envelope MB/s / AES-GCM MB/s>` (median of the rounds; goal >= 0.5; the SDK
prepares each message, privmesh.sdk.keybroker.framing writes its frames) and `ratio: <GenerateDataKey rps /
echo rps>` (goal >= 0.5).

Usage: .venv/bin/python scripts/bench/keybroker_datakey.py [--seconds 10] [--rounds 5] [--concurrency 32] [--mib 32]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import tempfile
import time
from pathlib import Path

import grpc
from benchkit import bare_echo, closed_loop, cpu_seconds, echo_load, print_ratio, print_rounds, serve_in_process


async def generate_load(stub: object, key: str, seconds: float, concurrency: int, pid: int) -> tuple[float, float]:
    """(GenerateDataKey calls/s, the broker process's CPU µs per call) after a warm-up."""
    from privmesh.keybroker.v1 import keybroker_pb2 as pb

    request = pb.GenerateDataKeyRequest(key=key, encryption_context={"tenant": "bench"})
    call = stub.GenerateDataKey  # type: ignore[attr-defined]
    await closed_loop(call, request, 0, 1)  # warm-up, outside the CPU measurement
    cpu = cpu_seconds(pid)
    rate, done = await closed_loop(call, request, seconds, concurrency, warm_up=0)
    return rate, (cpu_seconds(pid) - cpu) / done * 1e6


class _Sink(io.RawIOBase):
    """Discards what is written, as the AES-GCM baseline keeps nothing: a BytesIO destination would measure
    its own growth (it re-allocates and copies as it grows), not the encryption."""

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        return len(data)


async def envelope_throughput(client: object, key: str, mib: int, rounds: int) -> tuple[list[float], list[float]]:
    """(SDK envelope MB/s, bare AES-GCM MB/s) per round, alternating, over the same data and frame size."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from privmesh.sdk.keybroker.envelope import Envelope

    frame = 65536
    data = os.urandom(mib * 1024 * 1024)
    envelope = Envelope(client, key, frame_length=frame)  # type: ignore[arg-type]
    aead = AESGCM(os.urandom(32))
    sdk, bare = [], []
    for _ in range(rounds):
        began = time.perf_counter()
        await envelope.encrypt_stream(io.BytesIO(data), _Sink(), {"tenant": "bench"})
        sdk.append(len(data) / (time.perf_counter() - began) / 1e6)
        began = time.perf_counter()
        for offset in range(0, len(data), frame):
            aead.encrypt(os.urandom(12), data[offset:offset + frame], None)
        bare.append(len(data) / (time.perf_counter() - began) / 1e6)
    return sdk, bare


async def measure(seconds: float, concurrency: int, rounds: int, mib: int) -> None:
    from privmesh.keybroker.v1 import keybroker_pb2 as pb
    from privmesh.runtime.client import secure_channel
    from privmesh.sdk.keybroker.client import SERVICES, KeyBrokerClient, allow

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        settings = {"database": f"sqlite:///{tmp / 'keybroker.db'}", "keystore_file": str(tmp / "keystore.bin"),
                    "root_key_file": str(tmp / "root.bin")}
        with serve_in_process("privmesh.keybroker.server:DEFINITION", tmp, ["privmesh.keybroker.v1.KeyBroker/*"],
                              settings) as broker, bare_echo(tmp) as echo_port:
            async with secure_channel(broker.target, broker.identity, SERVICES, peer=broker.peer) as secure:
                client = KeyBrokerClient(secure)
                me = broker.pki.spiffe_id("client")
                key = await client.create_key(policy=pb.KeyPolicy(statements=[allow([me], [
                    pb.KEY_OPERATION_GENERATE_DATA_KEY, pb.KEY_OPERATION_DECRYPT])]))
                sample = await client.stub.GenerateDataKey(pb.GenerateDataKeyRequest(
                    key=key.name, encryption_context={"tenant": "bench"}))
                payload = bytes(sample.ByteSize())  # the echo carries a response of the same size
                broker_rates, echo_rates, cpu_per_call = [], [], []
                async with grpc.aio.insecure_channel(f"127.0.0.1:{echo_port}") as plain:
                    for _ in range(rounds):
                        echo_rates.append(await echo_load(plain, seconds / rounds, concurrency, payload))
                        rate, cpu = await generate_load(client.stub, key.name, seconds / rounds, concurrency,
                                                        broker.pid)
                        broker_rates.append(rate)
                        cpu_per_call.append(cpu)
                sdk_mbs, aes_mbs = await envelope_throughput(client, key.name, mib, rounds)
    ratios = [b / e for b, e in zip(broker_rates, echo_rates, strict=True)]
    print(f"response {len(payload)} B, {concurrency} concurrent callers, {rounds} alternating rounds of "
          f"{seconds / rounds:.1f} s per server")
    print_rounds("bare grpc.aio echo (insecure)", echo_rates, "RPC/s")
    print_rounds("GenerateDataKey (mTLS, policy, wrap, audit)", broker_rates, "RPC/s")
    print_rounds("broker server CPU per GenerateDataKey", cpu_per_call, "µs")
    print_rounds(f"envelope, {mib} MiB in SDK messages, 64 KiB frames", sdk_mbs, "MB/s")
    print_rounds("AES-GCM alone, same bytes and frames", aes_mbs, "MB/s")
    envelope_ratios = sorted(e / a for e, a in zip(sdk_mbs, aes_mbs, strict=True))
    print(f"envelope/AES-GCM per round: {[round(r, 3) for r in envelope_ratios]}; "
          f"envelope ratio: {envelope_ratios[len(envelope_ratios) // 2]:.3f} (goal >= 0.5)")
    print_ratio(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per server, over all rounds")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mib", type=int, default=32, help="envelope throughput sample size")
    args = parser.parse_args()
    asyncio.run(measure(args.seconds, args.concurrency, args.rounds, args.mib))


if __name__ == "__main__":
    main()
