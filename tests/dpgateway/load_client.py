"""A client process for the concurrency and crash tests: fires queries at gateways and prints one JSON line
per outcome ({"ok": release_id, "rho": charged} or {"error": reason}).

    python -m tests.dpgateway.load_client PKI_DIR IDENTITY TARGET[,TARGET...] COUNT RHO [--sequential]
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import grpc

from privmesh.dpgateway.v1 import dpgateway_pb2 as pb
from privmesh.dpgateway.v1 import dpgateway_pb2_grpc
from privmesh.runtime.client import ClientIdentity, secure_channel
from privmesh.runtime.errors import read_error
from privmesh.runtime.pki import DevPki


async def main(pki_dir: Path, name: str, targets: list[str], count: int, rho: float, sequential: bool) -> None:
    me = ClientIdentity(pki_dir / "ca.crt", pki_dir / f"{name}.crt", pki_dir / f"{name}.key")
    channels = [secure_channel(t, me, timeout_seconds=60, peer=DevPki(pki_dir).spiffe_id("server")) for t in targets]
    stubs = [dpgateway_pb2_grpc.DPGatewayStub(c) for c in channels]
    request = pb.QueryRequest(query=pb.StructuredQuery(dataset="datasets/patients", aggregates=[
        pb.Aggregate(function=pb.AGGREGATE_FUNCTION_COUNT)]), privacy=pb.PrivacySpec(
        privacy_loss=pb.PrivacyLoss(rho=rho)), force_new_release=True)

    async def one(i: int) -> None:
        try:
            reply = await stubs[i % len(stubs)].Query(request)
            line = {"ok": reply.release.release_id, "rho": reply.release.charged.rho}
        except grpc.aio.AioRpcError as exc:
            line = {"error": read_error(exc).reason or exc.code().name}
        print(json.dumps(line), flush=True)

    if sequential:
        for i in range(count):
            await one(i)
    else:
        await asyncio.gather(*(one(i) for i in range(count)))
    for channel in channels:
        await channel.close()


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(main(Path(args[0]), args[1], args[2].split(","), int(args[3]), float(args[4]),
                     "--sequential" in args))
