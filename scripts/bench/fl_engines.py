"""Seconds per federated round on both engines: the same model (logistic regression over the demo's 6 features,
FedAvg, no DP) and the same participants' data, 10 participants, through one fl-coordinator that runs a Flower
SuperLink and a FLARE server; real flower-supernode and FLARE client processes on loopback.

Per round = the mean of the rounds' own durations (RoundMetrics start to end, as the coordinator reports them),
so a FLARE job's start (FLARE spawns a job process on the server and on every site) is shown apart, in the
whole run's wall time. The last line is `ratio: <FLARE s/round / Flower s/round>`.

    .venv/bin/python scripts/bench/fl_engines.py [--participants 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fl_round import FL, config, federation, spiffe, start  # noqa: E402

from privmesh.demo import records  # noqa: E402
from privmesh.fl import server as fl_server  # noqa: E402
from privmesh.fl.participant.sdk import FlareClient, ParticipantKeys, SuperNode, write_training_csv  # noqa: E402
from privmesh.fl.v1 import fl_pb2 as pb  # noqa: E402
from privmesh.fl.v1 import fl_pb2_grpc  # noqa: E402
from privmesh.keybroker import server as keybroker_server  # noqa: E402
from privmesh.runtime.client import ClientIdentity, secure_channel  # noqa: E402
from privmesh.runtime.pki import DevPki  # noqa: E402
from privmesh.runtime.ports import free_loopback_port  # noqa: E402


async def one_engine(stub: fl_pb2_grpc.FLCoordinatorStub, engine: int, tmp: Path, pki: DevPki, data: list[Path],
                     rounds: int, fleet: str) -> tuple[float, float]:
    """(mean seconds per round, seconds of the whole run) of one run on `engine`."""
    name = "flare" if engine == pb.FL_ENGINE_FLARE else "flower"
    f = federation(rounds, len(data))
    f.engine = engine
    await stub.CreateFederation(pb.CreateFederationRequest(federation_id=f"bench-{name}", federation=f))
    parent = f"federations/bench-{name}"
    processes: list[SuperNode | FlareClient] = []
    try:
        for i, path in enumerate(data):
            keys = ParticipantKeys.load_or_create(tmp / name / f"p{i}")
            participant = (await stub.RegisterParticipant(pb.RegisterParticipantRequest(
                parent=parent, participant_id=f"p{i}", public_key=keys.public_key_ssh(),
                public_key_format=pb.PUBLIC_KEY_FORMAT_SSH))).participant
            if engine == pb.FL_ENGINE_FLARE:
                kit = await stub.GetStartupKit(keys.flare_kit_request(participant.name))
                processes.append(FlareClient(kit.startup_kit, kit.site, path, tmp / name / f"p{i}" / "ws",
                                             keys).start())
            else:
                processes.append(SuperNode(keys, fleet, pki.ca_file, path, tmp / name / f"p{i}" / "work").start())
        for _ in range(1200):
            listed = await stub.ListParticipants(pb.ListParticipantsRequest(parent=parent))
            if all(p.connected for p in listed.participants):
                break
            await asyncio.sleep(0.5)
        began = time.perf_counter()
        run = (await stub.StartRun(pb.StartRunRequest(parent=parent))).run
        async for _ in stub.WatchRun(pb.WatchRunRequest(name=run.name)):
            pass
        elapsed = time.perf_counter() - began
        run = (await stub.GetRun(pb.GetRunRequest(name=run.name))).run
        assert run.state == pb.RUN_STATE_SUCCEEDED and run.completed_rounds == rounds, run.end_message
        durations = [(r.end_time.ToNanoseconds() - r.start_time.ToNanoseconds()) / 1e9 for r in run.rounds]
        return sum(durations) / len(durations), elapsed
    finally:
        for process in processes:
            process.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fl-engines-") as name:
        tmp = Path(name)
        pki = DevPki(tmp / "pki")
        pki.init()
        for identity in ("fl-coordinator", "key-broker", "admin"):
            pki.issue(identity)
        patients = records.patients(40 * args.participants)
        data = [write_training_csv(tmp / f"data-{i}.csv", records.FEATURES, "high_risk", [
            (records.scaled_features(p), p.high_risk) for p in patients[i::args.participants]])
            for i in range(args.participants)]
        kb_dir, fl_dir = tmp / "kb", tmp / "fl"
        kb_dir.mkdir()
        fl_dir.mkdir()
        broker = await start(keybroker_server.DEFINITION, config(kb_dir, pki, "key-broker", [
            {"name": "fl", "principals": [spiffe("fl-coordinator")],
             "methods": ["privmesh.keybroker.v1.KeyBroker/*"]}],
            {"database": f"sqlite:///{kb_dir / 'kb.db'}", "keystore_file": str(kb_dir / "keystore.bin"),
             "root_key_file": str(kb_dir / "root.bin")}))
        fleet = f"127.0.0.1:{free_loopback_port()}"
        coordinator = await start(fl_server.DEFINITION, config(fl_dir, pki, "fl-coordinator", [
            {"name": "operator", "principals": [spiffe("admin")], "methods": [f"{FL}/*"]},
            {"name": "self", "principals": [spiffe("fl-coordinator")],
             "methods": ["privmesh.fl.v1.FLRunReporter/*"]}],
            {"database": f"sqlite:///{fl_dir / 'fl.db'}", "key_broker_target": f"127.0.0.1:{broker.port}",
             "fleet_address": fleet, "flare": {"address": f"localhost:{free_loopback_port()}"}}))
        admin = pki.bundle("admin")
        try:
            async with secure_channel(f"127.0.0.1:{coordinator.port}", ClientIdentity(
                    admin.ca_file, admin.cert_file, admin.key_file), timeout_seconds=900,
                    peer=pki.spiffe_id("fl-coordinator")) as channel:
                stub = fl_pb2_grpc.FLCoordinatorStub(channel)
                flower, flower_run = await one_engine(stub, pb.FL_ENGINE_FLOWER, tmp, pki, data, args.rounds, fleet)
                flare, flare_run = await one_engine(stub, pb.FL_ENGINE_FLARE, tmp, pki, data, args.rounds, fleet)
        finally:
            await coordinator.stop(grace=0)
            await broker.stop(grace=0)
    print(f"participants: {args.participants}, rounds: {args.rounds}, model: logistic regression over 6 features, "
          "FedAvg, no SecAgg+/DP (FLARE has no SecAgg+)")
    print(f"Flower: {flower:.2f} s/round ({flower_run:.1f} s per run, StartRun to its end)")
    print(f"FLARE:  {flare:.2f} s/round ({flare_run:.1f} s per run, StartRun to its end, job start included)")
    print(f"ratio: {flare / flower:.3f}")


if __name__ == "__main__":
    asyncio.run(main())
