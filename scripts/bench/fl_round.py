"""Seconds per federated round for 10 participants on a small model: through the fl-coordinator (admission,
reporting, per-round model sealing with key-broker) against the same Flower app on a bare SuperLink, in one run.

Both sides use real flower-superlink / flower-supernode processes with TLS and SuperNode authentication and the
same ServerApp/ClientApp; the bare side starts the run through the SuperLink's Control API with no coordinator
to report to. Per round = wall time of a whole run (StartRun until it has ended) / rounds. Also reports the
memory of one participant (SuperNode + its ClientApp processes) and how many participants this machine holds.

    .venv/bin/python scripts/bench/fl_round.py [--participants 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from privmesh.demo import records  # noqa: E402
from privmesh.fl import server as fl_server  # noqa: E402
from privmesh.fl.coordinator import federations  # noqa: E402
from privmesh.fl.coordinator.fab import build_fab  # noqa: E402
from privmesh.fl.coordinator.superlink import FlowerRun, SuperLink, SuperLinkConfig  # noqa: E402
from privmesh.fl.participant.sdk import ParticipantKeys, SuperNode, write_training_csv  # noqa: E402
from privmesh.fl.v1 import fl_pb2 as pb  # noqa: E402
from privmesh.fl.v1 import fl_pb2_grpc  # noqa: E402
from privmesh.keybroker import server as keybroker_server  # noqa: E402
from privmesh.runtime.client import ClientIdentity, secure_channel  # noqa: E402
from privmesh.runtime.config import load_config  # noqa: E402
from privmesh.runtime.pki import DevPki  # noqa: E402
from privmesh.runtime.ports import free_loopback_port  # noqa: E402
from privmesh.runtime.server import MeshServer, ServiceDefinition  # noqa: E402

FL = "privmesh.fl.v1.FLCoordinator"


def federation(rounds: int, participants: int) -> pb.Federation:
    return pb.Federation(
        num_rounds=rounds, min_participants=participants,
        model=pb.ModelSpec(feature_count=6, class_count=2, logistic_regression=pb.LogisticRegressionSpec(),
                           feature_names=list(records.FEATURES), label_name="high_risk", seed=11),
        local_training=pb.LocalTraining(epochs=5, batch_size=32, learning_rate=0.3),
        strategy=pb.Strategy(fed_avg=pb.FedAvgParameters(), fraction_evaluate=0.0))


def config(tmp: Path, pki: DevPki, name: str, rules: list[dict[str, object]], service: dict[str, object]) -> Path:
    bundle = pki.bundle(name)
    (tmp / "policy.yaml").write_text(yaml.safe_dump({"rules": rules}))
    data = {"server": {"listen": f"127.0.0.1:{free_loopback_port()}", "tls": {
        "ca_file": str(bundle.ca_file), "cert_file": str(bundle.cert_file), "key_file": str(bundle.key_file)},
        "authz_policy": str(tmp / "policy.yaml"), "metrics": {"enabled": False}, "state_dir": str(tmp),
        "audit": {"database": f"sqlite:///{tmp / 'audit.db'}", "signing_key_file": str(tmp / "audit.pem")}},
        "service": service}
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


async def start(definition: ServiceDefinition, path: Path) -> MeshServer:
    cfg, settings = load_config(path, definition.settings_model, environ={})
    server = MeshServer(definition, cfg, settings)
    await server.start()
    return server


def spiffe(name: str) -> str:
    return f"spiffe://privmesh.local/ns/privmesh/sa/{name}"


def group_rss_mib(pid: int) -> float:
    """Resident memory of every process in the session `pid` leads (a SuperNode and its ClientApp processes)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(stat[3]) != pid:  # the session id
                continue
            total += int((entry / "statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    return total / 2**20


def mem_available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start_nodes(keys: list[ParticipantKeys], data: list[Path], fleet: str, ca: Path, work: Path) -> list[SuperNode]:
    return [SuperNode(k, fleet, ca, d, work / f"node-{i}").start() for i, (k, d) in enumerate(zip(keys, data,
                                                                                                 strict=True))]


async def bare_run(tmp: Path, pki: DevPki, keys: list[ParticipantKeys], data: list[Path], rounds: int) -> float:
    bundle = pki.bundle("fl-coordinator")
    link = SuperLink(SuperLinkConfig(tmp / "bare", "127.0.0.1", free_loopback_port(), bundle.ca_file, bundle.cert_file,
                                     bundle.key_file))
    await link.start()
    nodes: list[SuperNode] = []
    try:
        node_ids = [await link.register_node(k.public_key_pem()) for k in keys]
        nodes = start_nodes(keys, data, link.config.fleet_address, bundle.ca_file, tmp / "bare-nodes")
        await wait_online(link, node_ids)
        f = federation(rounds, len(keys))
        fab, fab_hash = build_fab(federations.run_spec(f, "", 11, node_ids))
        began = time.perf_counter()
        run_id = await link.start_run(fab, fab_hash)
        status = await finished(link, run_id)
        elapsed = time.perf_counter() - began
        assert status.sub_status == "completed", status
        return elapsed
    finally:
        for node in nodes:
            node.stop()
        await link.stop()


async def finished(link: SuperLink, run_id: int) -> FlowerRun:
    for _ in range(60_000):
        status = await link.run_status(run_id)
        if status is not None and status.status == "finished":
            return status
        await asyncio.sleep(0.1)
    raise RuntimeError("the run did not finish")


async def wait_online(link: SuperLink, node_ids: list[int]) -> None:
    for _ in range(600):
        status = await link.node_status()
        if all(status.get(n, ("", ""))[0] == "online" for n in node_ids):
            return
        await asyncio.sleep(0.2)
    raise RuntimeError("the SuperNodes did not connect")


async def coordinator_run(tmp: Path, pki: DevPki, keys: list[ParticipantKeys], data: list[Path],
                          rounds: int) -> tuple[float, float, int]:
    kb_dir, fl_dir = tmp / "kb", tmp / "fl"
    kb_dir.mkdir()
    fl_dir.mkdir()
    broker = await start(keybroker_server.DEFINITION, config(kb_dir, pki, "key-broker", [
        {"name": "fl", "principals": [spiffe("fl-coordinator")], "methods": ["privmesh.keybroker.v1.KeyBroker/*"]}],
        {"database": f"sqlite:///{kb_dir / 'kb.db'}", "keystore_file": str(kb_dir / "keystore.bin"),
         "root_key_file": str(kb_dir / "root.bin")}))
    fleet = f"127.0.0.1:{free_loopback_port()}"
    coordinator = await start(fl_server.DEFINITION, config(fl_dir, pki, "fl-coordinator", [
        {"name": "operator", "principals": [spiffe("admin")], "methods": [f"{FL}/*"]},
        {"name": "self", "principals": [spiffe("fl-coordinator")], "methods": ["privmesh.fl.v1.FLRunReporter/*"]}],
        {"database": f"sqlite:///{fl_dir / 'fl.db'}", "key_broker_target": f"127.0.0.1:{broker.port}",
         "fleet_address": fleet}))
    admin = pki.bundle("admin")
    nodes: list[SuperNode] = []
    try:
        async with secure_channel(f"127.0.0.1:{coordinator.port}", ClientIdentity(
                admin.ca_file, admin.cert_file, admin.key_file), timeout_seconds=600,
                peer=pki.spiffe_id("fl-coordinator")) as channel:
            stub = fl_pb2_grpc.FLCoordinatorStub(channel)
            await stub.CreateFederation(pb.CreateFederationRequest(federation_id="bench",
                                                                   federation=federation(rounds, len(keys))))
            for i, k in enumerate(keys):
                await stub.RegisterParticipant(pb.RegisterParticipantRequest(
                    parent="federations/bench", participant_id=f"p{i}", public_key=k.public_key_ssh(),
                    public_key_format=pb.PUBLIC_KEY_FORMAT_SSH))
            nodes = start_nodes(keys, data, fleet, pki.ca_file, tmp / "fl-nodes")
            for _ in range(600):
                listed = (await stub.ListParticipants(pb.ListParticipantsRequest(parent="federations/bench")))
                if all(p.connected for p in listed.participants):
                    break
                await asyncio.sleep(0.2)
            began = time.perf_counter()
            run = (await stub.StartRun(pb.StartRunRequest(parent="federations/bench"))).run
            async for _ in stub.WatchRun(pb.WatchRunRequest(name=run.name)):
                pass
            elapsed = time.perf_counter() - began
            run = (await stub.GetRun(pb.GetRunRequest(name=run.name))).run
            assert run.state == pb.RUN_STATE_SUCCEEDED, run.end_message
            per_node = [group_rss_mib(n.process.pid) for n in nodes if n.process is not None]
            return elapsed, sum(per_node) / len(per_node), run.completed_rounds
    finally:
        for node in nodes:
            node.stop()
        await coordinator.stop(grace=0)
        await broker.stop(grace=0)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fl-bench-") as name:
        tmp = Path(name)
        pki = DevPki(tmp / "pki")
        pki.init()
        for identity in ("fl-coordinator", "key-broker", "admin"):
            pki.issue(identity)
        patients = records.patients(40 * args.participants)
        keys, data = [], []
        for i in range(args.participants):
            keys.append(ParticipantKeys.load_or_create(tmp / f"p{i}"))
            data.append(write_training_csv(tmp / f"p{i}" / "data.csv", records.FEATURES, "high_risk", [
                (records.scaled_features(p), p.high_risk) for p in patients[i::args.participants]]))
        bare = await bare_run(tmp, pki, keys, data, args.rounds)
        through, rss, completed = await coordinator_run(tmp, pki, keys, data, args.rounds)
    per_bare, per_coordinator = bare / args.rounds, through / args.rounds
    available = mem_available_mib()
    print(f"participants: {args.participants}, rounds: {args.rounds} (completed {completed}), model: logistic "
          "regression over 6 features, FedAvg")
    print(f"bare SuperLink:  {per_bare:.2f} s/round ({bare:.1f} s per run)")
    print(f"fl-coordinator:  {per_coordinator:.2f} s/round ({through:.1f} s per run)")
    print(f"one participant (SuperNode + ClientApp processes): {rss:.0f} MiB resident; with {available:.0f} MiB "
          f"available this machine holds about {int(available // rss)} participants by memory "
          f"({os.cpu_count()} CPU cores; rounds are dominated by Flower's 3 s polling, not CPU)")
    print(f"ratio: {per_coordinator / per_bare:.3f}")


if __name__ == "__main__":
    asyncio.run(main())
