"""The simulated NSM must emit documents a Nitro verifier cannot tell apart from real ones, except the root."""

from __future__ import annotations

import base64
import hashlib
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509 import verification

from privmesh.enclave.nsm import Nsm, NsmError
from privmesh.enclave.simulator import (
    CA_FILE,
    DEV_ROOT_COMMON_NAME,
    ROOT_FILE,
    DevCa,
    SimulatedNsm,
    image_pcrs,
    pcr_for_image,
)

NITRO = Path(__file__).resolve().parents[1] / "data" / "nitro"
AWS_ROOT_SHA256 = "641A0321A3E244EFE456463195D606317ED7CDCC3C1756E09893F3C68F79BB5B"
T0 = datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)


def real_document(name: str = "blocky_nitro_attestation.b64") -> bytes:
    return base64.b64decode((NITRO / name).read_text())


def split(document: bytes) -> tuple[bytes, Any, dict[str, Any], bytes]:
    protected, unprotected, payload, signature = cbor2.loads(document)
    return protected, unprotected, cbor2.loads(payload), signature


def certificates(payload: dict[str, Any]) -> tuple[x509.Certificate, list[x509.Certificate]]:
    leaf = x509.load_der_x509_certificate(payload["certificate"])
    return leaf, [x509.load_der_x509_certificate(der) for der in payload["cabundle"]]


def cose_signature_valid(document: bytes) -> bool:
    protected, _, payload, signature = cbor2.loads(document)
    leaf = x509.load_der_x509_certificate(cbor2.loads(payload)["certificate"])
    to_sign = cbor2.dumps(["Signature1", protected, b"", payload])
    der = encode_dss_signature(int.from_bytes(signature[:48], "big"), int.from_bytes(signature[48:], "big"))
    public_key = leaf.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    try:
        public_key.verify(der, to_sign, ec.ECDSA(hashes.SHA384()))
    except Exception:
        return False
    return True


def verify_chain(document: bytes, root: x509.Certificate, at: datetime) -> list[x509.Certificate]:
    """Path validation with the same policy that accepts the real AWS chain."""
    leaf, bundle = certificates(split(document)[2])
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store([root]))
        .time(at)
        .extension_policies(
            ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
            ee_policy=verification.ExtensionPolicy.permit_all(),
        )
        .build_client_verifier()
    )
    return verifier.verify(leaf, bundle[1:]).chain


@pytest.fixture(scope="module")
def sim() -> SimulatedNsm:
    return SimulatedNsm(image="demo-image:v1", now=lambda: T0)


@pytest.fixture(scope="module")
def sim_document(sim: SimulatedNsm) -> bytes:
    return sim.attest(public_key=b"P" * 1024, user_data=b"U" * 1024, nonce=b"N" * 1024)


def test_is_an_nsm(sim: SimulatedNsm) -> None:
    assert isinstance(sim, Nsm)


def test_cose_envelope_matches_real(sim_document: bytes) -> None:
    real = real_document()
    assert sim_document[0] == real[0] == 0x84  # untagged COSE_Sign1 array of four
    sim_parts, real_parts = cbor2.loads(sim_document), cbor2.loads(real)
    assert [type(part) for part in sim_parts] == [type(part) for part in real_parts]
    assert sim_parts[0] == real_parts[0] == bytes.fromhex("a1013822")  # {1: -35}: ES384
    assert sim_parts[1] == real_parts[1] == {}
    assert len(sim_parts[3]) == len(real_parts[3]) == 96
    assert sim_document[:6] == real[:6]


def test_payload_structure_matches_real(sim_document: bytes) -> None:
    sim_payload, real_payload = split(sim_document)[2], split(real_document())[2]
    assert list(sim_payload) == list(real_payload)  # same keys in the same order
    for key in real_payload:
        assert type(sim_payload[key]) is type(real_payload[key]), key
    assert sim_payload["digest"] == real_payload["digest"] == "SHA384"
    assert sorted(sim_payload["pcrs"]) == sorted(real_payload["pcrs"]) == list(range(16))
    assert all(type(i) is int and len(v) == 48 for i, v in sim_payload["pcrs"].items())
    assert len(sim_payload["cabundle"]) == len(real_payload["cabundle"]) == 4
    assert all(isinstance(der, bytes) for der in sim_payload["cabundle"])
    # The encoding itself is canonical the way real documents are (cbor2 round-trips both).
    for document in (sim_document, real_document()):
        assert cbor2.dumps(split(document)[2]) == cbor2.loads(document)[2]


def test_certificate_extensions_mirror_real(sim_document: bytes) -> None:
    sim_leaf, sim_bundle = certificates(split(sim_document)[2])
    real_leaf, real_bundle = certificates(split(real_document())[2])
    for ours, theirs in zip([sim_leaf, *sim_bundle], [real_leaf, *real_bundle], strict=True):
        assert [(e.oid, e.critical) for e in ours.extensions] == [(e.oid, e.critical) for e in theirs.extensions]
        for cls in (x509.BasicConstraints, x509.KeyUsage):
            assert ours.extensions.get_extension_for_class(cls).value == (
                theirs.extensions.get_extension_for_class(cls).value
            )
        assert ours.version == theirs.version
        assert ours.signature_hash_algorithm is not None and theirs.signature_hash_algorithm is not None
        assert ours.signature_hash_algorithm.name == theirs.signature_hash_algorithm.name == "sha384"
        key = ours.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp384r1"


def test_real_chain_passes_the_same_path_validation() -> None:
    real = real_document()
    root = x509.load_pem_x509_certificate((NITRO / "root.pem").read_bytes())
    chain = verify_chain(real, root, datetime(2024, 9, 7, 15, 0, tzinfo=timezone.utc))
    assert chain[-1] == root


def test_cose_signature_verifies_under_leaf(sim_document: bytes) -> None:
    assert cose_signature_valid(sim_document)
    parts = cbor2.loads(sim_document)
    tampered = bytearray(parts[2])
    tampered[-1] ^= 1
    assert not cose_signature_valid(cbor2.dumps([parts[0], parts[1], bytes(tampered), parts[3]]))


def test_chain_verifies_to_the_dev_root(sim: SimulatedNsm, sim_document: bytes) -> None:
    root = x509.load_pem_x509_certificate(sim.root_pem)
    chain = verify_chain(sim_document, root, T0)
    assert chain[-1] == root == sim.root_certificate
    assert split(sim_document)[2]["cabundle"][0] == root.public_bytes(serialization.Encoding.DER)
    cn = root.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert cn == DEV_ROOT_COMMON_NAME


def test_leaf_lives_three_hours_around_the_clock(sim_document: bytes) -> None:
    payload = split(sim_document)[2]
    assert payload["timestamp"] == int(T0.timestamp() * 1000)
    leaf, _ = certificates(payload)
    assert leaf.not_valid_before_utc <= T0 <= leaf.not_valid_after_utc
    assert leaf.not_valid_after_utc - T0 <= timedelta(hours=3)
    with pytest.raises(verification.VerificationError):
        verify_chain(sim_document, x509.load_der_x509_certificate(payload["cabundle"][0]), T0 + timedelta(hours=4))


def test_never_the_aws_root(sim: SimulatedNsm, sim_document: bytes) -> None:
    fingerprint = sim.root_certificate.fingerprint(hashes.SHA256()).hex().upper()
    assert fingerprint != AWS_ROOT_SHA256
    real_document()  # skips when the real root is absent
    aws_root = x509.load_pem_x509_certificate((NITRO / "root.pem").read_bytes())
    assert aws_root.fingerprint(hashes.SHA256()).hex().upper() == AWS_ROOT_SHA256
    with pytest.raises(verification.VerificationError):
        verify_chain(sim_document, aws_root, T0)


def test_binds_public_key_user_data_and_nonce(sim: SimulatedNsm) -> None:
    payload = split(sim.attest(public_key=b"pk", user_data=b"ud", nonce=b"nonce"))[2]
    assert (payload["public_key"], payload["user_data"], payload["nonce"]) == (b"pk", b"ud", b"nonce")
    absent = split(sim.attest())[2]
    assert (absent["public_key"], absent["user_data"], absent["nonce"]) == (None, None, None)


def test_field_bounds(sim: SimulatedNsm) -> None:
    with pytest.raises(NsmError) as info:
        sim.attest(nonce=b"x" * 1025)
    assert info.value.code == "InputTooLarge"
    with pytest.raises(NsmError):
        sim.attest(user_data="text")  # type: ignore[arg-type]


def test_pcrs_image_and_debug() -> None:
    ca = DevCa.generate(T0)
    prod = SimulatedNsm(ca, image="img:v2", now=lambda: T0)
    pcrs = split(prod.attest())[2]["pcrs"]
    assert pcrs[0] == pcr_for_image("img:v2") == hashlib.sha384(b"img:v2").digest()
    assert {i: pcrs[i] for i in (0, 1, 2)} == image_pcrs("img:v2") == {i: prod.describe_pcrs()[i] for i in (0, 1, 2)}
    assert pcrs[4] != bytes(48)  # like real documents: the parent instance's id
    debug = split(SimulatedNsm(ca, image="img:v2", debug=True, now=lambda: T0).attest())[2]["pcrs"]
    assert debug[0] == debug[1] == debug[2] == bytes(48)
    custom = SimulatedNsm(ca, pcrs={8: b"\x08" * 48}, now=lambda: T0).describe_pcrs()
    assert custom[8] == b"\x08" * 48
    with pytest.raises(ValueError):
        SimulatedNsm(ca, pcrs={0: b"short"})


def test_module_id_and_clock_are_configurable() -> None:
    moments = iter([T0, T0 + timedelta(minutes=5)])
    sim = SimulatedNsm(
        DevCa.generate(T0), module_id="i-0123456789abcdef0-enc0123456789abcdef", now=lambda: next(moments)
    )
    first, second = split(sim.attest())[2], split(sim.attest())[2]
    assert first["module_id"] == "i-0123456789abcdef0-enc0123456789abcdef"
    assert second["timestamp"] - first["timestamp"] == 5 * 60 * 1000


def test_ca_persists_and_is_shared(tmp_path: Path) -> None:
    ca_dir = tmp_path / "ca"
    first = SimulatedNsm.from_ca_dir(ca_dir, now=lambda: T0)
    second = SimulatedNsm.from_ca_dir(ca_dir, now=lambda: T0)
    assert first.root_pem == second.root_pem == (ca_dir / ROOT_FILE).read_bytes()
    assert (ca_dir / CA_FILE).stat().st_mode & 0o077 == 0  # private keys: owner only
    root = x509.load_pem_x509_certificate((ca_dir / ROOT_FILE).read_bytes())
    verify_chain(second.attest(nonce=b"n"), root, T0)


def test_concurrent_creation_agrees_on_one_root(tmp_path: Path) -> None:
    ca_dir = tmp_path / "race"
    roots: list[bytes] = []
    barrier = threading.Barrier(4)

    def create() -> None:
        barrier.wait()
        roots.append(DevCa.load_or_create(ca_dir, T0).root_pem)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(roots)) == 1
    assert roots[0] == (ca_dir / ROOT_FILE).read_bytes()
    assert [p.name for p in ca_dir.iterdir() if p.name.startswith(".")] == []
