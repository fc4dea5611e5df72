"""FLARE federations through the coordinator, with real processes on loopback: the coordinator provisions and
supervises a FLARE server (its own FLARE CA), three hospitals are admitted with Nitro attestation bound to their
keys, fetch their startup kits through the API and run FLARE clients; a run trains the demo's model end to end,
the model is stored encrypted under a key-broker key, and a removed site's kit stops working.
The tests share one environment and run in file order.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import re
import sys
import time
import zipfile
from collections.abc import AsyncIterator
from io import BytesIO
from pathlib import Path

import grpc
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from nvflare.app_opt.confidential_computing.cc_authorizer import CCTokenGenerateError

from privmesh.attestation.v1 import attestation_pb2 as apb
from privmesh.enclave.simulator import DEFAULT_IMAGE, SimulatedNsm, image_pcrs
from privmesh.fl import accountant
from privmesh.fl.app.report import decode_arrays
from privmesh.fl.coordinator.keys import parse_public_key
from privmesh.fl.flare.kit import NONCE, NitroEvidence, csr_message
from privmesh.fl.flare.nitro_authorizer import NitroAuthorizer
from privmesh.fl.participant.sdk import FlareClient, ParticipantKeys, SiteAuditShipper
from privmesh.fl.v1 import fl_pb2 as pb
from privmesh.fl.v1 import fl_pb2_grpc
from privmesh.runtime.client import pinned_options, secure_channel
from privmesh.runtime.errors import read_error
from privmesh.runtime.tls import channel_credentials
from tests.conftest import identity, spiffe
from tests.fl.conftest import COORDINATOR, FlEnv, Hospital
from tests.fl.test_coordinator import create, federation, fetch, kinds

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]
FLARE = True  # the module's fl_env runs a FLARE server beside the SuperLink
FLARE_CC_POLICY = "flare-cc"  # ...whose sites present fresh Nitro evidence meeting this policy
PARENT = "federations/flare-risk"
RUN_TIMEOUT = 240.0
GARBLED_CSR = b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
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


@contextlib.asynccontextmanager
async def as_carol(env: FlEnv) -> AsyncIterator[fl_pb2_grpc.FLCoordinatorStub]:
    """A principal the RBAC policy lets call GetStartupKit and ReportSiteAudit, who registered no participant."""
    env.pki.issue("carol")
    channel = secure_channel(f"127.0.0.1:{env.coordinator.port}", identity(env.pki, "carol"),
                             [pb.DESCRIPTOR.services_by_name["FLCoordinator"]], peer=spiffe("fl-coordinator"))
    try:
        yield fl_pb2_grpc.FLCoordinatorStub(channel)
    finally:
        await channel.close()


def attest_command(env: FlEnv, *options: str) -> list[str]:
    """The development attestation agent a simulated site runs for each token (a simulated enclave by default)."""
    return [sys.executable, "-m", "privmesh.enclave.attest", "--nonce", NONCE, "--ca-dir",
            str(env.tmp / "enclave-sim"), *(options or ("--simulate",))]


def site_evidence(env: FlEnv, command: list[str]) -> NitroEvidence:
    """A site's Nitro authorizer: attestation-verifier with the site's mesh identity (alice's here)."""
    alice = env.pki.bundle("alice")
    return NitroEvidence(env.coordinator.settings.attestation_verifier_target,  # type: ignore[attr-defined]
                         spiffe("server"), alice.ca_file, alice.cert_file, alice.key_file, command=tuple(command))


def certificate_key(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_key().public_bytes(Encoding.DER,
                                                                        PublicFormat.SubjectPublicKeyInfo)


def flare_public_key(hospital: Hospital) -> bytes:
    key = serialization.load_pem_private_key(hospital.keys.flare_key_file.read_bytes(), password=None)
    return key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


async def a_kit_is_useless_without_the_sites_own_key(env: FlEnv, kit: pb.GetStartupKitResponse,
                                                     hospital: Hospital) -> None:
    """A FLARE client holding the kit but another key gets no TLS session with the real FLARE server."""
    thief = ParticipantKeys.load_or_create(env.tmp / "thief")
    thief.flare_kit_request(f"{PARENT}/participants/thief")  # makes the thief's own FLARE key
    stolen = FlareClient(kit.startup_kit, kit.site, hospital.data, env.tmp / "thief" / "flare", thief,
                         site_evidence(env, attest_command(env))).start()
    try:
        deadline = time.monotonic() + 60
        while not re.search("handshake", stolen.log_text(), re.IGNORECASE):
            assert time.monotonic() < deadline, stolen.log_text()[-3000:]
            await asyncio.sleep(1.0)
        listed = await env.stub.ListParticipants(pb.ListParticipantsRequest(parent=PARENT))
        assert not any(p.connected for p in listed.participants)
    finally:
        stolen.stop()


async def test_attested_admission_then_kits_then_a_flare_run_trains_the_model(fl_env: FlEnv) -> None:
    await fl_env.verifier.PutPolicy(apb.PutPolicyRequest(policy=apb.Policy(
        name="flare-sites", require_nonce=True,
        allowed_pcr_sets=[apb.PcrSet(pcrs=image_pcrs(DEFAULT_IMAGE), description="trainer")])))
    await fl_env.verifier.PutPolicy(apb.PutPolicyRequest(policy=apb.Policy(  # what FLARE checks, token by token
        name=FLARE_CC_POLICY, allowed_pcr_sets=[apb.PcrSet(pcrs=image_pcrs(DEFAULT_IMAGE), description="trainer")])))
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
            await fl_env.stub.GetStartupKit(hospital.keys.flare_kit_request(name))
        assert no_kit.value.code() == grpc.StatusCode.NOT_FOUND
        nonce = (await fl_env.verifier.IssueChallenge(apb.IssueChallengeRequest())).nonce
        request.attestation_document = documents[hospital.name] = nsm.attest(user_data=digest, nonce=nonce)
        admitted = (await fl_env.stub.RegisterParticipant(request)).participant
        assert admitted.flare_site == f"flare-risk_{hospital.name}" and admitted.attestation.policy == "flare-sites"
        kit = await fl_env.stub.GetStartupKit(hospital.keys.flare_kit_request(name))
        archive = zipfile.ZipFile(BytesIO(kit.startup_kit))
        assert {"startup/client.crt", "startup/rootCA.pem", "startup/fed_client.json"} <= set(archive.namelist())
        # The kit holds no key: its certificate is for the participant's own FLARE key, which never left it.
        assert not [f for f in archive.namelist() if f.endswith(".key")]
        assert certificate_key(archive.read("startup/client.crt")) == flare_public_key(hospital)
        if hospital is fl_env.hospitals[0]:
            await a_kit_is_useless_without_the_sites_own_key(fl_env, kit, hospital)
        clients[hospital.name] = FlareClient(kit.startup_kit, kit.site, hospital.data,
                                             fl_env.tmp / hospital.name / "flare", hospital.keys,
                                             site_evidence(fl_env, attest_command(fl_env))).start()
    await connected(fl_env)
    run = (await fl_env.stub.StartRun(pb.StartRunRequest(parent=PARENT))).run
    assert run.flare_job_id and not run.flower_run_id
    events = [r.event async for r in fl_env.stub.WatchRun(pb.WatchRunRequest(name=run.name), timeout=RUN_TIMEOUT)]
    ended = (await fl_env.stub.GetRun(pb.GetRunRequest(name=run.name))).run
    assert ended.state == pb.RUN_STATE_SUCCEEDED, (ended.end_message, kinds(events))
    assert ended.completed_rounds == 2 and all(r.participants_completed == 3 for r in ended.rounds)
    assert {p.participant.rsplit("/", 1)[1] for p in ended.participants} == {h.name for h in fl_env.hospitals}
    assert "accuracy" not in ended.rounds[0].metrics and ended.rounds[-1].num_examples == 90
    # DP is reported for what the FLARE workflow does: central noise on clipped updates, the same accountant.
    assert [r.epsilon for r in ended.rounds] == pytest.approx(
        [accountant.epsilon(1.0, 0.4, r, 1e-3) for r in (1, 2)])
    assert ended.privacy.epsilon == pytest.approx(ended.rounds[-1].epsilon)
    assert ended.privacy.unnoised_aggregate_seen_by.startswith("fl-coordinator FLARE workflow: every clipped update")
    # At rest the model is an envelope under the federation's key-broker key; only the decrypted view opens it.
    header, envelope = await fetch(fl_env.stub, ended.model.name, pb.MODEL_REPRESENTATION_ENCRYPTED)
    assert header.encryption.key == "aliases/fl-models" and header.encryption.encryption_context["run"] == run.name
    stored = {row[-1] for row in fl_env.rows("fl_models")}
    assert envelope in stored and all(b"\x93NUMPY" not in blob for blob in stored)
    plain, data = await fetch(fl_env.stub, ended.model.name, pb.MODEL_REPRESENTATION_DECRYPTED)
    coef, intercept = decode_arrays(plain.tensors, data)
    assert coef.shape == (6, 1) and np.abs(coef).sum() > 0 and intercept.shape == (1,)
    with pytest.raises(grpc.aio.AioRpcError) as reader:
        await fetch(fl_env.reader, ended.model.name, pb.MODEL_REPRESENTATION_DECRYPTED)
    assert reader.value.code() == grpc.StatusCode.PERMISSION_DENIED
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


async def test_a_kit_needs_the_registrant_and_the_attested_keys_endorsement(fl_env: FlEnv) -> None:
    """Who may fetch an admitted participant's kit, and what its request must prove."""
    hospital = fl_env.hospitals[0]
    name = f"{PARENT}/participants/{hospital.name}"
    before = [a for a in fl_env.audit() if a[0] == "GetStartupKit"]
    async with as_carol(fl_env) as carol:
        with pytest.raises(grpc.aio.AioRpcError) as other:  # authorized for the method, but not the registrant
            await carol.GetStartupKit(hospital.keys.flare_kit_request(name))
        assert other.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert read_error(other.value).reason == "NOT_THE_REGISTRANT"
    request = hospital.keys.flare_kit_request(name)
    someone = ParticipantKeys.load_or_create(fl_env.tmp / "someone")
    forged = pb.GetStartupKitRequest(name=name, certificate_signing_request=request.certificate_signing_request,
                                     csr_signature=someone.sign(csr_message(name, x509.load_pem_x509_csr(
                                         request.certificate_signing_request).public_bytes(Encoding.DER))))
    other_name = pb.GetStartupKitRequest(name=name, certificate_signing_request=request.certificate_signing_request,
                                         csr_signature=hospital.keys.sign(b"privmesh.fl.flare-csr.v1\nx\n"))
    for bad, field in ((forged, "csr_signature"), (other_name, "csr_signature"),
                       (pb.GetStartupKitRequest(name=name, csr_signature=request.csr_signature),
                        "certificate_signing_request"),
                       (pb.GetStartupKitRequest(name=name, certificate_signing_request=GARBLED_CSR,
                                                csr_signature=request.csr_signature), "certificate_signing_request")):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await fl_env.stub.GetStartupKit(bad)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert read_error(refused.value).violations[0].field == field
    after = [a for a in fl_env.audit() if a[0] == "GetStartupKit"]
    assert [a for a in after if a[2] == "SUCCESS"] == before  # nothing issued; carol's refusal is audited
    assert [(a[2], a[3]["reason"]) for a in after[len(before):]] == [("DENIED", "NOT_THE_REGISTRANT")]


async def test_sites_ship_their_flare_audit_logs_into_the_coordinators_audit(fl_env: FlEnv) -> None:
    """Each site's own FLARE audit.log, signed segment by segment with its attested key, lands in the audit chain
    without gaps; a changed byte, a wrong offset or another principal is refused and nothing is folded."""
    def folded() -> list[dict[str, str]]:
        return [a[3] for a in fl_env.audit() if a[0] == "FlareSiteAuditLog"]

    for hospital in fl_env.hospitals:
        name = f"{PARENT}/participants/{hospital.name}"
        report = clients[hospital.name].audit_report(name, 0)
        assert report is not None  # the run wrote the site's own audit events
        if hospital is fl_env.hospitals[0]:
            tampered = pb.ReportSiteAuditRequest()
            tampered.CopyFrom(report)
            tampered.events = report.events.replace(b"[A:", b"[a:", 1)
            for bad, code in ((tampered, grpc.StatusCode.INVALID_ARGUMENT),
                              (clients[hospital.name].audit_report(name, 1) or report,
                               grpc.StatusCode.FAILED_PRECONDITION),  # a gap: the log starts at byte 0
                              (clients[hospital.name].audit_report(f"{PARENT}/participants/{fl_env.hospitals[1].name}",
                                                                   0), grpc.StatusCode.INVALID_ARGUMENT)):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await fl_env.stub.ReportSiteAudit(bad)
                assert refused.value.code() == code, bad.name
            async with as_carol(fl_env) as carol:
                with pytest.raises(grpc.aio.AioRpcError) as other:
                    await carol.ReportSiteAudit(report)
                assert read_error(other.value).reason == "NOT_THE_REGISTRANT"
            assert folded() == []
        reply = await fl_env.stub.ReportSiteAudit(report)
        assert reply.next_byte == len(report.events)
        with pytest.raises(grpc.aio.AioRpcError) as again:  # the same segment twice would be an overlap
            await fl_env.stub.ReportSiteAudit(report)
        assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert read_error(again.value).metadata["next_byte"] == str(reply.next_byte)
        entry = folded()[-1]
        site_log = (fl_env.tmp / hospital.name / "flare" / "audit.log").read_bytes()
        assert entry["events"].encode() == site_log[:reply.next_byte] == report.events
        assert entry["sha256"] == hashlib.sha256(report.events).hexdigest() and entry["from_byte"] == "0"
        assert entry["flare_site"] == f"flare-risk_{hospital.name}" and "[A:" in entry["events"]
    assert len(folded()) == len(fl_env.hospitals)
    # What `privmesh participant start-flare --coordinator` runs: a shipper that starts without knowing the
    # coordinator's offset resynchronizes, then ships only what is new, so each site's folded log has no gap.
    alice = fl_env.pki.bundle("alice")
    target = f"127.0.0.1:{fl_env.coordinator.port}"
    channel = grpc.secure_channel(target, channel_credentials(alice.ca_file, alice.cert_file, alice.key_file),
                                  options=pinned_options(target, spiffe(COORDINATOR)))
    try:
        for hospital in fl_env.hospitals:
            name = f"{PARENT}/participants/{hospital.name}"
            shipper = SiteAuditShipper(clients[hospital.name], name, fl_pb2_grpc.FLCoordinatorStub(channel))
            end = await asyncio.to_thread(shipper.ship)
            entries = [e for e in folded() if e["flare_site"] == f"flare-risk_{hospital.name}"]
            assert [e["from_byte"] for e in entries] == ["0"] + [e["to_byte"] for e in entries[:-1]]
            site_log = (fl_env.tmp / hospital.name / "flare" / "audit.log").read_bytes()
            assert "".join(e["events"] for e in entries).encode() == site_log[:end]
            assert end == int(entries[-1]["to_byte"])
    finally:
        channel.close()


async def refused_by_flare(env: FlEnv, site: str, when: str, reason: str, seconds: float = 90.0) -> None:
    """Waits for the FLARE server's audit log to record the CC manager refusing `site` at `when` for `reason`."""
    log = env.tmp / "fl" / "flare" / "server" / "audit.log"
    deadline = time.monotonic() + seconds
    while not any(f"[U:{site}]" in line and "[A:cc.refused]" in line and when in line and reason in line
                  for line in log.read_text(errors="replace").splitlines()):
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        await asyncio.sleep(1.0)


async def test_flare_refuses_sites_whose_evidence_is_replayed_or_wrong_and_audits_it(fl_env: FlEnv) -> None:
    """An admitted site still needs fresh Nitro evidence for FLARE: at registration and again for each job."""
    keys = ParticipantKeys.load_or_create(fl_env.tmp / "rogue")
    name, site = f"{PARENT}/participants/rogue", "flare-risk_rogue"
    nonce = (await fl_env.verifier.IssueChallenge(apb.IssueChallengeRequest())).nonce
    admitting = SimulatedNsm(fl_env.enclave_ca).attest(user_data=parse_public_key(
        keys.public_key_pem(), pb.PUBLIC_KEY_FORMAT_PEM).digest, nonce=nonce)
    await fl_env.stub.RegisterParticipant(pb.RegisterParticipantRequest(
        parent=PARENT, participant_id="rogue", public_key=keys.public_key_pem(),
        public_key_format=pb.PUBLIC_KEY_FORMAT_PEM, attestation_document=admitting))
    kit = await fl_env.stub.GetStartupKit(keys.flare_kit_request(name))
    used = fl_env.tmp / "rogue" / "used-document"
    used.write_bytes(admitting)  # its challenge is spent: the admission consumed it
    image = fl_env.tmp / "rogue" / "image"
    image.write_text(DEFAULT_IMAGE)
    switching = ["sh", "-c", 'exec "$0" -m privmesh.enclave.attest --nonce "$1" --simulate --ca-dir "$2" '
                 '--image "$(cat "$3")"', sys.executable, NONCE, str(fl_env.tmp / "enclave-sim"), str(image)]
    cases = (("wrong-pcr", attest_command(fl_env, "--simulate", "--image", "tampered"), "PCR_MISMATCH"),
             ("replayed", ["sh", "-c", 'cat "$0"', str(used), NONCE], "NONCE_REPLAYED"))
    rogue: FlareClient | None = None
    try:
        for label, command, reason in cases:
            rogue = FlareClient(kit.startup_kit, kit.site, fl_env.hospitals[0].data, fl_env.tmp / "rogue" / label,
                                keys, site_evidence(fl_env, command)).start()
            await refused_by_flare(fl_env, site, "registration", reason)
            listed = await fl_env.stub.ListParticipants(pb.ListParticipantsRequest(parent=PARENT))
            assert not [p for p in listed.participants if p.flare_site == site and p.connected]
            rogue.stop()
        # Good evidence at registration, then the host changes: the next job's fresh evidence fails.
        rogue = FlareClient(kit.startup_kit, kit.site, fl_env.hospitals[0].data, fl_env.tmp / "rogue" / "later",
                            keys, site_evidence(fl_env, switching)).start()
        await connected(fl_env)
        image.write_text("tampered")
        run = (await fl_env.stub.StartRun(pb.StartRunRequest(parent=PARENT))).run
        await refused_by_flare(fl_env, site, f"job {run.flare_job_id}", "PCR_MISMATCH")
        assert (await fl_env.stub.GetRun(pb.GetRunRequest(name=run.name))).run.completed_rounds == 0
        stopped = (await fl_env.stub.StopRun(pb.StopRunRequest(name=run.name))).run
        assert stopped.state == pb.RUN_STATE_STOPPED and stopped.completed_rounds == 0
        # The refusals reach the coordinator's audit chain with FLARE's own audit log.
        folded = ",".join(a[3]["actions"] for a in fl_env.audit() if a[0] == "FlareAuditLog")
        assert "cc.refused" in folded
    finally:
        if rogue is not None:
            rogue.stop()
        await fl_env.stub.RemoveParticipant(pb.RemoveParticipantRequest(name=name))


async def test_a_removed_sites_kit_stops_working(fl_env: FlEnv) -> None:
    gone = fl_env.hospitals[0]
    name = f"{PARENT}/participants/{gone.name}"
    kit = await fl_env.stub.GetStartupKit(gone.keys.flare_kit_request(name))
    await fl_env.stub.RemoveParticipant(pb.RemoveParticipantRequest(name=name))
    clients.pop(gone.name).stop()
    with pytest.raises(grpc.aio.AioRpcError) as replayed:  # its admitting document cannot admit it again
        await fl_env.stub.RegisterParticipant(pb.RegisterParticipantRequest(
            parent=PARENT, participant_id=gone.name, public_key=gone.keys.public_key_pem(),
            public_key_format=pb.PUBLIC_KEY_FORMAT_PEM, attestation_document=documents[gone.name]))
    assert read_error(replayed.value).reason == "ATTESTATION_REJECTED"
    assert "NONCE_REPLAYED" in read_error(replayed.value).metadata["refusals"]
    retry = FlareClient(kit.startup_kit, kit.site, gone.data, fl_env.tmp / gone.name / "flare-again",
                        gone.keys, site_evidence(fl_env, attest_command(fl_env))).start()
    try:
        deadline = time.monotonic() + 60
        while "disabled" not in retry.log_text() and "unauthenticated" not in retry.log_text().lower():
            assert time.monotonic() < deadline, retry.log_text()[-3000:]
            await asyncio.sleep(1.0)
        listed = await fl_env.stub.ListParticipants(pb.ListParticipantsRequest(parent=PARENT))
        assert [p.flare_site for p in listed.participants] == [f"flare-risk_{h.name}" for h in fl_env.hospitals[1:]]
        with pytest.raises(grpc.aio.AioRpcError) as no_kit:
            await fl_env.stub.GetStartupKit(gone.keys.flare_kit_request(name))
        assert no_kit.value.code() == grpc.StatusCode.NOT_FOUND
        shipped = fl_env.tmp / "fl" / "flare" / "site-audit" / f"flare-risk_{gone.name}"
        assert shipped.read_text() == "0"  # a participant registered again under the name starts a new log
    finally:
        retry.stop()
        for client in clients.values():
            client.stop()


def authorizer(env: FlEnv, policy: str, command: list[str]) -> NitroAuthorizer:
    """A Nitro authorizer as a site and the coordinator's FLARE server configure it (alice's mesh identity)."""
    e = site_evidence(env, command)
    return NitroAuthorizer(e.verifier_target, e.verifier_identity, policy, str(e.ca_file), str(e.cert_file),
                           str(e.key_file), list(e.command))


async def test_the_nitro_authorizer_makes_fresh_evidence_and_refuses_replays(fl_env: FlEnv) -> None:
    await fl_env.verifier.PutPolicy(apb.PutPolicyRequest(policy=apb.Policy(
        name="authorizer-enclave", allowed_pcr_sets=[apb.PcrSet(pcrs=image_pcrs(DEFAULT_IMAGE))])))
    await fl_env.verifier.PutPolicy(apb.PutPolicyRequest(policy=apb.Policy(
        name="authorizer-stale", require_nonce=False, allowed_pcr_sets=[apb.PcrSet(pcrs=image_pcrs(DEFAULT_IMAGE))])))
    site = authorizer(fl_env, "authorizer-enclave", attest_command(fl_env))
    assert site.get_namespace() == "x-aws-nitro"
    token = await asyncio.to_thread(site.generate)
    assert await asyncio.to_thread(site.judge, token) == (True, "")
    # The same document again: its challenge is spent.
    assert await asyncio.to_thread(site.judge, token) == (False, "REFUSAL_REASON_NONCE_REPLAYED")
    tampered = authorizer(fl_env, "authorizer-enclave", attest_command(fl_env, "--simulate", "--image", "tampered"))
    accepted, reasons = await asyncio.to_thread(site.judge, await asyncio.to_thread(tampered.generate))
    assert not accepted and "PCR_MISMATCH" in reasons
    for bad in ("not base64!", "", token[:-8]):
        assert not await asyncio.to_thread(site.verify, bad)
    # A policy that accepts documents without a fresh challenge is refused outright (fail closed).
    lax = authorizer(fl_env, "authorizer-stale", attest_command(fl_env))
    assert await asyncio.to_thread(lax.judge, await asyncio.to_thread(lax.generate)) == (False,
                                                                                         "POLICY_ACCEPTS_REPLAYS")
    with pytest.raises(CCTokenGenerateError):  # a verifying-only side makes no tokens
        await asyncio.to_thread(authorizer(fl_env, "authorizer-enclave", []).generate)


async def test_the_nitro_authorizer_accepts_nitrotpm_documents_under_a_nitrotpm_policy(fl_env: FlEnv) -> None:
    from privmesh.enclave.nitrotpm_simulator import ami_pcrs

    pcrs = ami_pcrs("flare-site-ami")
    await fl_env.verifier.PutPolicy(apb.PutPolicyRequest(policy=apb.Policy(
        name="authorizer-tpm", kind=apb.ATTESTATION_KIND_NITRO_TPM,
        allowed_pcr_sets=[apb.PcrSet(pcrs={4: pcrs[4], 12: pcrs[12]}, description="site AMI v1")])))
    site = authorizer(fl_env, "authorizer-tpm", attest_command(fl_env, "--simulate-nitrotpm", "--ami",
                                                               "flare-site-ami"))
    assert await asyncio.to_thread(site.verify, await asyncio.to_thread(site.generate))
    for wrong in (attest_command(fl_env, "--simulate-nitrotpm", "--ami", "another-ami"), attest_command(fl_env)):
        other = authorizer(fl_env, "authorizer-tpm", wrong)  # another AMI; an enclave under a TPM policy
        assert not await asyncio.to_thread(site.verify, await asyncio.to_thread(other.generate))
