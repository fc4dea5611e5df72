"""kill -9 of a stateful service in the middle of its writes (dp-gateway in the middle of queries), then a
restart: every write the service acknowledged is still there (every token still detokenizes, every model
and key session is still served), a query's charge is never lost, and every service's audit log still
verifies against its signed head. One local mesh (own processes, mTLS)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from cryptography import x509

from privmesh.attestation.v1 import attestation_pb2 as att
from privmesh.attestation.v1 import attestation_pb2_grpc
from privmesh.demo import records
from privmesh.demo.fl_step import _federation
from privmesh.dpgateway.v1 import dpgateway_pb2 as dp
from privmesh.dpgateway.v1 import dpgateway_pb2_grpc
from privmesh.fhe.client import ClientKeys, infer, job_result, register_keys, submit_job, wait_for_job
from privmesh.fhe.model import model_file
from privmesh.fhe.v1 import fhe_pb2 as fhe
from privmesh.fhe.v1 import fhe_pb2_grpc
from privmesh.fl.v1 import fl_pb2 as fl
from privmesh.fl.v1 import fl_pb2_grpc
from privmesh.keybroker.v1 import keybroker_pb2 as kb
from privmesh.keybroker.v1 import keybroker_pb2_grpc
from privmesh.mesh.local import LocalMesh, MeshLayout
from privmesh.runtime.audit.bundle import export_bundle, verify_bundle
from privmesh.runtime.audit.trust import Trust
from privmesh.runtime.client import secure_channel
from privmesh.sdk.keybroker.client import allow
from privmesh.tokenvault.v1 import tokenvault_pb2 as tv
from privmesh.tokenvault.v1 import tokenvault_pb2_grpc

pytestmark = pytest.mark.slow
Write = Callable[[int], Awaitable[object]]
Check = Callable[[int], Awaitable[bool]]  # calls after the restart wait for the channel to reconnect
COST = 0.01  # rho per query
TENANT = "tenants/killed"
WEIGHTS, BIAS = np.array([0.5, -0.25, 1.0]), 0.1
VAULT_OPERATIONS = (kb.KEY_OPERATION_GENERATE_DATA_KEY, kb.KEY_OPERATION_DECRYPT)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    local = LocalMesh(MeshLayout(tmp_path_factory.mktemp("kill-mesh")))
    asyncio.run(local.start())
    try:
        yield local
    finally:
        local.stop()


def _channel(mesh: LocalMesh, service: str) -> grpc.aio.Channel:
    endpoint = next(e for e in mesh.endpoints if e.service == service)
    return secure_channel(endpoint.target, mesh.layout.identity("admin"), timeout_seconds=10, peer=endpoint.spiffe_id)


async def _kill_during_writes(mesh: LocalMesh, service: str, write: Write) -> list[int]:
    """Writes 0, 1, 2, ... until the service is killed (after a few acknowledged writes); restarts it;
    returns the acknowledged writes."""
    acknowledged: list[int] = []
    enough, killed = asyncio.Event(), asyncio.Event()

    async def writer() -> None:
        index = 0
        while True:
            try:
                await write(index)
                acknowledged.append(index)
                if len(acknowledged) >= 5:
                    enough.set()
            except grpc.aio.AioRpcError as exc:
                assert killed.is_set(), exc  # nothing fails before the kill
                assert exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                                      grpc.StatusCode.CANCELLED), exc
                return
            index += 1

    writing = asyncio.create_task(writer())
    await enough.wait()
    killed.set()
    os.kill(mesh.processes[service].pid, signal.SIGKILL)
    mesh.processes[service].wait()
    await writing
    await mesh.restart(service)
    return acknowledged


async def _survives(mesh: LocalMesh, service: str, write: Write, check: Check) -> None:
    acknowledged = await _kill_during_writes(mesh, service, write)
    lost = [i for i in acknowledged if not await check(i)]
    assert not lost, f"{service} lost acknowledged writes {lost} of {acknowledged}"
    databases = sorted((mesh.layout.data_dir / service).glob("*.db"))
    assert databases and all(_intact(db) for db in databases), databases  # nothing half-written


def _intact(database: Path) -> bool:
    with contextlib.closing(sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)) as conn:
        return bool(conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)])


async def test_attestation_policies_survive_kill_9(mesh: LocalMesh) -> None:
    async with _channel(mesh, "attestation-verifier") as channel:
        stub = attestation_pb2_grpc.AttestationVerifierStub(channel)

        async def write(i: int) -> object:
            policy = att.Policy(name=f"kill-{i}", allowed_pcr_sets=[att.PcrSet(pcrs={0: b"\1" * 48})])
            return await stub.PutPolicy(att.PutPolicyRequest(policy=policy))

        async def check(i: int) -> bool:
            found = await stub.GetPolicy(att.GetPolicyRequest(name=f"kill-{i}"), wait_for_ready=True)
            return bool(found.policy.name == f"kill-{i}")

        await _survives(mesh, "attestation-verifier", write, check)


async def test_key_broker_keys_survive_kill_9(mesh: LocalMesh) -> None:
    async with _channel(mesh, "key-broker") as channel:
        stub = keybroker_pb2_grpc.KeyBrokerStub(channel)

        describe = kb.KeyPolicy(statements=[allow([mesh.layout.pki.spiffe_id("admin")], [kb.KEY_OPERATION_DESCRIBE])])

        async def write(i: int) -> object:
            return await stub.CreateKey(kb.CreateKeyRequest(alias=f"kill-{i}", policy=describe))

        async def check(i: int) -> bool:
            return bool((await stub.GetKey(kb.GetKeyRequest(name=f"aliases/kill-{i}"), wait_for_ready=True)).key.name)

        await _survives(mesh, "key-broker", write, check)


async def test_federations_survive_kill_9(mesh: LocalMesh) -> None:
    async with _channel(mesh, "fl-coordinator") as channel:
        stub = fl_pb2_grpc.FLCoordinatorStub(channel)

        async def write(i: int) -> object:
            return await stub.CreateFederation(fl.CreateFederationRequest(federation_id=f"kill-{i}",
                                                                          federation=_federation()))

        async def check(i: int) -> bool:
            name = f"federations/kill-{i}"
            found = await stub.GetFederation(fl.GetFederationRequest(name=name), wait_for_ready=True)
            return bool(found.federation.name == name)

        await _survives(mesh, "fl-coordinator", write, check)


async def test_dp_gateway_charges_survive_kill_9_during_queries(mesh: LocalMesh, tmp_path: Path) -> None:
    csv = records.write_csv(tmp_path / "patients.csv", records.patients(200, seed=3))
    analyst = mesh.layout.pki.spiffe_id("admin")
    async with _channel(mesh, "dp-gateway") as channel:
        stub = dpgateway_pb2_grpc.DPGatewayStub(channel)
        columns = [dp.ColumnSchema(name="patient_id", type=dp.COLUMN_TYPE_STRING),
                   dp.ColumnSchema(name="age", type=dp.COLUMN_TYPE_INT64, bounds=dp.Bounds(lower=18, upper=90))]
        await stub.RegisterDataset(dp.RegisterDatasetRequest(dataset_id="killed", dataset=dp.Dataset(
            source=dp.DataSource(uri=str(csv)), columns=columns, privacy_unit_column="patient_id",
            max_contributions_per_unit=1, accounting=dp.PRIVACY_ACCOUNTING_ZCDP, max_rows=10_000)))
        await stub.SetBudget(dp.SetBudgetRequest(dataset="datasets/killed", analyst=analyst,
                                                 cap=dp.PrivacyLoss(rho=100.0)))
        query = dp.StructuredQuery(dataset="datasets/killed",
                                   aggregates=[dp.Aggregate(function=dp.AGGREGATE_FUNCTION_COUNT)])

        async def write(i: int) -> object:
            return await stub.Query(dp.QueryRequest(query=query, force_new_release=True, privacy=dp.PrivacySpec(
                privacy_loss=dp.PrivacyLoss(rho=COST))))

        acknowledged = await _kill_during_writes(mesh, "dp-gateway", write)
        budget = (await stub.GetBudget(dp.GetBudgetRequest(dataset="datasets/killed"), wait_for_ready=True)).budget
    # Every answered query stays charged; one killed mid-query may be charged too (its reservation), never less.
    assert len(acknowledged) * COST - 1e-9 <= budget.spent.rho <= (len(acknowledged) + 2) * COST + 1e-9
    assert budget.reserved.rho == 0


async def test_token_vault_tokens_survive_kill_9_during_tokenize(mesh: LocalMesh) -> None:
    admin = mesh.layout.pki.spiffe_id("admin")
    async with _channel(mesh, "key-broker") as broker_channel:
        policy = kb.KeyPolicy(statements=[allow([mesh.layout.pki.spiffe_id("token-vault")], VAULT_OPERATIONS)])
        await keybroker_pb2_grpc.KeyBrokerStub(broker_channel).CreateKey(
            kb.CreateKeyRequest(alias="kill-vault", policy=policy), wait_for_ready=True)
    tokens: dict[int, str] = {}
    async with _channel(mesh, "token-vault") as channel:
        stub = tokenvault_pb2_grpc.TokenVaultStub(channel)
        rules = [tv.DetokenizeRule(principals=[admin], view=tv.DETOKENIZE_VIEW_VALUE)]
        await stub.CreateField(tv.CreateFieldRequest(parent=TENANT, field_id="secret", field=tv.Field(
            profile=tv.TokenProfile(random=tv.RandomProfile()), key="aliases/kill-vault",
            detokenize_policy=tv.DetokenizePolicy(rules=rules))))

        async def write(i: int) -> object:  # random tokens: each one is a new vault entry
            reply = await stub.Tokenize(tv.TokenizeRequest(parent=TENANT, items=[
                tv.TokenizeItem(field="secret", value=f"value-{i}")]))
            tokens[i] = reply.results[0].token
            return reply

        async def check(i: int) -> bool:
            reply = await stub.Detokenize(tv.DetokenizeRequest(
                parent=TENANT, items=[tv.TokenRef(field="secret", token=tokens[i])], view=tv.DETOKENIZE_VIEW_VALUE,
                purpose="fault test"), wait_for_ready=True)
            return bool(reply.results[0].value == f"value-{i}")

        await _survives(mesh, "token-vault", write, check)


async def test_fhe_models_and_key_sessions_survive_kill_9(mesh: LocalMesh) -> None:
    linear = model_file("linear_regression", weights=WEIGHTS, bias=BIAS)  # 128-bit security (the default)
    async with _channel(mesh, "fhe-inference") as channel:
        stub = fhe_pb2_grpc.FHEInferenceStub(channel)
        model = (await stub.CreateModel(fhe.CreateModelRequest(model_id="kept", model_file=linear))).model
        keys = await asyncio.to_thread(ClientKeys.generate, model)
        session = await register_keys(stub, keys)

        async def write(i: int) -> object:
            return await stub.CreateModel(fhe.CreateModelRequest(model_id=f"kill-{i}", model_file=linear))

        async def check(i: int) -> bool:
            found = await stub.GetModel(fhe.GetModelRequest(name=f"models/kill-{i}"), wait_for_ready=True)
            return bool(found.model.weights_sha256 == model.weights_sha256)

        await _survives(mesh, "fhe-inference", write, check)
        kept = await stub.GetSession(fhe.GetSessionRequest(name=session.name), wait_for_ready=True)
        assert kept.session.model == "models/kept" and kept.session.key_parts == session.key_parts
        features = np.array([[0.2, -0.4, 0.6]])
        scores = await infer(stub, session.name, keys, features)  # its stored keys still serve inference
    assert np.allclose(scores[:, 0], features @ WEIGHTS + BIAS, atol=1e-3), scores


async def test_fhe_jobs_survive_kill_9_while_running(mesh: LocalMesh) -> None:
    """A job killed mid-run resumes after its last recorded output, and a job queued behind it runs too: both
    succeed and every output decrypts to the model's value."""
    linear = model_file("linear_regression", weights=WEIGHTS, bias=BIAS)
    features = np.array([[0.2, -0.4, 0.6], [0.1, 0.3, -0.5]])
    async with _channel(mesh, "fhe-inference") as channel:
        stub = fhe_pb2_grpc.FHEInferenceStub(channel)
        model = (await stub.CreateModel(fhe.CreateModelRequest(model_id="jobs", model_file=linear))).model
        keys = await asyncio.to_thread(ClientKeys.generate, model)
        session = await register_keys(stub, keys)
        ciphertext = await asyncio.to_thread(keys.encrypt, keys.preprocess(features))
        running = await submit_job(stub, session.name, [(ciphertext, 2)] * 30)
        queued = await submit_job(stub, session.name, [(ciphertext, 2)] * 2)
        for _ in range(1200):
            seen = (await stub.GetJob(fhe.GetJobRequest(name=running.name))).job
            if seen.completed_input_count >= 1:
                break
            await asyncio.sleep(0.05)
        assert seen.state == fhe.JOB_STATE_RUNNING and 1 <= seen.completed_input_count < 30, seen
        os.kill(mesh.processes["fhe-inference"].pid, signal.SIGKILL)
        mesh.processes["fhe-inference"].wait()
        await mesh.restart("fhe-inference")
        await stub.GetJob(fhe.GetJobRequest(name=running.name), wait_for_ready=True)
        for job, count in ((running, 30), (queued, 2)):
            done = await wait_for_job(stub, job.name, poll_seconds=0.2, progress=False, timeout=300)
            assert done.completed_input_count == count
            outputs = await job_result(stub, job.name)
            assert len(outputs) == count
            for output in outputs:
                scores = await asyncio.to_thread(keys.decrypt, output, 2)
                assert np.allclose(scores[:, 0], keys.preprocess(features) @ WEIGHTS + BIAS, atol=1e-3), scores
        assert done.attempt_count == 1
        assert (await stub.GetJob(fhe.GetJobRequest(name=running.name))).job.attempt_count == 2  # resumed


async def test_every_audit_log_verifies_after_the_kills(mesh: LocalMesh) -> None:
    targets = {e.service: (e.target, e.spiffe_id) for e in mesh.endpoints}
    bundle = await export_bundle(targets, mesh.layout.identity("auditor"))
    trust = Trust(roots=x509.load_pem_x509_certificates(mesh.layout.pki.ca_file.read_bytes()))
    verdicts = verify_bundle(bundle, trust, [e.service for e in mesh.endpoints])
    assert [v.service for v in verdicts if not v.ok] == [], verdicts
    assert len(verdicts) == 6
