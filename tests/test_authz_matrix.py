"""The authorization matrix, generated from the contracts (issue 25).

Every method of every service in protos/ is called over mTLS against the real servers, as:
  (a) an identity with no rule at all;
  (b) an identity whose rules allow the method on other resources only (or, for a resource the server resolves,
      an identity that holds it but whose rule names other resources);
  (c) an identity allowed the method on every resource but no stronger view, asking for that view.
Each call is refused with PERMISSION_DENIED, or (List methods) returns only what the rule covers; nothing in the
reply names the target resources, and the services' stored state is byte for byte what it was. CASES must hold
exactly the contracts' methods, so a new method fails here until it has a declaration and a case.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message

from privmesh.attestation import server as attestation_server
from privmesh.attestation.v1 import attestation_pb2 as av
from privmesh.common.v1 import common_pb2 as cm
from privmesh.demo import records
from privmesh.dpgateway import server as dp_server
from privmesh.dpgateway.v1 import dpgateway_pb2 as dp
from privmesh.fhe import server as fhe_server
from privmesh.fhe.client import ClientKeys, register_keys, submit_job
from privmesh.fhe.v1 import fhe_pb2 as fh
from privmesh.fhe.v1 import fhe_pb2_grpc
from privmesh.fl import server as fl_server
from privmesh.fl.v1 import fl_pb2 as fl
from privmesh.fl.v1 import reporter_pb2 as rp
from privmesh.keybroker import server as keybroker_server
from privmesh.keybroker.policy import ADMIN_OPERATIONS
from privmesh.keybroker.v1 import keybroker_pb2 as kb
from privmesh.runtime.access import Declaration
from privmesh.runtime.client import secure_channel
from privmesh.runtime.errors import read_error
from privmesh.runtime.pki import DevPki
from privmesh.runtime.ports import free_loopback_port
from privmesh.sdk.keybroker.client import CRYPTO_OPERATIONS, KeyBrokerClient, allow
from privmesh.tokenvault import server as tokenvault_server
from privmesh.tokenvault.v1 import tokenvault_pb2 as tv
from tests.conftest import identity, server_config, spiffe
from tests.dpgateway.conftest import count_query, patients_dataset
from tests.fhe.conftest import fhe_settings
from tests.fl.test_coordinator import federation
from tests.keybroker.conftest import broker_settings

CONTRACTS = (av, cm, dp, fh, fl, rp, kb, tv)
METHODS: dict[str, MethodDescriptor] = {
    f"{service.full_name}/{method.name}": method
    for module in CONTRACTS for service in module.DESCRIPTOR.services_by_name.values() for method in service.methods}
NONE, OTHER, NOVIEW, HOLDER, OWNER = "mx-none", "mx-other", "mx-noview", "mx-holder", "alice"
# What the (b) identity's rules cover: resources named "other", never the targets below.
OTHER_RESOURCES = ["policies/other", "datasets/other", "datasets/other:analysts", "tenants/other/**",
                   "tenants/other/fields/*:plaintext", "models/other", "federations/other/**",
                   "federations/other/runs/*/model:decrypted", "keys/00000000-0000-0000-0000-000000000000"]
VIEWS = ["datasets/*:analysts", "tenants/*/fields/*:plaintext", "federations/*/runs/*/model:decrypted"]


@dataclass
class Targets:
    """The resources the owner created, which (b) and (c) must never reach."""

    names: list[str] = field(default_factory=list)  # strings a (b) reply must not carry
    view_names: list[str] = field(default_factory=list)  # strings a (c) reply must not carry
    values: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]


Build = Callable[[Targets], Any]


@dataclass(frozen=True)
class Case:
    """How (b) and (c) call a method. other: the request naming the target (None: service-wide, the method rule
    alone decides, so (a) is its case); lists: (b) answers with the covered items instead of refusing;
    holder: (b) is played by an identity that holds the resolved resource; view: the (c) request."""

    other: Build | None
    lists: bool = False
    holder: bool = False
    view: Build | None = None


def wide() -> Case:
    return Case(None)


def listing() -> Case:
    return Case(lambda t: None, lists=True)


ATT, AUD, DPG, FHE = ("privmesh.attestation.v1.AttestationVerifier", "privmesh.common.v1.AuditLog",
                      "privmesh.dpgateway.v1.DPGateway", "privmesh.fhe.v1.FHEInference")
AWI = "privmesh.common.v1.AuditWitness"
FLC, FLR, KBR, TVA = ("privmesh.fl.v1.FLCoordinator", "privmesh.fl.v1.FLRunReporter", "privmesh.keybroker.v1.KeyBroker",
                      "privmesh.tokenvault.v1.TokenVault")
_RHO = dp.PrivacySpec(privacy_loss=dp.PrivacyLoss(rho=0.1))
_POLICY = av.Policy(name="target", allowed_pcr_sets=[av.PcrSet(pcrs={0: b"\1" * 48})])
CASES: dict[str, Case] = {
    f"{ATT}/IssueChallenge": wide(),
    f"{ATT}/VerifyAttestation": Case(lambda t: av.VerifyAttestationRequest(policy="target", document=b"\0")),
    f"{ATT}/PutPolicy": Case(lambda t: av.PutPolicyRequest(policy=_POLICY)),
    f"{ATT}/GetPolicy": Case(lambda t: av.GetPolicyRequest(name="target")),
    f"{ATT}/ListPolicies": listing(),
    f"{ATT}/DeletePolicy": Case(lambda t: av.DeletePolicyRequest(name="target")),
    f"{ATT}/ListVerificationResults": listing(),
    f"{ATT}/GetVerificationKeys": wide(),
    f"{AUD}/ListAuditEntries": wide(),
    f"{AUD}/ListAuditCheckpoints": wide(),
    f"{AUD}/GetAuditHead": wide(),
    f"{AUD}/GetAuditReceipt": wide(),
    f"{AUD}/ListTreeCheckpoints": wide(),
    f"{AUD}/GetConsistencyProof": wide(),
    f"{AUD}/ListWitnessedCheckpoints": wide(),
    f"{AWI}/AddCheckpoint": wide(),
    f"{DPG}/RegisterDataset": Case(lambda t: dp.RegisterDatasetRequest(dataset_id="target", dataset=t["schema"])),
    f"{DPG}/GetDataset": Case(lambda t: dp.GetDatasetRequest(name="datasets/target")),
    f"{DPG}/ListDatasets": listing(),
    f"{DPG}/DeleteDataset": Case(lambda t: dp.DeleteDatasetRequest(name="datasets/target")),
    f"{DPG}/Query": Case(lambda t: dp.QueryRequest(query=count_query("datasets/target"), privacy=_RHO)),
    f"{DPG}/QuerySql": Case(lambda t: dp.QuerySqlRequest(sql="SELECT COUNT(*) FROM target", privacy=_RHO)),
    f"{DPG}/SetBudget": Case(lambda t: dp.SetBudgetRequest(dataset="datasets/target", analyst=spiffe(OTHER),
                                                           cap=dp.PrivacyLoss(rho=9.0))),
    f"{DPG}/GetBudget": Case(lambda t: dp.GetBudgetRequest(dataset="datasets/target"),
                             view=lambda t: dp.GetBudgetRequest(dataset="datasets/target", analyst=spiffe(OWNER))),
    f"{DPG}/ListLedger": Case(lambda t: None, lists=True, view=lambda t: dp.ListLedgerRequest()),
    f"{FHE}/ListModels": listing(),
    f"{FHE}/GetModel": Case(lambda t: fh.GetModelRequest(name="models/linear")),
    f"{FHE}/RegisterKeys": Case(lambda t: [fh.RegisterKeysRequest(
        header=fh.RegisterKeysHeader(model="models/linear"))]),
    f"{FHE}/GetSession": Case(lambda t: fh.GetSessionRequest(name=t["session"]), holder=True),
    f"{FHE}/DeleteSession": Case(lambda t: fh.DeleteSessionRequest(name=t["session"]), holder=True),
    f"{FHE}/CreateModel": Case(lambda t: fh.CreateModelRequest(model_id="linear", model_file=b"{}")),
    f"{FHE}/DeleteModel": Case(lambda t: fh.DeleteModelRequest(name="models/linear")),
    f"{FHE}/Infer": Case(lambda t: [fh.InferRequest(start=fh.InferStart(session=t["session"]))], holder=True),
    f"{FHE}/SubmitJob": Case(lambda t: [fh.SubmitJobRequest(start=fh.JobStart(session=t["session"], input_count=1))],
                             holder=True),
    f"{FHE}/GetJob": Case(lambda t: fh.GetJobRequest(name=t["job"]), holder=True),
    f"{FHE}/ListJobs": Case(lambda t: None, lists=True, holder=True),
    f"{FHE}/GetJobResult": Case(lambda t: fh.GetJobResultRequest(name=t["job"]), holder=True),
    f"{FHE}/CancelJob": Case(lambda t: fh.CancelJobRequest(name=t["job"]), holder=True),
    f"{FLC}/CreateFederation": Case(lambda t: fl.CreateFederationRequest(federation_id="target")),
    f"{FLC}/GetFederation": Case(lambda t: fl.GetFederationRequest(name="federations/target")),
    f"{FLC}/ListFederations": listing(),
    f"{FLC}/RegisterParticipant": Case(lambda t: fl.RegisterParticipantRequest(parent="federations/target",
                                                                               participant_id="p")),
    f"{FLC}/ListParticipants": Case(lambda t: fl.ListParticipantsRequest(parent="federations/target")),
    f"{FLC}/RemoveParticipant": Case(lambda t: fl.RemoveParticipantRequest(name="federations/target/participants/p")),
    f"{FLC}/GetStartupKit": Case(lambda t: fl.GetStartupKitRequest(name="federations/target/participants/p")),
    f"{FLC}/ReportSiteAudit": Case(lambda t: fl.ReportSiteAuditRequest(name="federations/target/participants/p")),
    f"{FLC}/StartRun": Case(lambda t: fl.StartRunRequest(parent="federations/target")),
    f"{FLC}/GetRun": Case(lambda t: fl.GetRunRequest(name="federations/target/runs/r1")),
    f"{FLC}/ListRuns": Case(lambda t: fl.ListRunsRequest(parent="federations/target")),
    f"{FLC}/StopRun": Case(lambda t: fl.StopRunRequest(name="federations/target/runs/r1")),
    f"{FLC}/WatchRun": Case(lambda t: fl.WatchRunRequest(name="federations/target/runs/r1")),
    f"{FLC}/GetModel": Case(lambda t: fl.GetModelRequest(name="federations/target/runs/r1/model"),
                            view=lambda t: fl.GetModelRequest(name="federations/target/runs/r1/model",
                                                              representation=fl.MODEL_REPRESENTATION_DECRYPTED)),
    f"{FLR}/ReportRun": wide(),
    f"{FLR}/UploadModel": wide(),
    f"{KBR}/CreateKey": wide(),
    f"{KBR}/GetKey": Case(lambda t: kb.GetKeyRequest(name=t["key"])),
    f"{KBR}/ListKeys": listing(),
    f"{KBR}/UpdateKey": Case(lambda t: kb.UpdateKeyRequest(key=kb.Key(name=t["key"], description="x"),
                                                            update_mask=FieldMask(paths=["description"]))),
    f"{KBR}/RotateKey": Case(lambda t: kb.RotateKeyRequest(name=t["key"])),
    f"{KBR}/ListKeyVersions": Case(lambda t: kb.ListKeyVersionsRequest(key=t["key"])),
    f"{KBR}/EnableKey": Case(lambda t: kb.EnableKeyRequest(name=t["key"])),
    f"{KBR}/DisableKey": Case(lambda t: kb.DisableKeyRequest(name=t["key"])),
    f"{KBR}/ScheduleKeyDeletion": Case(lambda t: kb.ScheduleKeyDeletionRequest(name=t["key"])),
    f"{KBR}/CancelKeyDeletion": Case(lambda t: kb.CancelKeyDeletionRequest(name=t["key"])),
    f"{KBR}/GetImportParameters": Case(lambda t: kb.GetImportParametersRequest(key=t["key"])),
    f"{KBR}/ImportKeyMaterial": Case(lambda t: kb.ImportKeyMaterialRequest(key=t["key"], import_token=b"x",
                                                                           encrypted_key_material=b"x")),
    f"{KBR}/DeleteImportedKeyMaterial": Case(lambda t: kb.DeleteImportedKeyMaterialRequest(key=t["key"])),
    f"{KBR}/PutKeyPolicy": Case(lambda t: kb.PutKeyPolicyRequest(key=t["key"], policy=t["key_policy"])),
    f"{KBR}/GetKeyPolicy": Case(lambda t: kb.GetKeyPolicyRequest(key=t["key"])),
    f"{KBR}/GenerateDataKey": Case(lambda t: kb.GenerateDataKeyRequest(key=t["key"])),
    f"{KBR}/GenerateDataKeyWithoutPlaintext": Case(lambda t: kb.GenerateDataKeyWithoutPlaintextRequest(key=t["key"])),
    f"{KBR}/Decrypt": Case(lambda t: kb.DecryptRequest(ciphertext_blob=t["blob"])),
    f"{KBR}/ReEncrypt": Case(lambda t: kb.ReEncryptRequest(ciphertext_blob=t["blob"], destination_key=t["key"])),
    f"{KBR}/EncryptMessage": Case(lambda t: kb.EncryptMessageRequest(key=t["key"], plaintext=b"x")),
    f"{KBR}/DecryptMessage": Case(lambda t: kb.DecryptMessageRequest(ciphertext=t["message"])),
    f"{TVA}/CreateField": Case(lambda t: tv.CreateFieldRequest(parent="tenants/target", field_id="g",
                                                               field=t["field"])),
    f"{TVA}/GetField": Case(lambda t: tv.GetFieldRequest(name="tenants/target/fields/f")),
    f"{TVA}/ListFields": Case(lambda t: tv.ListFieldsRequest(parent="tenants/-"), lists=True),
    f"{TVA}/UpdateField": Case(lambda t: tv.UpdateFieldRequest(field=tv.Field(name="tenants/target/fields/f"),
                                                               update_mask=FieldMask(paths=["description"]))),
    f"{TVA}/DeleteField": Case(lambda t: tv.DeleteFieldRequest(name="tenants/target/fields/f", force=True)),
    f"{TVA}/Tokenize": Case(lambda t: tv.TokenizeRequest(parent="tenants/target",
                                                         items=[tv.TokenizeItem(field="f", value="v")])),
    f"{TVA}/Detokenize": Case(lambda t: tv.DetokenizeRequest(parent="tenants/target", items=[t["ref"]]),
                              view=lambda t: tv.DetokenizeRequest(parent="tenants/target", items=[t["ref"]],
                                                                  view=tv.DETOKENIZE_VIEW_VALUE)),
    f"{TVA}/DeleteTokens": Case(lambda t: tv.DeleteTokensRequest(parent="tenants/target", items=[t["ref"]])),
    f"{TVA}/ForgetSubject": Case(lambda t: tv.ForgetSubjectRequest(parent="tenants/target", subject_id="s")),
    f"{TVA}/RotateKeys": Case(lambda t: tv.RotateKeysRequest(parent="tenants/target")),
    f"{TVA}/GetRotation": Case(lambda t: tv.GetRotationRequest(name="tenants/target/rotations/r1")),
    f"{TVA}/ListRotations": Case(lambda t: tv.ListRotationsRequest(parent="tenants/target")),
    f"{TVA}/CancelRotation": Case(lambda t: tv.CancelRotationRequest(name="tenants/target/rotations/r1")),
}


def test_every_method_of_the_contracts_has_a_declaration_and_a_case() -> None:
    assert set(CASES) == set(METHODS)
    for name, method in METHODS.items():
        declared = Declaration.of(method)  # raises for a method without the option
        case = CASES[name]
        assert (case.other is None) == declared.service_wide, f"{name}: the case and the declaration disagree"
        assert (case.view is not None) == any(":" in t.text for t in (*declared.request, *declared.item)), name


# --- calling any method of the contracts -------------------------------------------------------------------------

async def invoke(channel: grpc.aio.Channel, method: MethodDescriptor, request: Any) -> list[Message]:
    """Calls `method` with `request` (a list of messages for a client stream); returns every reply message."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    reply = message_factory.GetMessageClass(method.output_type)
    if request is None:
        empty = message_factory.GetMessageClass(method.input_type)()
        request = [empty] if method.client_streaming else empty
    args = (path, lambda m: m.SerializeToString(), reply.FromString)
    if method.client_streaming:
        async def stream() -> AsyncIterator[Message]:
            for item in request:
                yield item

        if method.server_streaming:
            return [m async for m in channel.stream_stream(*args)(stream())]
        return [await channel.stream_unary(*args)(stream())]
    if method.server_streaming:
        return [m async for m in channel.unary_stream(*args)(request)]
    return [await channel.unary_unary(*args)(request)]


def state_of(root: Path) -> dict[str, list[str]]:
    """Every row of every service database under `root` (audit logs aside), and the files of key stores."""
    found: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*.db")):
        if path.name == "audit.db" or "superlink" in path.parts:
            continue
        with sqlite3.connect(path) as conn:
            found[str(path)] = list(conn.iterdump())
    for path in sorted(root.rglob("keys/*")):
        found[str(path)] = [path.name]
    return found


@dataclass
class Harness:
    root: Path
    services: tuple[str, ...]
    channels: dict[str, grpc.aio.Channel]
    targets: Targets

    async def check(self, name: str) -> None:
        method, case = METHODS[name], CASES[name]
        before = state_of(self.root)
        await self._refused(NONE, method, case.other(self.targets) if case.other else None)
        if case.other is not None:
            who = HOLDER if case.holder else OTHER
            if case.lists:
                await self._only_covered(who, method, case.other(self.targets), self.targets.names)
            else:
                await self._refused(who, method, case.other(self.targets))
        if case.view is not None:
            if case.lists:
                await self._only_covered(NOVIEW, method, case.view(self.targets), self.targets.view_names)
            else:
                await self._refused(NOVIEW, method, case.view(self.targets))
        assert state_of(self.root) == before, f"{name}: a refused call changed stored state"

    async def _refused(self, who: str, method: MethodDescriptor, request: Any) -> None:
        name = f"{method.containing_service.full_name}/{method.name}"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await invoke(self.channels[who], method, request)
        error = read_error(caught.value)
        assert error.code == grpc.StatusCode.PERMISSION_DENIED, f"{name} as {who}: {error.code} {error.message}"

    async def _only_covered(self, who: str, method: MethodDescriptor, request: Any, hidden: list[str]) -> None:
        replies = await invoke(self.channels[who], method, request)
        text = b"".join(r.SerializeToString() for r in replies)
        leaked = [n for n in hidden if n.encode() in text]
        assert not leaked, f"{method.full_name} as {who} named {leaked}"


def policy(services: tuple[str, ...], extra: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    own = [f"{s}/*" for s in services]
    return [
        {"name": "owner", "principals": [spiffe(OWNER)], "methods": ["*"]},
        {"name": "owner-views", "principals": [spiffe(OWNER)], "methods": ["*"], "resources": VIEWS},
        {"name": "other-resources", "principals": [spiffe(OTHER)], "methods": own, "resources": OTHER_RESOURCES},
        {"name": "no-views", "principals": [spiffe(NOVIEW)], "methods": own},
        *(extra or []),
    ]


@pytest.fixture(scope="module")
def identities(pki: DevPki) -> DevPki:
    for name in (NONE, OTHER, NOVIEW, HOLDER, "mx-coordinator"):
        pki.issue(name)
    return pki


@pytest.fixture
async def open_channels(identities: DevPki) -> AsyncIterator[Callable[..., dict[str, grpc.aio.Channel]]]:
    opened: list[grpc.aio.Channel] = []

    def open_(target: str, server: str = "server") -> dict[str, grpc.aio.Channel]:
        channels = {who: secure_channel(target, identity(identities, who), timeout_seconds=30, peer=spiffe(server))
                    for who in (NONE, OTHER, NOVIEW, HOLDER, OWNER)}
        opened.extend(channels.values())
        return channels

    yield open_
    for channel in opened:
        await channel.close()


def methods_of(*services: str) -> Iterator[str]:
    return (name for name in METHODS if name.split("/")[0] in services)


async def run_cases(harness: Harness, services: tuple[str, ...]) -> None:
    for name in methods_of(*services):
        await harness.check(name)


# --- one test per server: it starts the real server(s), lets the owner create the targets, runs every case -------

async def test_attestation_verifier_and_audit_log(start_server, tmp_path: Path, identities: DevPki,  # type: ignore[no-untyped-def]
                                                  open_channels) -> None:
    services = (ATT, AUD, AWI)
    settings = {"database": f"sqlite:///{tmp_path / 'attestation.db'}",
                "token_signing_key_file": str(tmp_path / "token.pem")}
    server = await start_server(attestation_server.DEFINITION,
                                server_config(tmp_path, identities, policy(services[:1]), settings))
    channels = open_channels(f"127.0.0.1:{server.port}")
    await invoke(channels[OWNER], METHODS[f"{ATT}/PutPolicy"], av.PutPolicyRequest(policy=_POLICY))
    await run_cases(Harness(tmp_path, services, channels, Targets(["target"])), services)


async def test_key_broker(start_server, tmp_path: Path, identities: DevPki, open_channels) -> None:  # type: ignore[no-untyped-def]
    services = (KBR,)
    server = await start_server(keybroker_server.DEFINITION,
                                server_config(tmp_path, identities, policy(services), broker_settings(tmp_path)))
    channels = open_channels(f"127.0.0.1:{server.port}")
    everyone = [spiffe(w) for w in (OWNER, OTHER, NOVIEW)]
    key_policy = kb.KeyPolicy(statements=[allow(everyone, [*ADMIN_OPERATIONS, *CRYPTO_OPERATIONS], "all")])
    owner = KeyBrokerClient(channels[OWNER])
    key = await owner.create_key(alias="target", policy=key_policy)
    blob = (await invoke(channels[OWNER], METHODS[f"{KBR}/GenerateDataKey"], kb.GenerateDataKeyRequest(key=key.name)))
    message = await invoke(channels[OWNER], METHODS[f"{KBR}/EncryptMessage"],
                           kb.EncryptMessageRequest(key=key.name, plaintext=b"secret"))
    targets = Targets([key.name.split("/")[1], "target"], [], {
        "key": key.name, "key_policy": key_policy, "blob": blob[0].ciphertext_blob,  # type: ignore[attr-defined]
        "message": message[0].ciphertext})  # type: ignore[attr-defined]
    await run_cases(Harness(tmp_path, services, channels, targets), services)


async def test_token_vault(start_server, tmp_path: Path, identities: DevPki, open_channels) -> None:  # type: ignore[no-untyped-def]
    services = (TVA,)
    kb_dir, tv_dir = tmp_path / "kb", tmp_path / "tv"
    kb_dir.mkdir()
    tv_dir.mkdir()
    kb_rules = [{"name": "vault", "principals": [spiffe("server"), spiffe(OWNER)], "methods": [f"{KBR}/*"]}]
    broker = await start_server(keybroker_server.DEFINITION,
                                server_config(kb_dir, identities, kb_rules, broker_settings(kb_dir)))
    async with secure_channel(f"127.0.0.1:{broker.port}", identity(identities, OWNER),
                              peer=spiffe("server")) as kb_channel:
        await KeyBrokerClient(kb_channel).create_key(alias="vault", policy=kb.KeyPolicy(statements=[
            allow([spiffe("server"), spiffe(OWNER)], [*ADMIN_OPERATIONS, *CRYPTO_OPERATIONS], "vault")]))
    settings = {"database": f"sqlite:///{tv_dir / 'vault.db'}", "key_broker_target": f"127.0.0.1:{broker.port}",
                "key_broker_identity": spiffe("server")}
    vault = await start_server(tokenvault_server.DEFINITION,
                               server_config(tv_dir, identities, policy(services), settings))
    channels = open_channels(f"127.0.0.1:{vault.port}")
    everyone = [spiffe(w) for w in (OWNER, OTHER, NOVIEW)]
    field_ = tv.Field(profile=tv.TokenProfile(random=tv.RandomProfile()), key="aliases/vault",
                      detokenize_policy=tv.DetokenizePolicy(rules=[tv.DetokenizeRule(
                          principals=everyone, view=tv.DETOKENIZE_VIEW_VALUE)]))
    await invoke(channels[OWNER], METHODS[f"{TVA}/CreateField"],
                 tv.CreateFieldRequest(parent="tenants/target", field_id="f", field=field_))
    [tokens] = await invoke(channels[OWNER], METHODS[f"{TVA}/Tokenize"], tv.TokenizeRequest(
        parent="tenants/target", items=[tv.TokenizeItem(field="f", value="the-plaintext-4921")]))
    token = tokens.results[0].token  # type: ignore[attr-defined]
    targets = Targets(["tenants/target", "the-plaintext", token], [], {
        "field": field_, "ref": tv.TokenRef(field="f", token=token)})
    await run_cases(Harness(tv_dir, services, channels, targets), services)
    # (c) without ":plaintext", even a field policy granting VALUE yields the mask on an unspecified view.
    [reply] = await invoke(channels[NOVIEW], METHODS[f"{TVA}/Detokenize"],
                           tv.DetokenizeRequest(parent="tenants/target", items=[targets["ref"]]))
    assert [(r.value, r.view) for r in reply.results] == [  # type: ignore[attr-defined]
        ("***-*********-4921", tv.DETOKENIZE_VIEW_MASKED)]


async def test_dp_gateway(start_server, tmp_path: Path, identities: DevPki, open_channels) -> None:  # type: ignore[no-untyped-def]
    services = (DPG,)
    patients_csv = records.write_csv(tmp_path / "patients.csv", records.patients(50, seed=7))
    settings = {"database": f"sqlite:///{tmp_path / 'dpgateway.db'}", "cache_dir": str(tmp_path / "cache")}
    server = await start_server(dp_server.DEFINITION, server_config(tmp_path, identities, policy(services), settings))
    channels = open_channels(f"127.0.0.1:{server.port}")
    schema = patients_dataset(str(patients_csv))
    await invoke(channels[OWNER], METHODS[f"{DPG}/RegisterDataset"],
                 dp.RegisterDatasetRequest(dataset_id="target", dataset=schema))
    for who in (OWNER, OTHER, NOVIEW):
        await invoke(channels[OWNER], METHODS[f"{DPG}/SetBudget"], dp.SetBudgetRequest(
            dataset="datasets/target", analyst=spiffe(who), cap=dp.PrivacyLoss(rho=5.0)))
    await invoke(channels[OWNER], METHODS[f"{DPG}/Query"],
                 dp.QueryRequest(query=count_query("datasets/target"), privacy=_RHO))
    # (b) must not see the dataset at all; (c) sees it and its own entry, but no other analyst's.
    targets = Targets(["datasets/target", spiffe(OWNER)], [spiffe(OTHER)], {"schema": schema})
    harness = Harness(tmp_path, services, channels, targets)
    await run_cases(harness, services)


async def test_fhe_inference(start_server, tmp_path: Path, identities: DevPki, open_channels) -> None:  # type: ignore[no-untyped-def]
    services = (FHE,)
    holder = [
        {"name": "holder-keys", "principals": [spiffe(HOLDER)],
         "methods": [f"{FHE}/RegisterKeys", f"{FHE}/GetModel"]},
        {"name": "holder-sessions", "principals": [spiffe(HOLDER)],
         "methods": [f"{FHE}/GetSession", f"{FHE}/DeleteSession", f"{FHE}/Infer", f"{FHE}/SubmitJob", f"{FHE}/GetJob",
                     f"{FHE}/ListJobs", f"{FHE}/GetJobResult", f"{FHE}/CancelJob"], "resources": ["models/other"]},
        # The holder's job is on a model it may submit to, and nothing else: every other job method is refused.
        {"name": "holder-jobs", "principals": [spiffe(HOLDER)], "methods": [f"{FHE}/SubmitJob"],
         "resources": ["models/linear-jobs"]},
    ]
    settings = fhe_settings(tmp_path, jobs={"poll_seconds": 0.1})
    (tmp_path / "models" / "linear-jobs.json").write_bytes((tmp_path / "models" / "linear.json").read_bytes())
    settings["model_files"].append(str(tmp_path / "models" / "linear-jobs.json"))
    server = await start_server(fhe_server.DEFINITION,
                                server_config(tmp_path, identities, policy(services, holder), settings))
    channels = open_channels(f"127.0.0.1:{server.port}")
    stub = fhe_pb2_grpc.FHEInferenceStub(channels[HOLDER])
    model = (await stub.GetModel(fh.GetModelRequest(name="models/linear"))).model
    session = await register_keys(stub, ClientKeys.generate(model), ttl=timedelta(minutes=5))
    keys = ClientKeys.generate((await stub.GetModel(fh.GetModelRequest(name="models/linear-jobs"))).model)
    job_session = await register_keys(stub, keys, ttl=timedelta(minutes=5))
    job = await submit_job(stub, job_session.name, [(keys.encrypt(keys.preprocess(np.ones((1, 6)))), 1)])
    for _ in range(600):  # the holder may not read its job: wait on the stored state, so no case sees it change
        with sqlite3.connect(tmp_path / "fhe.db") as conn:
            if conn.execute("SELECT state FROM fhe_jobs").fetchall() == [("SUCCEEDED",)]:
                break
        await asyncio.sleep(0.1)
    targets = Targets(["models/", session.name, job_session.name, job.name], [],
                      {"session": session.name, "job": job.name})
    await run_cases(Harness(tmp_path, services, channels, targets), services)


async def test_fl_coordinator(start_server, tmp_path: Path, identities: DevPki, open_channels) -> None:  # type: ignore[no-untyped-def]
    services = (FLC, FLR)
    kb_dir, fl_dir = tmp_path / "kb", tmp_path / "fl"
    kb_dir.mkdir()
    fl_dir.mkdir()
    kb_rules = [{"name": "coordinator", "principals": [spiffe("mx-coordinator")], "methods": [f"{KBR}/*"]}]
    broker = await start_server(keybroker_server.DEFINITION,
                                server_config(kb_dir, identities, kb_rules, broker_settings(kb_dir)))
    settings = {"database": f"sqlite:///{fl_dir / 'fl.db'}", "key_broker_target": f"127.0.0.1:{broker.port}",
                "key_broker_identity": spiffe("server"), "fleet_address": f"127.0.0.1:{free_loopback_port()}"}
    config = server_config(fl_dir, identities, policy(services), settings, listen=f"127.0.0.1:{free_loopback_port()}")
    own = identities.bundle("mx-coordinator")
    data = config.read_text().replace(str(identities.bundle("server").cert_file), str(own.cert_file))
    config.write_text(data.replace(str(identities.bundle("server").key_file), str(own.key_file)))
    coordinator = await start_server(fl_server.DEFINITION, config)
    channels = open_channels(f"127.0.0.1:{coordinator.port}", "mx-coordinator")
    await invoke(channels[OWNER], METHODS[f"{FLC}/CreateFederation"],
                 fl.CreateFederationRequest(federation_id="target", federation=federation()))
    await run_cases(Harness(fl_dir, services, channels, Targets(["federations/target"])), services)
