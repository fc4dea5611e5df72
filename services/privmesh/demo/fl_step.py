"""Step 3 of the scenario: three hospitals train a risk model with fl-coordinator without moving their records.

The operator creates a federation (logistic regression, FedAvg, SecAgg+ over the three hospitals, DP with
client-side clipping and an RDP accountant); each hospital makes an ECDSA key pair, registers its public key and
starts a Flower SuperNode on its own CSV (with `privmesh demo --fl-engine flare`: fetches its FLARE startup
kit and starts a FLARE client; FLARE has no SecAgg+, so that federation aggregates in the clear); one run trains
the model; the coordinator stores it encrypted under a
key-broker key. The operator fetches it (decrypted, as the policy allows the admin) for step 4 to serve.

With three participants, client-level DP noise (std = noise multiplier x clipping norm / 3 per weight) is
large next to one round's clipped update; the noise multiplier 0.4 keeps the chance that noise alone makes
the accuracy check below fail at about 1e-7 (under 1e-6; tests/demo/test_fl_quality.py estimates it by
importance sampling on the same records and training), at a projected epsilon the step prints.
"""

from __future__ import annotations

import secrets

from privmesh.demo import records
from privmesh.demo.context import DemoContext, expect
from privmesh.fl.app.report import decode_arrays
from privmesh.fl.participant.sdk import FlareClient, ParticipantKeys, SuperNode, write_training_csv
from privmesh.fl.v1 import fl_pb2 as pb
from privmesh.fl.v1 import fl_pb2_grpc
from privmesh.runtime.client import secure_channel

PATIENTS = 300
RUN_TIMEOUT = 600.0  # a generous bound: a busy machine trains slowly, and a run that ends sooner returns sooner
NOISE_MULTIPLIER = 0.4
MIN_ACCURACY = 0.6  # "better than guessing"; see the module docstring for its false-failure probability


def _federation(engine: str = "flower") -> pb.Federation:
    f = pb.Federation(
        display_name="cardiovascular risk", description="scenario step 3", num_rounds=1, min_participants=3,
        model=pb.ModelSpec(feature_count=len(records.FEATURES), class_count=2,
                           logistic_regression=pb.LogisticRegressionSpec(), feature_names=list(records.FEATURES),
                           label_name="high_risk", seed=2026),
        local_training=pb.LocalTraining(epochs=40, batch_size=256, learning_rate=0.8),
        strategy=pb.Strategy(fed_avg=pb.FedAvgParameters(), fraction_evaluate=0.0),
        secure_aggregation=pb.SecureAggregation(num_shares=3, reconstruction_threshold=2),
        differential_privacy=pb.DifferentialPrivacy(clipping_mode=pb.DP_CLIPPING_MODE_CLIENT_SIDE_FIXED,
                                                    noise_multiplier=NOISE_MULTIPLIER, clipping_norm=1.5, delta=1e-3))
    if engine == "flare":  # FLARE has no SecAgg+: the same model, clipping and noise, on FLARE
        f.engine = pb.FL_ENGINE_FLARE
        f.ClearField("secure_aggregation")
    return f


async def federated_training_step(ctx: DemoContext) -> None:
    target = ctx.targets["fl-coordinator"]
    services = [pb.DESCRIPTOR.services_by_name["FLCoordinator"]]
    nodes: list[SuperNode | FlareClient] = []
    flare = ctx.fl_engine == "flare"
    aggregation = "plain FedAvg on FLARE" if flare else "SecAgg+"
    async with secure_channel(target, ctx.layout.identity("admin"), services, timeout_seconds=RUN_TIMEOUT,
                              peer=ctx.peers["fl-coordinator"]) as channel:
        fl = fl_pb2_grpc.FLCoordinatorStub(channel)
        federation_id = f"risk-{secrets.token_hex(3)}"
        federation = (await fl.CreateFederation(pb.CreateFederationRequest(
            federation_id=federation_id, federation=_federation(ctx.fl_engine)))).federation
        secagg = "" if flare else "SecAgg+ (3 shares, threshold 2), "
        ctx.console.print(f"   operator created {federation.name} ({pb.FlEngine.Name(federation.engine)}): FedAvg, "
                          f"{secagg}DP (client-side clipping, projected epsilon {federation.projected_epsilon:.1f})")
        root = ctx.work_dir / "fl-superlink-ca.pem"
        root.write_text(federation.superlink.root_certificates_pem)
        patients = records.patients(PATIENTS)
        try:
            for hospital in records.HOSPITALS:
                home = ctx.work_dir / "fl" / federation_id / hospital
                keys = ParticipantKeys.load_or_create(home)
                csv_path = write_training_csv(home / "records.csv", records.FEATURES, "high_risk", [
                    (records.scaled_features(p), p.high_risk) for p in patients if p.hospital == hospital])
                participant = (await fl.RegisterParticipant(pb.RegisterParticipantRequest(
                    parent=federation.name, participant_id=hospital, display_name=hospital.title(),
                    public_key=keys.public_key_ssh(), public_key_format=pb.PUBLIC_KEY_FORMAT_SSH))).participant
                if flare:
                    kit = await fl.GetStartupKit(keys.flare_kit_request(participant.name))
                    nodes.append(FlareClient(kit.startup_kit, kit.site, csv_path, home / "flare", keys).start())
                else:
                    nodes.append(SuperNode(keys, federation.superlink.fleet_address, root, csv_path,
                                           home / "work").start())
                runner = f"FLARE client (site {participant.flare_site})" if flare else "SuperNode"
                ctx.console.print(f"   {hospital}: key {participant.public_key_fingerprint[:16]}… admitted "
                                  f"(node {participant.node_id}); its {runner} trains on its own records")
            run = (await fl.StartRun(pb.StartRunRequest(parent=federation.name))).run
            async for reply in fl.WatchRun(pb.WatchRunRequest(name=run.name), timeout=RUN_TIMEOUT):
                event = reply.event
                if event.WhichOneof("event") == "round_finished":
                    m = event.round_finished.metrics
                    ctx.console.print(f"   round {m.round}: {m.participants_completed} hospitals aggregated with "
                                      f"{aggregation}, train loss {m.train_loss:.3f}, epsilon {m.epsilon:.2f}")
            run = (await fl.GetRun(pb.GetRunRequest(name=run.name))).run
            expect(run.state == pb.RUN_STATE_SUCCEEDED, f"the run ended {pb.RunState.Name(run.state)}: "
                                                         f"{run.end_message}")
        finally:
            for node in nodes:
                node.stop()
        ctx.console.print(f"   model stored encrypted under key-broker key {run.model.encryption.key} "
                          f"({run.model.encrypted_size_bytes} bytes, AWS Encryption SDK message)")
        header, model = None, b""
        async for reply in fl.GetModel(pb.GetModelRequest(name=run.model.name,
                                                          representation=pb.MODEL_REPRESENTATION_DECRYPTED)):
            if reply.WhichOneof("payload") == "header":
                header = reply.header
            else:
                model += reply.chunk.data
        expect(header is not None and len(model) == header.size_bytes, "the model could not be fetched")
        assert header is not None
        coef, intercept = decode_arrays(header.tensors, model)
        weights = [float(w) for w in coef[:, 0]]
        correct = sum(int((sum(w * x for w, x in zip(weights, records.scaled_features(p), strict=True))
                           + float(intercept[0]) > 0) == bool(p.high_risk)) for p in patients)
        ctx.console.print(f"   decrypted for the operator in memory: accuracy {correct / len(patients):.0%} on the "
                          "hospitals' records")
        expect(correct / len(patients) > MIN_ACCURACY, "the trained model is no better than guessing")
        ctx.facts["risk_model"] = {"features": list(records.FEATURES), "weights": weights,
                                   "bias": float(intercept[0])}
