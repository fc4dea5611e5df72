"""The federation suite: what a federation promises, through the coordinator's gRPC API, on both engines with
real processes on loopback. Flower: a supervised flower-superlink (TLS, SuperNode authentication) and three
hospitals' flower-supernode processes; FLARE: a supervised FLARE server the coordinator provisions and three
hospitals' FLARE clients started from the kits it issues. Plain, SecAgg+ and DP runs; a refused unregistered
node or site; refused attestation; bad input that changes nothing; encrypted models; StopRun; engine restarts.
What an engine does not do (FLARE: SecAgg+, FedAdam, distributed noise) is asserted refused, never skipped.

The module runs once per engine, each with one environment built once; its tests run in file order
(participants move between federations).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import grpc
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from google.protobuf.duration_pb2 import Duration
from scipy.stats import chi2

from privmesh.attestation.v1 import attestation_pb2 as apb
from privmesh.demo import records
from privmesh.enclave.simulator import DEFAULT_IMAGE, SimulatedNsm, image_pcrs
from privmesh.fl import accountant
from privmesh.fl.app.model import Architecture
from privmesh.fl.app.report import decode_arrays
from privmesh.fl.coordinator.keys import parse_public_key
from privmesh.fl.participant.sdk import FlareClient, ParticipantKeys, SuperNode
from privmesh.fl.v1 import fl_pb2 as pb
from privmesh.fl.v1 import fl_pb2_grpc
from privmesh.runtime.client import secure_channel
from privmesh.runtime.errors import read_error
from tests.conftest import identity, spiffe
from tests.fl.conftest import COORDINATOR, ENGINES, FlEnv, Hospital

pytestmark = [pytest.mark.asyncio(loop_scope="module"),
              pytest.mark.parametrize("fl_env", ENGINES, indirect=True, scope="module")]
ENGINE = {"flower": pb.FL_ENGINE_FLOWER, "flare": pb.FL_ENGINE_FLARE}
RUN_TIMEOUT = 150.0

STOP_ID = "5f0c7a52-0000-4000-8000-000000000001"


def federation(**overrides: object) -> pb.Federation:
    f = pb.Federation(
        display_name="risk model", num_rounds=1, min_participants=3,
        model=pb.ModelSpec(feature_count=6, class_count=2, logistic_regression=pb.LogisticRegressionSpec(),
                           feature_names=list(records.FEATURES), label_name="high_risk", seed=7),
        # Full-batch gradient descent: local training does not depend on sampling order, so runs compare exactly.
        local_training=pb.LocalTraining(epochs=2, batch_size=256, learning_rate=0.5),
        strategy=pb.Strategy(fed_avg=pb.FedAvgParameters(), fraction_evaluate=0.0),
        round_timeout=Duration(seconds=60), participant_wait_timeout=Duration(seconds=120))
    for key, value in overrides.items():
        field = getattr(f, key)
        if hasattr(field, "CopyFrom"):
            field.CopyFrom(value)
        else:
            setattr(f, key, value)
    return f


async def create(env: FlEnv, federation_id: str, f: pb.Federation) -> pb.Federation:
    """Creates the federation on the environment's engine."""
    on_engine = pb.Federation()
    on_engine.CopyFrom(f)
    on_engine.engine = ENGINE[env.engine]
    reply = await env.stub.CreateFederation(pb.CreateFederationRequest(federation_id=federation_id,
                                                                       federation=on_engine))
    return reply.federation


async def refused_on_flare(env: FlEnv, federation_id: str, f: pb.Federation, *fields: str) -> None:
    """What FLARE federations do not do is refused, never ignored: INVALID_ARGUMENT naming the fields, reason
    ENGINE_FEATURE_UNSUPPORTED, and nothing stored or audited."""
    assert env.flare
    before = (env.rows("fl_federations"), [a for a in env.audit() if a[0] == "CreateFederation"])
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await create(env, federation_id, f)
    error = read_error(refused.value)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    assert error.reason == "ENGINE_FEATURE_UNSUPPORTED" and [v.field for v in error.violations] == list(fields), error
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await env.stub.GetFederation(pb.GetFederationRequest(name=f"federations/{federation_id}"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert (env.rows("fl_federations"), [a for a in env.audit() if a[0] == "CreateFederation"]) == before


def key_bytes(keys: ParticipantKeys, fmt: int) -> bytes:
    if fmt == pb.PUBLIC_KEY_FORMAT_SSH:
        return keys.public_key_ssh()
    pem = keys.public_key_pem()
    if fmt == pb.PUBLIC_KEY_FORMAT_PEM:
        return pem
    key = serialization.load_pem_public_key(pem)
    return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


async def register_all(env: FlEnv, parent: str) -> list[pb.Participant]:
    formats = (pb.PUBLIC_KEY_FORMAT_SSH, pb.PUBLIC_KEY_FORMAT_PEM, pb.PUBLIC_KEY_FORMAT_RAW)
    out = []
    for hospital, fmt in zip(env.hospitals, formats, strict=True):
        reply = await env.stub.RegisterParticipant(pb.RegisterParticipantRequest(
            parent=parent, participant_id=hospital.name, display_name=hospital.name.title(),
            public_key=key_bytes(hospital.keys, fmt), public_key_format=fmt,
            curve=pb.EC_CURVE_P384 if fmt == pb.PUBLIC_KEY_FORMAT_RAW else pb.EC_CURVE_UNSPECIFIED))
        out.append(reply.participant)
    return out


async def move_participants(env: FlEnv, new: str) -> None:
    """Removes the hospitals from their federation, admits them to `new` with new keys, and restarts their
    SuperNodes or FLARE clients (a FLARE client from the new site's kit)."""
    env.stop_nodes()
    for hospital in env.hospitals:
        await env.stub.RemoveParticipant(pb.RemoveParticipantRequest(
            name=f"{env.federation}/participants/{hospital.name}"))
    if not env.flare:
        with pytest.raises(grpc.aio.AioRpcError) as reused:  # the SuperLink never takes a removed key back
            await register_all(env, new)
        assert read_error(reused.value).reason == "PUBLIC_KEY_ALREADY_REGISTERED"
    for hospital in env.hospitals:  # so each hospital makes a new key pair for the new federation
        hospital.keys = ParticipantKeys.load_or_create(env.tmp / hospital.name / new.rsplit("/", 1)[1])
    await register_all(env, new)
    await env.start_nodes(new)
    await all_connected(env, new)


async def all_connected(env: FlEnv, parent: str, seconds: float = 90.0) -> None:
    """Waits until the engine sees every participant of `parent` online, restarting a participant process that
    exited (a run started before would wait for it)."""
    deadline = time.monotonic() + seconds
    listed: list[pb.Participant] = []
    while time.monotonic() < deadline:
        listed = list((await env.stub.ListParticipants(pb.ListParticipantsRequest(parent=parent))).participants)
        if listed and all(p.connected for p in listed):
            return
        await env.start_nodes(parent)
        await asyncio.sleep(0.5)
    pytest.fail(f"not connected after {seconds} s: {[p.name for p in listed if not p.connected]}\n{env.log_tails()}")


async def run_to_end(env: FlEnv, parent: str) -> tuple[pb.Run, list[pb.RunEvent]]:
    run = (await env.stub.StartRun(pb.StartRunRequest(parent=parent))).run
    assert run.state == pb.RUN_STATE_PENDING
    job, flower_run = bool(run.flare_job_id), bool(run.flower_run_id)
    assert (job, flower_run) == ((True, False) if env.flare else (False, True))
    events = []
    try:
        async for reply in env.stub.WatchRun(pb.WatchRunRequest(name=run.name), timeout=RUN_TIMEOUT):
            events.append(reply.event)
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
            raise
        await env.stub.StopRun(pb.StopRunRequest(name=run.name))  # so the module's next run is not refused
        pytest.fail(f"run did not end in {RUN_TIMEOUT} s; events {kinds(events)}\n{env.log_tails()}")
    ended = (await env.stub.GetRun(pb.GetRunRequest(name=run.name))).run
    if ended.state != pb.RUN_STATE_SUCCEEDED:
        print(env.log_tails())  # shown by pytest when the test then fails
    return ended, events


async def fetch(stub: object, name: str, representation: int) -> tuple[pb.ModelHeader, bytes]:
    header, data = None, b""
    async for reply in stub.GetModel(pb.GetModelRequest(name=name, representation=representation)):  # type: ignore[attr-defined]
        if reply.WhichOneof("payload") == "header":
            header = reply.header
        else:
            assert reply.chunk.offset == len(data)
            data += reply.chunk.data
    assert header is not None and len(data) == header.size_bytes
    return header, data


async def weights_of(env: FlEnv, run: pb.Run) -> list[np.ndarray]:
    header, data = await fetch(env.stub, run.model.name, pb.MODEL_REPRESENTATION_DECRYPTED)
    assert [t.name for t in header.tensors] == ["coef", "intercept"]
    return decode_arrays(header.tensors, data)


def kinds(events: list[pb.RunEvent]) -> list[str]:
    return [str(e.WhichOneof("event")) for e in events]


# --- bad input --------------------------------------------------------------------------------------------

async def test_bad_federations_are_refused_by_field_and_nothing_is_stored(fl_env: FlEnv) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await fl_env.stub.GetFederation(pb.GetFederationRequest(name="federations/nowhere"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert read_error(missing.value).reason == "FEDERATION_NOT_FOUND"
    bad = [
        (federation(strategy=pb.Strategy(fed_prox=pb.FedProxParameters(proximal_mu=0))), "STRATEGY_INVALID",
         "federation.strategy.fed_prox.proximal_mu"),
        (federation(strategy=pb.Strategy(fed_adam=pb.FedAdamParameters(beta_1=1.5))), "STRATEGY_INVALID",
         "federation.strategy.fed_adam.beta_1"),
        (federation(strategy=pb.Strategy()), "STRATEGY_INVALID", "federation.strategy.algorithm"),
        (federation(min_participants=2, secure_aggregation=pb.SecureAggregation(num_shares=3)),
         "STRATEGY_INVALID", "federation.min_participants"),
        (federation(secure_aggregation=pb.SecureAggregation(num_shares=3, reconstruction_threshold=3)),
         "SECAGG_PARAMETERS_INVALID", "federation.secure_aggregation.reconstruction_threshold"),
        (federation(secure_aggregation=pb.SecureAggregation(), differential_privacy=pb.DifferentialPrivacy(
            clipping_mode=pb.DP_CLIPPING_MODE_SERVER_SIDE_FIXED, noise_multiplier=1, clipping_norm=1, delta=1e-3)),
         "DP_PARAMETERS_INVALID", "federation.differential_privacy.clipping_mode"),
        (federation(differential_privacy=pb.DifferentialPrivacy(
            clipping_mode=pb.DP_CLIPPING_MODE_SERVER_SIDE_FIXED, noise_multiplier=0.5, clipping_norm=1, delta=1e-3,
            target_epsilon=1.0)), "DP_TARGET_UNREACHABLE", "federation.differential_privacy.target_epsilon"),
        (federation(model=pb.ModelSpec(feature_count=6, class_count=2, label_name="y")), "MODEL_SPEC_INVALID",
         "federation.model.architecture"),
    ]
    for f, reason, field in bad:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await create(fl_env, "broken", f)
        details = read_error(error.value)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (reason, details)
        assert details.reason == reason and field in [v.field for v in details.violations], (reason, details)
        if reason == "DP_TARGET_UNREACHABLE":
            assert float(details.metadata["projected_epsilon"]) > 1.0
    with pytest.raises(grpc.aio.AioRpcError) as bad_id:
        await create(fl_env, "Bad_Id", federation())
    assert read_error(bad_id.value).violations[0].field == "federation_id"
    assert fl_env.rows("fl_federations") == [] and fl_env.engine_nodes() == 0
    assert not [a for a in fl_env.audit() if a[0] == "CreateFederation"]


async def test_wrong_keys_and_unknown_federations_register_nothing(fl_env: FlEnv) -> None:
    created = await create(fl_env, "plain", federation())
    assert created.name == "federations/plain" and created.engine == ENGINE[fl_env.engine]
    if fl_env.flare:  # sites dial the FLARE server, which the coordinator's FLARE CA certifies
        assert created.flare.server_address.startswith("localhost:") and not created.superlink.fleet_address
        assert "BEGIN CERTIFICATE" in created.flare.root_certificate_pem
    else:
        assert created.superlink.fleet_address == fl_env.fleet_address() and not created.flare.server_address
    assert created.model_key == "aliases/fl-models" and not created.HasField("projected_epsilon")
    rsa_pem = rsa.generate_private_key(65537, 2048).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    ed_ssh = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    p256 = ec.generate_private_key(ec.SECP256R1()).public_key()
    p256_raw = p256.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    good_ssh = fl_env.hospitals[0].keys.public_key_ssh()
    cases = [
        (b"-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n", pb.PUBLIC_KEY_FORMAT_PEM, 0),
        (rsa_pem, pb.PUBLIC_KEY_FORMAT_PEM, 0),
        (ed_ssh, pb.PUBLIC_KEY_FORMAT_SSH, 0),
        (good_ssh, pb.PUBLIC_KEY_FORMAT_PEM, 0),
        (p256_raw, pb.PUBLIC_KEY_FORMAT_RAW, 0),
        (p256_raw, pb.PUBLIC_KEY_FORMAT_RAW, pb.EC_CURVE_P384),
        (good_ssh, pb.PUBLIC_KEY_FORMAT_SSH, pb.EC_CURVE_P256),
        (good_ssh, pb.PUBLIC_KEY_FORMAT_UNSPECIFIED, 0),
        (b"x" * 9000, pb.PUBLIC_KEY_FORMAT_PEM, 0),
    ]
    for key, fmt, curve in cases:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await fl_env.stub.RegisterParticipant(pb.RegisterParticipantRequest(
                parent="federations/plain", participant_id="st-mary", public_key=key, public_key_format=fmt,
                curve=curve))
        details = read_error(error.value)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and details.reason == "PUBLIC_KEY_INVALID"
        assert details.violations[0].field == "public_key" and details.domain == "fl.privmesh.dev"
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await fl_env.stub.RegisterParticipant(pb.RegisterParticipantRequest(
            parent="federations/nowhere", participant_id="st-mary", public_key=good_ssh,
            public_key_format=pb.PUBLIC_KEY_FORMAT_SSH))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert fl_env.rows("fl_participants") == [] and fl_env.engine_nodes() == 0
    refusals = [a for a in fl_env.audit() if a[0] == "RegisterParticipant"]
    assert len(refusals) == len(cases) and {a[2] for a in refusals} == {"DENIED"}
    assert all(a[3]["reason"] == "PUBLIC_KEY_INVALID" for a in refusals)


# --- admission and the engine ----------------------------------------------------------------------------

async def test_plain_fedavg_run_with_three_hospitals(fl_env: FlEnv) -> None:
    participants = await register_all(fl_env, "federations/plain")
    assert [p.curve for p in participants] == [pb.EC_CURVE_P384] * 3
    assert len({p.node_id for p in participants}) == 3 and all(p.node_id for p in participants)
    sites = [p.flare_site for p in participants]
    assert sites == ([f"plain_{h.name}" for h in fl_env.hospitals] if fl_env.flare else ["", "", ""])
    assert participants[0].public_key_pem.startswith("-----BEGIN PUBLIC KEY-----")
    with pytest.raises(grpc.aio.AioRpcError) as twice:  # the same key again, under another id
        await fl_env.stub.RegisterParticipant(pb.RegisterParticipantRequest(
            parent="federations/plain", participant_id="copycat", public_key=fl_env.hospitals[0].keys.public_key_ssh(),
            public_key_format=pb.PUBLIC_KEY_FORMAT_SSH))
    assert read_error(twice.value).reason == "PUBLIC_KEY_ALREADY_REGISTERED"
    assert len(fl_env.rows("fl_participants")) == 3
    await fl_env.start_nodes("federations/plain")
    await all_connected(fl_env, "federations/plain")
    assert fl_env.engine_nodes() == 3
    run, events = await run_to_end(fl_env, "federations/plain")
    assert run.state == pb.RUN_STATE_SUCCEEDED, run.end_message
    assert run.end_reason == pb.RUN_END_REASON_COMPLETED and run.completed_rounds == 1
    [round_one] = run.rounds
    assert round_one.state == pb.ROUND_STATE_COMPLETED and round_one.participants_completed == 3
    assert round_one.num_examples == 90 and round_one.HasField("train_loss") and not round_one.HasField("epsilon")
    assert {p.participant for p in run.participants} == {f"federations/plain/participants/{h}"
                                                         for h in ("st-mary", "general", "riverside")}
    assert kinds(events)[-2:] == ["round_finished", "run_finished"] and "round_started" in kinds(events)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert run.model.encryption.key == "aliases/fl-models" and run.model.round == 1
    assert run.model.encryption.encryption_context["run"] == run.name
    listed = (await fl_env.stub.ListParticipants(pb.ListParticipantsRequest(parent="federations/plain"))).participants
    assert all(p.connected for p in listed)
    names, token = [], ""
    while True:  # one federation a page, each once
        page = await fl_env.stub.ListFederations(pb.ListFederationsRequest(page_size=1, page_token=token))
        names += [f.name for f in page.federations]
        if not (token := page.next_page_token):
            break
    assert "federations/plain" in names and len(names) == len(set(names)) == len(fl_env.rows("fl_federations"))
    runs = (await fl_env.stub.ListRuns(pb.ListRunsRequest(parent="federations/plain"))).runs
    assert [r.name for r in runs] == [run.name] and not runs[0].rounds  # BASIC view
    # Every admission and the run are audited, with the engine and (on FLARE) the site.
    admitted = [a[3] for a in fl_env.audit() if a[0] == "RegisterParticipant" and a[2] == "SUCCESS"]
    assert [a["flare_site"] for a in admitted] == sites and all(a["node_id"] != "0" for a in admitted)
    audited = [(a[0], a[3].get("engine", a[3].get("state"))) for a in fl_env.audit()
               if a[1] == run.name and a[0] in ("StartRun", "RunFinished")]
    assert audited == [("StartRun", pb.FlEngine.Name(ENGINE[fl_env.engine])), ("RunFinished", "RUN_STATE_SUCCEEDED")]


async def test_model_is_encrypted_at_rest_and_decrypted_only_for_authorised_principals(fl_env: FlEnv) -> None:
    run = (await fl_env.stub.ListRuns(pb.ListRunsRequest(parent="federations/plain"))).runs[0]
    weights = await weights_of(fl_env, run)
    assert weights[0].shape == (6, 1) and weights[1].shape == (1,)
    x = np.array([records.scaled_features(p) for p in records.patients(90)])
    y = np.array([p.high_risk for p in records.patients(90)])
    accuracy = float(np.mean(((x @ weights[0] + weights[1])[:, 0] > 0) == y))
    assert accuracy > 0.6  # better than guessing: it learned from the hospitals' data
    header, envelope = await fetch(fl_env.reader, run.model.name, pb.MODEL_REPRESENTATION_ENCRYPTED)
    assert header.representation == pb.MODEL_REPRESENTATION_ENCRYPTED and header.encryption.key == "aliases/fl-models"
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await fetch(fl_env.reader, run.model.name, pb.MODEL_REPRESENTATION_DECRYPTED)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert read_error(denied.value).reason == "PERMISSION_DENIED_BY_POLICY"
    # No plaintext weights anywhere on disk: not the tensors' bytes, in any file the services or engine wrote.
    needles = [w.astype(np.float64).tobytes() for w in weights]
    for path in fl_env.tmp.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(n in data for n in needles), f"plaintext weights in {path}"
    assert any(envelope in path.read_bytes() for path in (fl_env.tmp / "fl").glob("fl.db*"))
    fetches = [(a[2], a[3].get("representation") or a[3]["reason"]) for a in fl_env.audit() if a[0] == "GetModel"]
    assert fetches == [("SUCCESS", "DECRYPTED"), ("SUCCESS", "ENCRYPTED"),
                       ("DENIED", "PERMISSION_DENIED_BY_POLICY")]  # the runtime's refusal, audited
    # A subtree glob ("federations/plain/**") covers the model, never its decrypted view (issue 25).
    async with secure_channel(f"127.0.0.1:{fl_env.coordinator.port}", identity(fl_env.pki, "auditor"),
                              peer=spiffe(COORDINATOR)) as channel:
        glob = fl_pb2_grpc.FLCoordinatorStub(channel)
        assert (await fetch(glob, run.model.name, pb.MODEL_REPRESENTATION_ENCRYPTED))[1] == envelope
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await fetch(glob, run.model.name, pb.MODEL_REPRESENTATION_DECRYPTED)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_an_unregistered_node_or_site_is_refused_by_the_engine(fl_env: FlEnv) -> None:
    """Flower: a SuperNode whose key was never admitted; FLARE: a site whose kit another FLARE CA signed (only the
    coordinator's CA, after admission, makes kits the server accepts)."""
    nodes = fl_env.engine_nodes()
    work = fl_env.tmp / "stranger" / "work"
    node: SuperNode | FlareClient
    if fl_env.flare:
        from privmesh.fl.flare.provision import FlareProvisioner

        server = (await fl_env.stub.GetFederation(pb.GetFederationRequest(name="federations/plain"))).federation.flare
        host, port = server.server_address.rsplit(":", 1)
        impostor = FlareProvisioner(fl_env.tmp / "stranger" / "ca", "privmesh", host, int(port))
        keys = ParticipantKeys.load_or_create(fl_env.tmp / "stranger")
        request = keys.flare_kit_request("federations/plain/participants/stranger")
        csr = x509.load_pem_x509_csr(request.certificate_signing_request)
        kit = await asyncio.to_thread(impostor.startup_kit, "plain_stranger", csr)
        node = FlareClient(kit, "plain_stranger", fl_env.hospitals[0].data, work, keys).start()
        # FLARE's client retries every 10 s; the TLS handshake fails each time (quietly, in FLARE's log).
        refused, count, accepted = "not connected] is closed", 2, "successfully registered"
    else:
        stranger = ParticipantKeys.load_or_create(fl_env.tmp / "stranger")
        node = SuperNode(stranger, fl_env.fleet_address(), fl_env.pki.ca_file, fl_env.hospitals[0].data,
                         work).start()
        refused, count, accepted = "failed_precondition", 1, "supernode id:"
    try:
        for _ in range(120):
            if not node.alive() or node.log_text().lower().count(refused) >= count:
                break
            await asyncio.sleep(0.5)
        text = node.log_text().lower()
        assert not node.alive() or text.count(refused) >= count or "not registered" in text, text[-2000:]
        assert accepted not in text, text[-2000:]
        listed = (await fl_env.stub.ListParticipants(pb.ListParticipantsRequest(parent="federations/plain")))
        assert len(listed.participants) == 3 and all(p.connected for p in listed.participants)
    finally:
        node.stop()
    assert fl_env.engine_nodes() == nodes
    if fl_env.flare:  # the FLARE server never registered it
        assert "plain_stranger" not in (fl_env.flare_dir / "server" / "log.txt").read_text(errors="replace")


# --- secure aggregation -----------------------------------------------------------------------------------

async def test_secagg_aggregate_equals_fedavg_and_survives_a_dropout(fl_env: FlEnv) -> None:
    secure = federation(secure_aggregation=pb.SecureAggregation(num_shares=3, reconstruction_threshold=2,
                                                                timeout=Duration(seconds=30)))
    if fl_env.flare:  # no SecAgg+ on FLARE: the server sees each site's update
        await refused_on_flare(fl_env, "secure", secure, "federation.secure_aggregation")
        return
    plain_run = (await fl_env.stub.ListRuns(pb.ListRunsRequest(parent="federations/plain"))).runs[0]
    plain = await weights_of(fl_env, plain_run)
    await create(fl_env, "secure", secure)
    await move_participants(fl_env, "federations/secure")
    run, _ = await run_to_end(fl_env, "federations/secure")
    assert run.state == pb.RUN_STATE_SUCCEEDED, run.end_message
    masked = await weights_of(fl_env, run)
    # Same seed, same data, deterministic local training: only SecAgg+'s quantization separates the two.
    for a, b in zip(plain, masked, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)
    assert not all(np.array_equal(a, b) for a, b in zip(plain, masked, strict=True))  # it really went through SecAgg+
    # One hospital loses its data: it fails in the masked-vector stage; its mask is reconstructed from 2 shares.
    lost: Hospital = fl_env.hospitals[2]
    hidden = lost.data.with_suffix(".gone")
    lost.data.rename(hidden)
    try:
        second, events = await run_to_end(fl_env, "federations/secure")
    finally:
        hidden.rename(lost.data)
    assert second.state == pb.RUN_STATE_SUCCEEDED, second.end_message
    [metrics] = second.rounds
    assert metrics.participants_selected == 3 and metrics.participants_completed == 2
    assert metrics.participants_dropped == 1 and "participant_dropped" in kinds(events)
    [dropped] = [e.participant_dropped for e in events if e.WhichOneof("event") == "participant_dropped"]
    assert dropped.participant == f"federations/secure/participants/{lost.name}" and dropped.round == 1
    counts = {p.participant.rsplit("/", 1)[1]: (p.rounds_completed, p.rounds_dropped) for p in second.participants}
    assert counts == {"st-mary": (1, 0), "general": (1, 0), "riverside": (0, 1)}


# --- differential privacy ---------------------------------------------------------------------------------

async def test_dp_fedadam_mlp_run_reports_the_accountants_epsilon(fl_env: FlEnv) -> None:
    """Flower: FedAdam with server-side clipping. FLARE refuses FedAdam, so its DP run is FedAvg with client-side
    clipping (each site's executor clips its update; the workflow adds the central noise the accountant counts)."""
    dp = pb.DifferentialPrivacy(clipping_mode=pb.DP_CLIPPING_MODE_SERVER_SIDE_FIXED, noise_multiplier=1.2,
                                clipping_norm=1.0, delta=1e-3, target_epsilon=50.0)
    mlp = pb.ModelSpec(feature_count=6, class_count=2, mlp=pb.MlpSpec(hidden_units=[4],
                                                                      activation=pb.MLP_ACTIVATION_SQUARE),
                       feature_names=list(records.FEATURES), label_name="high_risk", seed=3)
    private = federation(
        num_rounds=2, differential_privacy=dp, model=mlp,
        strategy=pb.Strategy(fed_adam=pb.FedAdamParameters(server_learning_rate=0.05), fraction_evaluate=1.0))
    if fl_env.flare:
        await refused_on_flare(fl_env, "private", private, "federation.strategy.fed_adam")
        private.strategy.CopyFrom(pb.Strategy(fed_avg=pb.FedAvgParameters(), fraction_evaluate=1.0))
        private.differential_privacy.clipping_mode = pb.DP_CLIPPING_MODE_CLIENT_SIDE_FIXED
    created = await create(fl_env, "private", private)
    assert created.projected_epsilon == pytest.approx(accountant.epsilon(1.0, 1.2, 2, 1e-3))
    await move_participants(fl_env, "federations/private")
    run, _ = await run_to_end(fl_env, "federations/private")
    assert run.state == pb.RUN_STATE_SUCCEEDED, run.end_message
    assert [r.epsilon for r in run.rounds] == pytest.approx([accountant.epsilon(1.0, 1.2, k, 1e-3) for k in (1, 2)])
    assert run.privacy.epsilon == pytest.approx(accountant.epsilon(1.0, 1.2, 2, 1e-3))
    assert run.privacy.delta == 1e-3 and run.privacy.target_epsilon == 50.0
    server = "fl-coordinator FLARE workflow" if fl_env.flare else "fl-coordinator ServerApp"
    seen_by = f"{server}: every clipped update and their sum, before central noise"
    assert run.privacy.unnoised_aggregate_seen_by == seen_by
    assert run.privacy.noise == pb.DP_NOISE_CENTRAL and run.privacy.accountant == pb.DP_ACCOUNTANT_RDP
    assert all(0 <= r.metrics["accuracy"] <= 1 for r in run.rounds)  # federated evaluation ran
    header, _ = await fetch(fl_env.stub, run.model.name, pb.MODEL_REPRESENTATION_DECRYPTED)
    assert [(t.name, list(t.shape)) for t in header.tensors] == [
        ("layers.0.weight", [6, 4]), ("layers.0.bias", [4]), ("layers.1.weight", [4, 1]), ("layers.1.bias", [1])]
    rounds = [a for a in fl_env.audit() if a[0] == "RunRound" and a[1] == run.name and a[3]["event"] == "finished"]
    assert [a[3]["epsilon"] for a in rounds] == [f"{r.epsilon:.6g}" for r in run.rounds]
    assert all(set(a[3]) == {"round", "event", "state", "completed", "dropped", "epsilon"} for a in rounds)


async def test_stop_run_keeps_the_last_completed_rounds_model(fl_env: FlEnv) -> None:
    run = (await fl_env.stub.StartRun(pb.StartRunRequest(parent="federations/private", request_id=STOP_ID))).run
    again = (await fl_env.stub.StartRun(pb.StartRunRequest(parent="federations/private", request_id=STOP_ID))).run
    assert again.name == run.name  # idempotent retry
    with pytest.raises(grpc.aio.AioRpcError) as busy:
        await fl_env.stub.StartRun(pb.StartRunRequest(parent="federations/private"))
    assert read_error(busy.value).reason == "RUN_ALREADY_ACTIVE"
    events = []
    async for reply in fl_env.stub.WatchRun(pb.WatchRunRequest(name=run.name), timeout=RUN_TIMEOUT):
        events.append(reply.event)
        if reply.event.WhichOneof("event") == "round_started":  # stopped during round 1: it ends after it
            stopping = (await fl_env.stub.StopRun(pb.StopRunRequest(name=run.name))).run
            assert stopping.state in (pb.RUN_STATE_STOPPING, pb.RUN_STATE_STOPPED)
    stopped = (await fl_env.stub.GetRun(pb.GetRunRequest(name=run.name))).run
    assert stopped.state == pb.RUN_STATE_STOPPED and stopped.end_reason == pb.RUN_END_REASON_STOPPED_BY_USER
    assert stopped.completed_rounds == 1 and stopped.model.round == 1 and kinds(events)[-1] == "run_finished"
    replay = [r.event async for r in fl_env.stub.WatchRun(pb.WatchRunRequest(name=run.name, after_sequence=1))]
    assert [e.sequence for e in replay] == [e.sequence for e in events][1:]
    header, _ = await fetch(fl_env.stub, stopped.model.name, pb.MODEL_REPRESENTATION_DECRYPTED)
    assert header.round == 1
    audited = [(a[0], a[3]["state"]) for a in fl_env.audit() if a[1] == run.name and a[0] in ("StopRun", "RunFinished")]
    assert audited == [("StopRun", "RUN_STATE_RUNNING"), ("RunFinished", "RUN_STATE_STOPPED")]
    if fl_env.flare:  # FLARE's record agrees: the job ended (no round 2 runs behind the coordinator's back)
        for _ in range(60):
            if fl_env.flare_job_status(run.flare_job_id).startswith("FINISHED"):
                break
            await asyncio.sleep(0.5)
        assert fl_env.flare_job_status(run.flare_job_id).startswith("FINISHED"), fl_env.log_tails()


# --- attested admission -----------------------------------------------------------------------------------

async def test_attestation_is_judged_by_the_verifier_and_failures_register_nothing(fl_env: FlEnv) -> None:
    await fl_env.verifier.PutPolicy(apb.PutPolicyRequest(policy=apb.Policy(
        name="fl-enclave", require_nonce=False,
        allowed_pcr_sets=[apb.PcrSet(pcrs=image_pcrs(DEFAULT_IMAGE), description="trainer")])))
    with pytest.raises(grpc.aio.AioRpcError) as unknown_policy:
        await create(fl_env, "attested", federation(admission=pb.AdmissionPolicy(
            require_attestation=True, attestation_policy="no-such-policy")))
    assert read_error(unknown_policy.value).reason == "ATTESTATION_POLICY_NOT_FOUND"
    await create(fl_env, "attested", federation(admission=pb.AdmissionPolicy(
        require_attestation=True, attestation_policy="fl-enclave")))
    keys = ParticipantKeys.load_or_create(fl_env.tmp / "enclave-hospital")
    pem = keys.public_key_pem()
    digest = parse_public_key(pem, pb.PUBLIC_KEY_FORMAT_PEM).digest
    before = (len(fl_env.rows("fl_participants")), fl_env.engine_nodes())

    async def register(document: bytes) -> pb.Participant:
        reply = await fl_env.stub.RegisterParticipant(pb.RegisterParticipantRequest(
            parent="federations/attested", participant_id="enclave", public_key=pem,
            public_key_format=pb.PUBLIC_KEY_FORMAT_PEM, attestation_document=document))
        return reply.participant

    refusals = [
        (b"", grpc.StatusCode.FAILED_PRECONDITION, "ATTESTATION_REQUIRED"),
        (SimulatedNsm(fl_env.enclave_ca, image="tampered").attest(user_data=digest), grpc.StatusCode.PERMISSION_DENIED,
         "ATTESTATION_REJECTED"),
        (SimulatedNsm(fl_env.enclave_ca, debug=True).attest(user_data=digest), grpc.StatusCode.PERMISSION_DENIED,
         "ATTESTATION_REJECTED"),
        (SimulatedNsm(fl_env.enclave_ca).attest(user_data=b"\0" * 32), grpc.StatusCode.PERMISSION_DENIED,
         "ATTESTATION_KEY_MISMATCH"),
    ]
    for document, code, reason in refusals:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await register(document)
        assert error.value.code() == code and read_error(error.value).reason == reason
    assert (len(fl_env.rows("fl_participants")), fl_env.engine_nodes()) == before
    with pytest.raises(grpc.aio.AioRpcError) as no_kit:  # nothing to fetch a kit (FLARE) for
        await fl_env.stub.GetStartupKit(keys.flare_kit_request("federations/attested/participants/enclave"))
    assert no_kit.value.code() == grpc.StatusCode.NOT_FOUND
    denied = [a for a in fl_env.audit() if a[0] == "RegisterParticipant" and a[1].endswith("/enclave")]
    assert [a[3]["reason"] for a in denied] == [r for _, _, r in refusals]
    assert "PCR" in denied[1][3]["refusals"] and "DEBUG" in denied[2][3]["refusals"]
    admitted = await register(SimulatedNsm(fl_env.enclave_ca).attest(user_data=digest))
    assert admitted.attestation.policy == "fl-enclave" and admitted.node_id
    if fl_env.flare:  # a FLARE site is certified when its kit is issued, after admission
        kit = await fl_env.stub.GetStartupKit(keys.flare_kit_request(admitted.name))
        assert kit.site == admitted.flare_site == "attested_enclave"
    assert fl_env.engine_nodes() == before[1] + 1


# --- operation --------------------------------------------------------------------------------------------

async def test_the_engine_server_is_restarted_with_its_state(fl_env: FlEnv) -> None:
    """kill -9 of the SuperLink or the FLARE server during a run: the coordinator restarts it; the run in progress
    fails as the engine's failure (never hangs, so the federation can run again); the federation, its admitted
    participants (their processes reconnect by themselves) and its completed runs survive, and a new run trains."""
    parent = "federations/private"
    [pid] = fl_env.engine_pids()
    nodes = fl_env.engine_nodes()
    runs = [(r.name, r.state) for r in (await fl_env.stub.ListRuns(pb.ListRunsRequest(parent=parent))).runs]
    inflight = (await fl_env.stub.StartRun(pb.StartRunRequest(parent=parent))).run
    watch = fl_env.stub.WatchRun(pb.WatchRunRequest(name=inflight.name), timeout=RUN_TIMEOUT)
    async for reply in watch:
        if reply.event.WhichOneof("event") == "round_started":
            break
    watch.cancel()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        pids = fl_env.engine_pids()
        if pids and pids != [pid]:
            break
    assert fl_env.engine_pids() and fl_env.engine_pids() != [pid]
    listed: list[pb.Participant] = []
    while time.monotonic() < deadline + 60:
        listed = list((await fl_env.stub.ListParticipants(pb.ListParticipantsRequest(parent=parent))).participants)
        if listed and all(p.connected for p in listed):
            break
        await asyncio.sleep(1)
    assert len(listed) == 3 and all(p.connected for p in listed), fl_env.log_tails()  # their processes came back
    assert all(h.node is not None and h.node.alive() for h in fl_env.hospitals)  # by themselves, not restarted
    assert fl_env.engine_nodes() == nodes
    assert (await fl_env.stub.GetFederation(pb.GetFederationRequest(name=parent))).federation.name == parent
    events = [r.event async for r in fl_env.stub.WatchRun(pb.WatchRunRequest(name=inflight.name),
                                                            timeout=RUN_TIMEOUT)]
    failed = (await fl_env.stub.GetRun(pb.GetRunRequest(name=inflight.name))).run
    assert failed.state == pb.RUN_STATE_FAILED and kinds(events)[-1] == "run_failed", (failed, fl_env.log_tails())
    assert failed.end_reason == pb.RUN_END_REASON_SUPERLINK_FAILED, failed.end_message
    [audited] = [a for a in fl_env.audit() if a[0] == "RunFinished" and a[1] == inflight.name]
    assert audited[2] == "FAILURE" and audited[3]["end_reason"] == "RUN_END_REASON_SUPERLINK_FAILED"
    listed_runs = (await fl_env.stub.ListRuns(pb.ListRunsRequest(parent=parent))).runs
    assert [(r.name, r.state) for r in listed_runs if r.name != inflight.name] == runs
    run, _ = await run_to_end(fl_env, parent)
    assert run.state == pb.RUN_STATE_SUCCEEDED and run.completed_rounds == 2, run.end_message


# --- distributed noise ------------------------------------------------------------------------------------

def _noise_statistic(weights: list[np.ndarray], seed: int, hidden: int, variance: float) -> float:
    """sum(d^2) / variance over every coordinate d of the aggregate minus the initial weights: chi-square with
    as many degrees of freedom as coordinates when the aggregate's noise has that variance (the clipped updates
    are at most 1e-5 in norm, far below the noise)."""
    initial = Architecture(6, 2, (hidden,), "square").initial_weights(seed)
    deltas = np.concatenate([(w - i).ravel() for w, i in zip(weights, initial, strict=True)])
    return float(np.sum(deltas**2) / variance)


async def test_distributed_noise_gives_the_aggregate_the_promised_variance_and_nobody_the_unnoised_sum(
        fl_env: FlEnv) -> None:
    """Last in the module (its participants stay in this federation). Each participant adds N(0, (z C)^2 / m)
    before masking; FedAvg averages the k that completed, so each coordinate of the aggregate carries noise of
    variance (z C)^2 / (m k). Two-sided chi-square test, false-failure probability 1e-6 per run (it fails for
    noise 3 times larger, a full share per participant, or none)."""
    z, clip, hidden, seed = 1e4, 1e-4, 64, 11
    dp = pb.DifferentialPrivacy(clipping_mode=pb.DP_CLIPPING_MODE_CLIENT_SIDE_FIXED, noise_multiplier=z,
                                clipping_norm=clip, delta=1e-3, noise=pb.DP_NOISE_DISTRIBUTED)
    mlp = pb.ModelSpec(feature_count=6, class_count=2, mlp=pb.MlpSpec(hidden_units=[hidden],
                                                                      activation=pb.MLP_ACTIVATION_SQUARE),
                       feature_names=list(records.FEATURES), label_name="high_risk", seed=seed)
    distributed = federation(differential_privacy=dp, model=mlp, secure_aggregation=pb.SecureAggregation(
        num_shares=3, reconstruction_threshold=2, max_weight=1.0, timeout=Duration(seconds=60)))
    if fl_env.flare:  # no Flower mod adds the shares, and no SecAgg+ hides each lightly noised update
        await refused_on_flare(fl_env, "distributed", distributed, "federation.secure_aggregation",
                               "federation.differential_privacy.noise")
        return
    await create(fl_env, "distributed", distributed)
    if any(h.node is not None for h in fl_env.hospitals):  # after the module's other tests
        await move_participants(fl_env, "federations/distributed")
    else:  # alone (-k): the hospitals join this federation first
        await register_all(fl_env, "federations/distributed")
        await fl_env.start_nodes("federations/distributed")
        await all_connected(fl_env, "federations/distributed")
    run, _ = await run_to_end(fl_env, "federations/distributed")
    assert run.state == pb.RUN_STATE_SUCCEEDED, run.end_message
    assert run.privacy.noise == pb.DP_NOISE_DISTRIBUTED and run.privacy.unnoised_aggregate_seen_by == "nobody"
    [started] = [a for a in fl_env.audit() if a[0] == "StartRun" and a[1] == run.name]
    assert started[3]["dp_noise"] == "distributed"
    header, data = await fetch(fl_env.stub, run.model.name, pb.MODEL_REPRESENTATION_DECRYPTED)
    weights = decode_arrays(header.tensors, data)
    coordinates = sum(w.size for w in weights)
    low, high = chi2.ppf(0.5e-6, coordinates), chi2.ppf(1 - 0.5e-6, coordinates)
    statistic = _noise_statistic(weights, seed, hidden, (z * clip) ** 2 / (3 * 3))
    assert low <= statistic <= high, (statistic, low, high)
    assert run.rounds[0].epsilon == pytest.approx(accountant.epsilon_of_rounds(1.0, [z], 1e-3))
    # One participant drops out: 2 shares reach the sum (variance (z C)^2 / (3 * 2)), and the round is accounted
    # with noise multiplier z * sqrt(2 / 3), the noise that was actually added.
    lost: Hospital = fl_env.hospitals[2]
    hidden_data = lost.data.with_suffix(".gone")
    lost.data.rename(hidden_data)
    try:
        second, _ = await run_to_end(fl_env, "federations/distributed")
    finally:
        hidden_data.rename(lost.data)
    assert second.state == pb.RUN_STATE_SUCCEEDED, second.end_message
    assert second.rounds[0].participants_completed == 2
    header, data = await fetch(fl_env.stub, second.model.name, pb.MODEL_REPRESENTATION_DECRYPTED)
    statistic = _noise_statistic(decode_arrays(header.tensors, data), seed, hidden,
                                 (z * clip) ** 2 / (3 * 2))
    assert low <= statistic <= high, (statistic, low, high)
    assert second.rounds[0].epsilon == pytest.approx(accountant.epsilon_of_rounds(1.0, [z * np.sqrt(2 / 3)], 1e-3))
