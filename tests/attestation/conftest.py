"""Fixtures: the real Nitro documents (the project's copy in tests/data/nitro), helpers to decode,
alter and re-encode them, and a synthetic P-384 PKI that signs documents we can shape at will."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from privmesh.attestation.nitro import NitroVerifier, load_pinned_root
from privmesh.enclave.simulator import DevCa

NITRO_DIR = Path(__file__).resolve().parents[1] / "data" / "nitro"
PRODUCTION = "blocky_nitro_attestation.b64"
DEBUG = "blocky_nitro_attestation_debug.b64"
SELF_SIGNED = "blocky_selfsigned_attestation.b64"
#: Inside the chain windows of both real documents (README: 14:37:36/14:38:03 .. 17:37:39/17:38:06 UTC).
IN_WINDOW = datetime(2024, 9, 7, 15, 0, tzinfo=timezone.utc)
BEFORE_WINDOW = datetime(2024, 9, 7, 14, 30, tzinfo=timezone.utc)
AFTER_WINDOW = datetime(2024, 9, 7, 18, 0, tzinfo=timezone.utc)
_DER = Encoding.DER
#: The synthetic PKI is valid for one day around this time.
SYNTH_AT = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)


def read_document(name: str) -> bytes:
    return base64.b64decode((NITRO_DIR / name).read_text())


@pytest.fixture(scope="session")
def production_raw() -> bytes:
    return read_document(PRODUCTION)


@pytest.fixture(scope="session")
def debug_raw() -> bytes:
    return read_document(DEBUG)


@pytest.fixture(scope="session")
def selfsigned_raw() -> bytes:
    return read_document(SELF_SIGNED)


@pytest.fixture(scope="session")
def aws_root() -> x509.Certificate:
    return load_pinned_root((NITRO_DIR / "root.pem").read_bytes())


@pytest.fixture(scope="session")
def aws_verifier(aws_root: x509.Certificate) -> NitroVerifier:
    return NitroVerifier([aws_root])


# --- decoding, altering and re-encoding documents with cbor2 ---------------------------------------------

@dataclass
class Cose:
    """A COSE_Sign1 taken apart, its payload decoded, so a test can alter any part and re-encode."""

    protected: bytes
    unprotected: Any
    payload: dict[str, Any]
    signature: bytes

    @classmethod
    def decode(cls, raw: bytes) -> Cose:
        protected, unprotected, payload, signature = cbor2.loads(raw)
        return cls(protected, unprotected, cbor2.loads(payload), signature)

    def encode(self, *, tagged: bool = False) -> bytes:
        body = [self.protected, self.unprotected, cbor2.dumps(self.payload), self.signature]
        return cbor2.dumps(cbor2.CBORTag(18, body) if tagged else body)


def flip_bit(data: bytes, index: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[index] ^= 1 << bit
    return bytes(out)


# --- a synthetic PKI (root -> intermediate -> leaf, all P-384) -------------------------------------------

def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def key_usage(*, digital_signature: bool = False, key_cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=key_cert_sign, crl_sign=False,
        encipher_only=False, decipher_only=False,
    )


def make_cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    path_length: int | None = None,
    usage: x509.KeyUsage | None = None,
    not_before: datetime = SYNTH_AT - timedelta(hours=12),
    not_after: datetime = SYNTH_AT + timedelta(hours=12),
    basic_constraints: bool = True,
    extra: Iterable[tuple[x509.ExtensionType, bool]] = (),
    algorithm: hashes.SHA256 | hashes.SHA384 | None = None,
) -> bytes:
    """One DER certificate; every knob a negative test needs."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if basic_constraints:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
    if usage is None:
        usage = key_usage(key_cert_sign=True) if ca else key_usage(digital_signature=True)
    builder = builder.add_extension(usage, critical=True)
    for extension, critical in extra:
        builder = builder.add_extension(extension, critical=critical)
    cert = builder.sign(issuer_key, algorithm or hashes.SHA384())
    return cert.public_bytes(_DER)


def cose_sign(key: ec.EllipticCurvePrivateKey, payload: bytes, protected: bytes = b"\xa1\x01\x38\x22") -> bytes:
    """An ES384 raw r||s signature over the COSE Sig_structure, as the NSM makes it."""
    to_be_signed = cbor2.dumps(["Signature1", protected, b"", payload])
    r, s = decode_dss_signature(key.sign(to_be_signed, ec.ECDSA(hashes.SHA384())))
    return r.to_bytes(48, "big") + s.to_bytes(48, "big")  # P-384 sizes, even for a wrong (smaller) key


@dataclass
class Pki:
    """root -> intermediate -> leaf; `document()` builds a signed document from it."""

    root_key: ec.EllipticCurvePrivateKey
    root: bytes
    inter_key: ec.EllipticCurvePrivateKey
    inter: bytes
    leaf_key: ec.EllipticCurvePrivateKey
    leaf: bytes

    @property
    def root_cert(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.root)

    def payload(self, **overrides: Any) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "module_id": "i-0123456789abcdef0-enc0123456789abcdef",
            "digest": "SHA384",
            "timestamp": int((SYNTH_AT - timedelta(minutes=1)).timestamp() * 1000),
            "pcrs": {i: bytes([i + 1]) * 48 for i in range(16)},
            "certificate": self.leaf,
            "cabundle": [self.root, self.inter],
            "public_key": b"\x30" * 10,
            "user_data": b"hello",
            "nonce": b"\x07" * 32,
        }
        payload.update(overrides)
        return payload

    def document(self, *, sign_with: ec.EllipticCurvePrivateKey | None = None, tagged: bool = False,
                 **overrides: Any) -> bytes:
        payload = cbor2.dumps(self.payload(**overrides))
        body = [b"\xa1\x01\x38\x22", {}, payload, cose_sign(sign_with or self.leaf_key, payload)]
        return cbor2.dumps(cbor2.CBORTag(18, body) if tagged else body)

    def issue(self, subject: str = "leaf", **kwargs: Any) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
        """A new certificate issued by the intermediate (kwargs as make_cert's)."""
        key = ec.generate_private_key(ec.SECP384R1())
        kwargs.setdefault("ca", False)
        return key, make_cert(subject, key, "intermediate", self.inter_key, **kwargs)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture(scope="session")
def nitro_pki() -> Pki:
    root_key, inter_key, leaf_key = new_key(), new_key(), new_key()
    root = make_cert("root", root_key, "root", root_key, ca=True,
                     not_before=SYNTH_AT - timedelta(days=365), not_after=SYNTH_AT + timedelta(days=365))
    inter = make_cert("intermediate", inter_key, "root", root_key, ca=True, path_length=0)
    leaf = make_cert("leaf", leaf_key, "intermediate", inter_key, ca=False)
    return Pki(root_key, root, inter_key, inter, leaf_key, leaf)


@pytest.fixture(scope="session")
def nitro_pki_verifier(nitro_pki: Pki) -> NitroVerifier:
    return NitroVerifier([nitro_pki.root_cert])


def reasons(refusals: Iterable[Any]) -> set[str]:
    return {r.reason for r in refusals}


@pytest.fixture(scope="module")
def dev_ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[DevCa, Path]:
    """The enclave simulator's development CA and its root file (a verifier's dev_root_files)."""
    directory = tmp_path_factory.mktemp("enclave-sim")
    ca = DevCa.load_or_create(directory)
    root = directory / "dev-root.pem"
    root.write_bytes(ca.root_pem)
    return ca, root
