"""A soak of mixed traffic across the six services of a local mesh (own processes, mTLS on loopback):
reads and audited writes on every service from concurrent callers for a bounded time. Prints per service
the calls/s, p50/p99 latency, the errors (any is a failure: none is asked for) and the resident memory of
its process at the start (after a warm-up) and the end.

Usage: .venv/bin/python scripts/soak.py [--seconds 600] [--concurrency 4]
Exit status 1 if any call failed or a service's memory grew by more than 10%.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc

from privmesh.attestation.v1 import attestation_pb2 as att
from privmesh.attestation.v1 import attestation_pb2_grpc
from privmesh.dpgateway.v1 import dpgateway_pb2 as dp
from privmesh.dpgateway.v1 import dpgateway_pb2_grpc
from privmesh.fhe.v1 import fhe_pb2 as fhe
from privmesh.fhe.v1 import fhe_pb2_grpc
from privmesh.fl.v1 import fl_pb2 as fl
from privmesh.fl.v1 import fl_pb2_grpc
from privmesh.keybroker.v1 import keybroker_pb2 as kb
from privmesh.keybroker.v1 import keybroker_pb2_grpc
from privmesh.mesh.local import LocalMesh, MeshLayout
from privmesh.runtime.client import secure_channel
from privmesh.sdk.keybroker.client import allow
from privmesh.tokenvault.v1 import tokenvault_pb2 as tv
from privmesh.tokenvault.v1 import tokenvault_pb2_grpc

Call = Callable[[], Awaitable[object]]
MAX_GROWTH = 0.10


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def traffic(channels: dict[str, grpc.aio.Channel], caller: str) -> dict[str, list[tuple[str, Call]]]:
    """Each service's mix of calls (after the set-up its writes need)."""
    verifier = attestation_pb2_grpc.AttestationVerifierStub(channels["attestation-verifier"])
    broker = keybroker_pb2_grpc.KeyBrokerStub(channels["key-broker"])
    vault = tokenvault_pb2_grpc.TokenVaultStub(channels["token-vault"])
    gateway = dpgateway_pb2_grpc.DPGatewayStub(channels["dp-gateway"])
    models = fhe_pb2_grpc.FHEInferenceStub(channels["fhe-inference"])
    coordinator = fl_pb2_grpc.FLCoordinatorStub(channels["fl-coordinator"])
    policy = kb.KeyPolicy(statements=[allow([caller], [kb.KEY_OPERATION_DESCRIBE, kb.KEY_OPERATION_GENERATE_DATA_KEY,
                                                         kb.KEY_OPERATION_DECRYPT])])
    key = (await broker.CreateKey(kb.CreateKeyRequest(alias=f"soak-{uuid.uuid4().hex[:8]}", policy=policy))).key
    counter = iter(range(10**9))

    async def put_policy() -> object:
        name = f"soak-{next(counter) % 50}"  # a bounded set of policies, rewritten: state does not grow
        policy = att.Policy(name=name, allowed_pcr_sets=[att.PcrSet(pcrs={0: b"\1" * 48})])
        return await verifier.PutPolicy(att.PutPolicyRequest(policy=policy))

    async def data_key_round_trip() -> object:
        made = await broker.GenerateDataKey(kb.GenerateDataKeyRequest(key=key.name, encryption_context={"s": "1"}))
        return await broker.Decrypt(kb.DecryptRequest(ciphertext_blob=made.ciphertext_blob,
                                                      encryption_context={"s": "1"}))

    return {
        "attestation-verifier": [("IssueChallenge", lambda: verifier.IssueChallenge(att.IssueChallengeRequest())),
                                 ("PutPolicy", put_policy),
                                 ("ListPolicies", lambda: verifier.ListPolicies(att.ListPoliciesRequest()))],
        "key-broker": [("GenerateDataKey+Decrypt", data_key_round_trip),
                       ("GetKey", lambda: broker.GetKey(kb.GetKeyRequest(name=key.name)))],
        "token-vault": [("ListFields", lambda: vault.ListFields(tv.ListFieldsRequest(parent="tenants/soak")))],
        "dp-gateway": [("ListDatasets", lambda: gateway.ListDatasets(dp.ListDatasetsRequest()))],
        "fhe-inference": [("ListModels", lambda: models.ListModels(fhe.ListModelsRequest()))],
        "fl-coordinator": [("ListFederations", lambda: coordinator.ListFederations(fl.ListFederationsRequest()))],
    }


async def soak(seconds: float, concurrency: int) -> int:
    with tempfile.TemporaryDirectory(prefix="privmesh-soak-") as tmp:
        layout = MeshLayout(Path(tmp) / "mesh")
        mesh = LocalMesh(layout)
        endpoints = await mesh.start(progress=print)
        try:
            admin = layout.identity("admin")
            channels = {e.service: secure_channel(e.target, admin, timeout_seconds=30, peer=e.spiffe_id)
                        for e in endpoints}
            mixes = await traffic(channels, layout.pki.spiffe_id("admin"))
            latencies: dict[str, list[float]] = defaultdict(list)
            errors: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
            stop_at = [0.0]

            async def worker(service: str, mix: list[tuple[str, Call]]) -> None:
                index = 0
                while time.monotonic() < stop_at[0]:
                    name, call = mix[index % len(mix)]
                    index += 1
                    began = time.perf_counter()
                    try:
                        await call()
                        latencies[service].append(time.perf_counter() - began)
                    except grpc.aio.AioRpcError as exc:
                        errors[service][f"{name} {exc.code().name}"] += 1

            async def run(duration: float) -> None:
                stop_at[0] = time.monotonic() + duration
                await asyncio.gather(*(worker(s, m) for s, m in mixes.items() for _ in range(concurrency)))

            await run(min(10.0, seconds / 10))  # warm-up: caches, connections, first allocations
            latencies.clear()
            pids = {e.service: e.pid for e in endpoints}
            rss_start = {s: rss_kib(pid) for s, pid in pids.items()}
            began = time.monotonic()
            await run(seconds)
            elapsed = time.monotonic() - began
            rss_end = {s: rss_kib(pid) for s, pid in pids.items()}
            for channel in channels.values():
                await channel.close()
        finally:
            mesh.stop()
    failed = False
    print(f"{seconds:.0f} s of mixed traffic, {concurrency} callers per service, loopback mTLS")
    print(f"{'service':<22}{'calls/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'RSS start':>11}{'RSS end':>10}{'growth':>8}"
          "  errors")
    for service, values in sorted(latencies.items()):
        values.sort()
        p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
        growth = rss_end[service] / rss_start[service] - 1 if rss_start[service] else 0.0
        failed |= bool(errors[service]) or growth > MAX_GROWTH
        print(f"{service:<22}{len(values) / elapsed:9.1f}{statistics.median(values) * 1e3:9.2f}{p99 * 1e3:9.2f}"
              f"{rss_start[service] / 1024:9.1f}Mi{rss_end[service] / 1024:8.1f}Mi{growth:8.1%}  "
              f"{dict(errors[service]) or 'none'}")
    return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--concurrency", type=int, default=4, help="callers per service")
    args = parser.parse_args()
    sys.exit(asyncio.run(soak(args.seconds, args.concurrency)))


if __name__ == "__main__":
    main()
