"""The FLARE engine's pure parts: aggregation with and without DP, the site executor's client-side clipping, site
names, startup-kit unpacking and job folders, site certificates for the participant's own key and their
endorsement, and the CC manager's verdicts (the real FLARE processes are in test_flare.py and the federation
suite, test_coordinator.py)."""

from __future__ import annotations

import base64
import io
import json
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID
from nvflare.apis.fl_constant import ReservedKey
from nvflare.apis.fl_context import FLContext
from nvflare.apis.signal import Signal
from nvflare.app_common.abstract.fl_model import FLModel
from nvflare.app_common.utils.fl_model_utils import FLModelUtils
from nvflare.app_opt.confidential_computing.cc_authorizer import CCAuthorizer

from privmesh.fl.app.model import Architecture, TrainingConfig
from privmesh.fl.app.spec import DpSpec, RunSpec
from privmesh.fl.coordinator.endorsed import check_audit_segment, endorsed_csr
from privmesh.fl.coordinator.service import flare_site_name
from privmesh.fl.flare.cc import AttestedSitesCCManager
from privmesh.fl.flare.controller import NUM_EXAMPLES, aggregate
from privmesh.fl.flare.executor import LocalTrainer
from privmesh.fl.flare.job import write_job
from privmesh.fl.flare.kit import DATA_ENV, MAX_AUDIT_SEGMENT_BYTES, csr_message, site_audit_message, unpack_kit
from privmesh.fl.flare.provision import FlareProvisioner
from privmesh.fl.participant.cli import participant
from privmesh.fl.participant.sdk import ParticipantKeys, write_training_csv
from privmesh.runtime.errors import InvalidArgument

SPEC = RunSpec(run="federations/f/runs/r", architecture=Architecture(2, 2), training=TrainingConfig(),
               feature_names=("a", "b"), label_name="y", strategy="fedavg", strategy_params={}, num_rounds=1,
               min_participants=2, fraction_train=1.0, fraction_evaluate=0.0, round_timeout_seconds=10,
               participant_wait_seconds=10, seed=3, node_ids=(7, 9), flare_sites={"f_a": 7, "f_b": 9})


def test_fedavg_weights_by_examples_and_dp_clips_then_adds_noise_of_the_stated_scale() -> None:
    current = [np.zeros((2, 1)), np.zeros(1)]
    updates = [([np.full((2, 1), 1.0), np.ones(1)], 10), ([np.full((2, 1), 4.0), np.full(1, 4.0)], 30)]
    plain = aggregate(SPEC, current, updates, np.random.default_rng(0))
    assert np.allclose(plain[0], 3.25) and np.allclose(plain[1], 3.25)
    dp = replace(SPEC, dp=DpSpec(server_side=True, noise_multiplier=0.0, clipping_norm=1.0, delta=1e-3,
                                 target_epsilon=None))
    clipped = aggregate(dp, current, updates, np.random.default_rng(0))  # no noise: the clipped, unweighted mean
    norm = float(np.sqrt(sum(float(np.sum(w ** 2)) for w in clipped)))
    assert norm == pytest.approx(1.0) and np.allclose(clipped[0], clipped[1][0])
    noisy = replace(dp, dp=replace(dp.dp, noise_multiplier=1.0))  # type: ignore[type-var]
    samples = np.array([aggregate(noisy, current, updates, np.random.default_rng(s))[0][0, 0] - clipped[0][0, 0]
                        for s in range(400)])
    assert samples.std() == pytest.approx(1.0 / 2, rel=0.15)  # noise_multiplier x clipping_norm / sampled


def test_the_site_executor_clips_its_update_for_client_side_dp(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """What the accountant assumes of client-side clipping: each site's returned update (trained minus received
    weights) has norm at most clipping_norm, and the unclipped training moves farther (so the clip is real)."""
    rng = np.random.default_rng(5)
    data = write_training_csv(tmp_path / "site.csv", ("a", "b"), "y",
                              [(tuple(rng.normal(size=2)), int(rng.integers(2))) for _ in range(40)])
    monkeypatch.setenv(DATA_ENV, str(data))
    spec = replace(SPEC, training=TrainingConfig(epochs=5, batch_size=40, learning_rate=2.0))
    received = {n: w + 0.5 for n, w in zip(spec.architecture.tensor_names(), spec.architecture.initial_weights(1),
                                           strict=True)}
    context = FLContext()
    context.set_prop(ReservedKey.IDENTITY_NAME, "f_a", private=True, sticky=False)

    def update_norm(run: RunSpec) -> float:
        task = FLModelUtils.to_shareable(FLModel(params=dict(received), current_round=1))
        reply = FLModelUtils.from_shareable(LocalTrainer(run.to_json()).execute("train", task, context, Signal()))
        assert reply.meta[NUM_EXAMPLES] == 40
        return float(np.sqrt(sum(np.sum((np.asarray(reply.params[n]) - received[n]) ** 2) for n in received)))

    assert update_norm(spec) > 0.2
    clipped = replace(spec, dp=DpSpec(server_side=False, noise_multiplier=1.0, clipping_norm=0.1, delta=1e-3,
                                      target_epsilon=None))
    assert update_norm(clipped) == pytest.approx(0.1)


def test_site_names_are_unique_per_federation_and_participant() -> None:
    assert flare_site_name("federations/risk/participants/hospital-a") == "risk_hospital-a"
    assert flare_site_name("federations/risk-a/participants/b") != flare_site_name("federations/risk/participants/a-b")


def test_a_kit_cannot_write_outside_its_workspace(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("startup/fed_client.json", "{}")
        archive.writestr("../escape.txt", "x")
    with pytest.raises(ValueError, match="leaves the workspace"):
        unpack_kit(buffer.getvalue(), tmp_path / "ws")
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "ws" / "startup").exists()


def test_a_job_names_only_the_federations_sites_and_privmesh_components(tmp_path: Path) -> None:
    job = write_job(SPEC, tmp_path / "job")
    meta = json.loads((job / "meta.json").read_text())
    assert meta["deploy_map"] == {"app": ["server", "f_a", "f_b"]} and meta["min_clients"] == 2
    server = json.loads((job / "app" / "config" / "config_fed_server.json").read_text())
    client = json.loads((job / "app" / "config" / "config_fed_client.json").read_text())
    assert server["workflows"][0]["path"] == "privmesh.fl.flare.controller.RunController"
    assert client["executors"][0]["executor"]["path"] == "privmesh.fl.flare.executor.LocalTrainer"
    assert RunSpec.from_json(server["workflows"][0]["args"]["spec"]) == SPEC


def _csr(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> x509.CertificateSigningRequest:
    return x509.CertificateSigningRequestBuilder().subject_name(x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "coordinator@privmesh.dev")])).sign(key, hashes.SHA256())


def test_a_sites_kit_certifies_the_participants_key_and_no_site_key_is_kept(tmp_path: Path) -> None:
    provisioner = FlareProvisioner(tmp_path / "flare", "p", "localhost", 8002)
    provisioner.ensure_server()
    key = rsa.generate_private_key(65537, 2048)
    archive = zipfile.ZipFile(io.BytesIO(provisioner.startup_kit("p_site", _csr(key))))
    assert not [name for name in archive.namelist() if name.endswith(".key")]
    cert = x509.load_pem_x509_certificate(archive.read("startup/client.crt"))
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    # The subject is the site's, not what the request asked for (an admin's name here).
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "p_site"
    root = x509.load_pem_x509_certificate(provisioner.root_certificate().encode())
    cert.verify_directly_issued_by(root)
    state = json.loads((provisioner.state_dir / "cert.json").read_text())
    assert "p_site" not in state  # the key FLARE's provisioner made for the site is gone with the kit


def test_a_certificate_request_needs_an_rsa_key_and_the_participants_endorsement() -> None:
    participant = ec.generate_private_key(ec.SECP384R1())
    pem = participant.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    name = "federations/f/participants/a"
    rsa_csr = _csr(rsa.generate_private_key(65537, 2048))

    def endorse(csr: x509.CertificateSigningRequest, who: str = name,
                signer: ec.EllipticCurvePrivateKey = participant) -> tuple[bytes, bytes]:
        return csr.public_bytes(Encoding.PEM), signer.sign(csr_message(who, csr.public_bytes(Encoding.DER)),
                                                           ec.ECDSA(hashes.SHA256()))

    assert endorsed_csr(name, pem, *endorse(rsa_csr)).public_key().public_numbers() == \
        rsa_csr.public_key().public_numbers()
    for (csr_pem, signature), field in (
            (endorse(_csr(ec.generate_private_key(ec.SECP256R1()))), "certificate_signing_request"),  # FLARE: RSA
            (endorse(_csr(rsa.generate_private_key(65537, 1024))), "certificate_signing_request"),  # too short
            (endorse(rsa_csr, who="federations/f/participants/b"), "csr_signature"),  # for another participant
            (endorse(rsa_csr, signer=ec.generate_private_key(ec.SECP384R1())), "csr_signature"),  # not its key
            ((endorse(rsa_csr)[0], b""), "csr_signature")):
        with pytest.raises(InvalidArgument) as refused:
            endorsed_csr(name, pem, csr_pem, signature)
        assert refused.value.violations[0].field == field


class _Fixed(CCAuthorizer):  # type: ignore[misc]
    """A verifier whose verdict is the token itself (the CC manager's decisions are under test, not it)."""

    def get_namespace(self) -> str:
        return "fixed"

    def generate(self) -> str:
        return "good"

    def verify(self, token: str) -> bool:
        return token == "good"


def test_the_cc_manager_wants_evidence_from_every_site_but_the_server() -> None:
    manager = AttestedSitesCCManager(cc_verifier_ids=["fixed"], exempt_sites=["relay"])
    manager.cc_verifiers = {"fixed": _Fixed()}
    assert "any-site" in manager.cc_enabled_sites and "server" not in manager.cc_enabled_sites
    assert "relay" not in manager.cc_enabled_sites

    def token(value: str, namespace: str = "fixed") -> dict[str, object]:
        return {"_cc_token": value, "_cc_namespace": namespace}

    assert manager._refusal([token("good")]) == ""
    assert manager._refusal([]) == manager._refusal(None) == "NO_EVIDENCE"
    assert manager._refusal([token("good"), token("bad")]) == "REJECTED"  # every token must verify
    assert manager._refusal([token("good", "x-unknown")]) == "NO_VERIFIER_FOR_NAMESPACE"


def test_a_site_audit_segment_is_whole_utf8_lines_signed_for_its_offset() -> None:
    participant = ec.generate_private_key(ec.SECP256R1())
    pem = participant.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    name = "federations/f/participants/a"

    def sign(events: bytes, offset: int = 0) -> bytes:
        return participant.sign(site_audit_message(name, offset, events), ec.ECDSA(hashes.SHA256()))

    check_audit_segment(name, pem, 0, b"[A:x]\n", sign(b"[A:x]\n"))
    for events, signature, field in ((b"[A:x]", sign(b"[A:x]"), "events"),  # not a whole line
                                     (b"\xff\n", sign(b"\xff\n"), "events"),
                                     (b"[A:y]\n", sign(b"[A:x]\n"), "signature"),  # a changed byte
                                     (b"[A:x]\n", sign(b"[A:x]\n", 6), "signature"),  # signed for another offset
                                     (b"x\n" * (MAX_AUDIT_SEGMENT_BYTES // 2 + 1), b"", "events")):
        with pytest.raises(InvalidArgument) as refused:
            check_audit_segment(name, pem, 0, events, signature)
        assert refused.value.violations[0].field == field


def test_the_cli_prints_an_endorsed_certificate_request(tmp_path: Path) -> None:
    name = "federations/f/participants/a"
    result = CliRunner().invoke(participant, ["flare-csr", "--dir", str(tmp_path), "--participant", name])
    assert result.exit_code == 0, result.output
    signature = base64.b64decode(result.stderr.rsplit(": ", 1)[1])
    keys = ParticipantKeys.load_or_create(tmp_path)
    assert oct(keys.flare_key_file.stat().st_mode & 0o777) == "0o600"
    csr = endorsed_csr(name, keys.public_key_pem().decode(), result.stdout.encode(), signature)
    assert isinstance(csr.public_key(), rsa.RSAPublicKey) and csr.public_key().key_size == 3072
