"""What only FLARE federations have, with real processes on loopback: the coordinator provisions and supervises a
FLARE server (its own FLARE CA), three hospitals are admitted with nonce-fresh Nitro attestation bound to their
keys, fetch their startup kits through the API and run FLARE clients; FLARE's own audit log is folded into the
coordinator's, the server binds the configured host only, a removed site's kit stops working, and the Nitro
authorizer for FLARE's CC manager. What every federation promises runs on FLARE in the engine-parametrized
federation suite (test_coordinator.py). The tests share one environment and run in file order.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
import zipfile
from io import BytesIO
from pathlib import Path

import grpc
import pytest

from privmesh.attestation.v1 import attestation_pb2 as apb
from privmesh.enclave.simulator import DEFAULT_IMAGE, SimulatedNsm, image_pcrs
from privmesh.fl.coordinator.keys import parse_public_key
from privmesh.fl.participant.sdk import FlareClient
from privmesh.fl.v1 import fl_pb2 as pb
from privmesh.runtime.errors import read_error
from tests.fl.conftest import FlEnv
from tests.fl.test_coordinator import create, federation, kinds

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]
FLARE = True  # the module's fl_env runs a FLARE server beside the SuperLink
PARENT = "federations/flare-risk"
RUN_TIMEOUT = 240.0
clients: dict[str, FlareClient] = {}
documents: dict[str, bytes] = {}  # the attestation document that admitted each hospital


async def connected(env: FlEnv, seconds: float = 90.0) -> list[pb.Participant]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        listed = list((await env.stub.ListParticipants(pb.ListParticipantsRequest(parent=PARENT))).participants)
        if listed and all(p.connected for p in listed):
            return listed
        await asyncio.sleep(1.0)
    pytest.fail(f"FLARE sites not connected after {seconds} s:\n" + "\n".join(
        c.log_text()[-2000:] for c in clients.values()))


async def test_attested_admission_then_kits_then_a_flare_run_trains_the_model(fl_env: FlEnv) -> None:
    await fl_env.verifier.PutPolicy(apb.PutPolicyRequest(policy=apb.Policy(
        name="flare-sites", require_nonce=True,
        allowed_pcr_sets=[apb.PcrSet(pcrs=image_pcrs(DEFAULT_IMAGE), description="trainer")])))
    created = await create(fl_env, "flare-risk", federation(
        engine=pb.FL_ENGINE_FLARE, num_rounds=2, admission=pb.AdmissionPolicy(require_attestation=True,
                                                                          attestation_policy="flare-sites"),
        differential_privacy=pb.DifferentialPrivacy(clipping_mode=pb.DP_CLIPPING_MODE_CLIENT_SIDE_FIXED,
                                                    noise_multiplier=0.4, clipping_norm=1.5, delta=1e-3)))
    assert created.engine == pb.FL_ENGINE_FLARE and created.flare.server_address.startswith("localhost:")
    assert "BEGIN CERTIFICATE" in created.flare.root_certificate_pem and not created.superlink.fleet_address
    nsm = SimulatedNsm(fl_env.enclave_ca)
    for hospital in fl_env.hospitals:
        pem = hospital.keys.public_key_pem()
        digest = parse_public_key(pem, pb.PUBLIC_KEY_FORMAT_PEM).digest
        request = pb.RegisterParticipantRequest(parent=PARENT, participant_id=hospital.name, public_key=pem,
                                                public_key_format=pb.PUBLIC_KEY_FORMAT_PEM)
        bad = SimulatedNsm(fl_env.enclave_ca, image="tampered").attest(user_data=digest)
        with pytest.raises(grpc.aio.AioRpcError) as rejected:  # a site with a bad attestation is refused
            await fl_env.stub.RegisterParticipant(pb.RegisterParticipantRequest(
                **{f.name: v for f, v in request.ListFields()}, attestation_document=bad))
        assert read_error(rejected.value).reason == "ATTESTATION_REJECTED"
        name = f"{PARENT}/participants/{hospital.name}"
        with pytest.raises(grpc.aio.AioRpcError) as no_kit:  # no kit before admission
            await fl_env.stub.GetStartupKit(pb.GetStartupKitRequest(name=name))
        assert no_kit.value.code() == grpc.StatusCode.NOT_FOUND
        nonce = (await fl_env.verifier.IssueChallenge(apb.IssueChallengeRequest())).nonce
        request.attestation_document = documents[hospital.name] = nsm.attest(user_data=digest, nonce=nonce)
        admitted = (await fl_env.stub.RegisterParticipant(request)).participant
        assert admitted.flare_site == f"flare-risk_{hospital.name}" and admitted.attestation.policy == "flare-sites"
        kit = await fl_env.stub.GetStartupKit(pb.GetStartupKitRequest(name=name))
        files = zipfile.ZipFile(BytesIO(kit.startup_kit)).namelist()
        assert {"startup/client.crt", "startup/client.key", "startup/rootCA.pem", "startup/fed_client.json"} <= set(
            files)
        clients[hospital.name] = FlareClient(kit.startup_kit, kit.site, hospital.data,
                                             fl_env.tmp / hospital.name / "flare").start()
    await connected(fl_env)
    run = (await fl_env.stub.StartRun(pb.StartRunRequest(parent=PARENT))).run
    assert run.flare_job_id and not run.flower_run_id
    events = [r.event async for r in fl_env.stub.WatchRun(pb.WatchRunRequest(name=run.name), timeout=RUN_TIMEOUT)]
    ended = (await fl_env.stub.GetRun(pb.GetRunRequest(name=run.name))).run
    assert ended.state == pb.RUN_STATE_SUCCEEDED, (ended.end_message, kinds(events))
    assert ended.completed_rounds == 2 and all(r.participants_completed == 3 for r in ended.rounds)
    assert {p.participant.rsplit("/", 1)[1] for p in ended.participants} == {h.name for h in fl_env.hospitals}
    assert ended.model.round == 2  # the model at rest, DP and its accounting: see the federation suite
    audited = [(a[0], a[3].get("engine", "")) for a in fl_env.audit() if a[1].startswith(PARENT)]
    assert ("CreateFederation", "FL_ENGINE_FLARE") in audited and ("StartRun", "FL_ENGINE_FLARE") in audited
    assert sum(op == "GetStartupKit" for op, _ in audited) == 3 and ("StoreModel", "") in audited
    # FLARE's own audit log is committed, segment by segment and without gaps, into the coordinator's audit chain.
    flare_log = (fl_env.tmp / "fl" / "flare" / "server" / "audit.log").read_bytes()
    folded = [a[3] for a in fl_env.audit() if a[0] == "FlareAuditLog"]
    assert folded and folded[0]["from_byte"] == "0" and "job_mgmt.submit_job" in ",".join(f["actions"] for f in folded)
    for earlier, later in itertools.pairwise(folded):
        assert earlier["to_byte"] == later["from_byte"]
    for segment in folded:
        data = flare_log[int(segment["from_byte"]):int(segment["to_byte"])]
        assert hashlib.sha256(data).hexdigest() == segment["sha256"]
    # The FLARE server listens on the configured host only (FLARE alone would bind every interface).
    port = int(created.flare.server_address.rsplit(":", 1)[1])

    def listeners(table: str) -> list[str]:
        rows = [line.split() for line in Path(table).read_text().splitlines()[1:]]
        return [r[1] for r in rows if r[3] == "0A" and int(r[1].rsplit(":", 1)[1], 16) == port]

    loopback = {f"0100007F:{port:04X}", f"0000000000000000FFFF00000100007F:{port:04X}"}  # 127.0.0.1, ::ffff:127.0.0.1
    bound = listeners("/proc/net/tcp") + listeners("/proc/net/tcp6")
    assert bound and set(bound) <= loopback, bound


async def test_a_removed_sites_kit_stops_working(fl_env: FlEnv) -> None:
    gone = fl_env.hospitals[0]
    name = f"{PARENT}/participants/{gone.name}"
    kit = await fl_env.stub.GetStartupKit(pb.GetStartupKitRequest(name=name))
    await fl_env.stub.RemoveParticipant(pb.RemoveParticipantRequest(name=name))
    clients.pop(gone.name).stop()
    with pytest.raises(grpc.aio.AioRpcError) as replayed:  # its admitting document cannot admit it again
        await fl_env.stub.RegisterParticipant(pb.RegisterParticipantRequest(
            parent=PARENT, participant_id=gone.name, public_key=gone.keys.public_key_pem(),
            public_key_format=pb.PUBLIC_KEY_FORMAT_PEM, attestation_document=documents[gone.name]))
    assert read_error(replayed.value).reason == "ATTESTATION_REJECTED"
    assert "NONCE_REPLAYED" in read_error(replayed.value).metadata["refusals"]
    retry = FlareClient(kit.startup_kit, kit.site, gone.data, fl_env.tmp / gone.name / "flare-again").start()
    try:
        deadline = time.monotonic() + 60
        while "disabled" not in retry.log_text() and "unauthenticated" not in retry.log_text().lower():
            assert time.monotonic() < deadline, retry.log_text()[-3000:]
            await asyncio.sleep(1.0)
        listed = await fl_env.stub.ListParticipants(pb.ListParticipantsRequest(parent=PARENT))
        assert [p.flare_site for p in listed.participants] == [f"flare-risk_{h.name}" for h in fl_env.hospitals[1:]]
        with pytest.raises(grpc.aio.AioRpcError) as no_kit:
            await fl_env.stub.GetStartupKit(pb.GetStartupKitRequest(name=name))
        assert no_kit.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        retry.stop()
        for client in clients.values():
            client.stop()


async def test_the_nitro_authorizer_accepts_only_what_attestation_verifier_accepts(fl_env: FlEnv) -> None:
    from privmesh.fl.flare.nitro_authorizer import NitroAuthorizer
    from tests.conftest import spiffe

    await fl_env.verifier.PutPolicy(apb.PutPolicyRequest(policy=apb.Policy(
        name="flare-cc", require_nonce=False,  # the authorizer's token carries no challenge (see its docstring)
        allowed_pcr_sets=[apb.PcrSet(pcrs=image_pcrs(DEFAULT_IMAGE), description="trainer")])))
    coordinator = fl_env.pki.bundle("fl-coordinator")
    document = fl_env.tmp / "nitro-document"
    document.write_bytes(SimulatedNsm(fl_env.enclave_ca).attest(user_data=b"\1" * 32))
    target = fl_env.coordinator.settings.attestation_verifier_target  # type: ignore[attr-defined]
    authorizer = NitroAuthorizer(target, spiffe("server"), "flare-cc", str(fl_env.pki.ca_file),
                                 str(coordinator.cert_file), str(coordinator.key_file), str(document))
    assert authorizer.get_namespace() == "x-aws-nitro"
    token = await asyncio.to_thread(authorizer.generate)
    assert await asyncio.to_thread(authorizer.verify, token)
    document.write_bytes(SimulatedNsm(fl_env.enclave_ca, image="tampered").attest(user_data=b"\1" * 32))
    for bad in (await asyncio.to_thread(authorizer.generate), "not base64!", "", token[:-8]):
        assert not await asyncio.to_thread(authorizer.verify, bad)


async def test_the_nitro_authorizer_accepts_nitrotpm_documents_under_a_nitrotpm_policy(fl_env: FlEnv) -> None:
    from privmesh.enclave.nitrotpm_simulator import SimulatedNitroTpm, ami_pcrs
    from privmesh.fl.flare.nitro_authorizer import NitroAuthorizer
    from tests.conftest import spiffe

    pcrs = ami_pcrs("flare-site-ami")
    await fl_env.verifier.PutPolicy(apb.PutPolicyRequest(policy=apb.Policy(
        name="flare-cc-tpm", require_nonce=False, kind=apb.ATTESTATION_KIND_NITRO_TPM,
        allowed_pcr_sets=[apb.PcrSet(pcrs={4: pcrs[4], 12: pcrs[12]}, description="site AMI v1")])))
    coordinator = fl_env.pki.bundle("fl-coordinator")
    document = fl_env.tmp / "nitrotpm-document"
    target = fl_env.coordinator.settings.attestation_verifier_target  # type: ignore[attr-defined]
    authorizer = NitroAuthorizer(target, spiffe("server"), "flare-cc-tpm", str(fl_env.pki.ca_file),
                                 str(coordinator.cert_file), str(coordinator.key_file), str(document))
    document.write_bytes(SimulatedNitroTpm(fl_env.enclave_ca, ami="flare-site-ami").attest(user_data=b"\1" * 32))
    assert await asyncio.to_thread(authorizer.verify, await asyncio.to_thread(authorizer.generate))
    for wrong in (SimulatedNitroTpm(fl_env.enclave_ca, ami="another-ami"), SimulatedNsm(fl_env.enclave_ca)):
        document.write_bytes(wrong.attest(user_data=b"\1" * 32))  # another AMI; an enclave under a TPM policy
        assert not await asyncio.to_thread(authorizer.verify, await asyncio.to_thread(authorizer.generate))
