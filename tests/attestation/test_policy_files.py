"""Policies put at start from files (how the Helm chart pins the enclave image's PCRs): the simulated enclave is
then accepted without any PutPolicy call; a restart with the same file changes nothing; a bad file names the
field and the verifier does not start."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from privmesh.attestation import server as attestation_server
from privmesh.attestation.policy import InvalidPolicy
from privmesh.attestation.v1 import attestation_pb2 as pb
from privmesh.attestation.v1 import attestation_pb2_grpc
from privmesh.enclave.app import EnclaveApp
from privmesh.enclave.simulator import DEFAULT_IMAGE, SimulatedNsm, image_pcrs
from privmesh.runtime.client import secure_channel
from privmesh.runtime.pki import DevPki
from tests.attestation.test_service import AUDIENCE, RULES, _audit, _policy_rows
from tests.conftest import identity, server_config, spiffe


def policy_file(path: Path, pcrs: dict[int, str]) -> Path:
    path.write_text(yaml.safe_dump({"name": "prod-enclave", "require_public_key": True,
                                    "allowed_pcr_sets": [{"description": "image v1", "pcrs": pcrs}]}))
    return path


def config(tmp_path: Path, pki: DevPki, dev_root: Path, policy: Path) -> Path:
    return server_config(tmp_path, pki, RULES, {
        "database": f"sqlite:///{tmp_path / 'attestation.db'}", "token_signing_key_file": str(tmp_path / "key.pem"),
        "dev_root_files": [str(dev_root)], "policy_files": [str(policy)]})


async def test_policy_file_admits_the_enclave_and_is_put_once(start_server, tmp_path: Path, pki: DevPki,
                                                              dev_ca) -> None:
    pcrs = {i: v.hex() for i, v in image_pcrs(DEFAULT_IMAGE).items()}
    path = config(tmp_path, pki, dev_ca[1], policy_file(tmp_path / "prod-enclave.yaml", pcrs))
    server = await start_server(attestation_server.DEFINITION, path)
    async with secure_channel(f"127.0.0.1:{server.port}", identity(pki, "alice"), peer=spiffe("server")) as channel:
        stub = attestation_pb2_grpc.AttestationVerifierStub(channel)
        nonce = (await stub.IssueChallenge(pb.IssueChallengeRequest())).nonce
        enclave = EnclaveApp(SimulatedNsm(dev_ca[0]))
        document = enclave.attest(nonce)
        reply = await stub.VerifyAttestation(pb.VerifyAttestationRequest(document=document, policy="prod-enclave",
                                                                         audience=AUDIENCE))
        assert reply.verdict == pb.VERDICT_ACCEPTED, reply.refusals
    await server.stop(grace=0)
    etag = _policy_rows(tmp_path)
    await start_server(attestation_server.DEFINITION, path)  # a restart (or a second replica), same file
    assert _policy_rows(tmp_path) == etag
    puts = [entry for entry in _audit(tmp_path) if entry[0] == "PutPolicy"]
    assert [p[1] for p in puts] == ["policies/prod-enclave"]


@pytest.mark.parametrize(("pcrs", "field"), [
    ({0: "ab" * 47}, "allowed_pcr_sets[0].pcrs[0]"),
    ({0: "zz" * 48}, "allowed_pcr_sets[0].pcrs[0]"),
    ({}, "allowed_pcr_sets[0].pcrs"),
])
async def test_a_bad_policy_file_names_the_field_and_stores_nothing(start_server, tmp_path: Path, pki: DevPki,
                                                                    dev_ca, pcrs: dict[int, str], field: str) -> None:
    path = config(tmp_path, pki, dev_ca[1], policy_file(tmp_path / "bad.yaml", pcrs))
    with pytest.raises(InvalidPolicy) as error:
        await start_server(attestation_server.DEFINITION, path)
    assert error.value.field.endswith(field)
    assert _policy_rows(tmp_path) == []


def test_a_policy_file_names_the_kind(tmp_path: Path) -> None:
    from privmesh.attestation.policy_files import load_policy_file

    path = tmp_path / "ami.yaml"
    path.write_text(yaml.safe_dump({"name": "trainer-ami", "kind": "NITRO_TPM", "allowed_pcr_sets": [
        {"description": "AMI v3, standard boot", "pcrs": {4: "ab" * 48, 12: "cd" * 48}},
        {"description": "AMI v3, Secure Boot", "pcrs": {7: "ef" * 48}}]}))
    policy = load_policy_file(path)
    assert policy.kind == "NITRO_TPM" and [sorted(s.pcrs) for s in policy.allowed_pcr_sets] == [[4, 12], [7]]
    path.write_text(yaml.safe_dump({"name": "trainer-ami", "kind": "TDX",
                                    "allowed_pcr_sets": [{"pcrs": {4: "ab" * 48}}]}))
    with pytest.raises(InvalidPolicy):
        load_policy_file(path)
    path.write_text(yaml.safe_dump({"name": "trainer-ami", "kind": "NITRO_TPM",
                                    "allowed_pcr_sets": [{"pcrs": {24: "ab" * 48}}]}))
    with pytest.raises(InvalidPolicy) as info:
        load_policy_file(path)
    assert info.value.field.endswith("allowed_pcr_sets[0].pcrs")
