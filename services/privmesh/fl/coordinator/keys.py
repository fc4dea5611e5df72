"""Participants' ECDSA public keys: parsed from PEM, OpenSSH or raw SEC1 points, checked, normalized to PEM.

Flower's SuperNode authentication accepts NIST curves; privmesh takes P-256, P-384 and P-521. The fingerprint
(SHA-256 of the DER SubjectPublicKeyInfo) is what logs and audit records show, and what an attestation
document's user_data must equal to bind the key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from privmesh.fl.v1 import fl_pb2

MAX_PUBLIC_KEY_BYTES = 8 * 1024
CURVES: dict[fl_pb2.EcCurve, ec.EllipticCurve] = {
    fl_pb2.EC_CURVE_P256: ec.SECP256R1(), fl_pb2.EC_CURVE_P384: ec.SECP384R1(), fl_pb2.EC_CURVE_P521: ec.SECP521R1()}
_BY_NAME = {curve.name: number for number, curve in CURVES.items()}


class InvalidKey(Exception):
    """The key cannot be used; the message says why (it never contains the key)."""


@dataclass(frozen=True)
class ParsedKey:
    pem: bytes
    der: bytes
    curve: fl_pb2.EcCurve

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.der).hexdigest()

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(self.der).digest()


def _load(data: bytes, fmt: int, curve: fl_pb2.EcCurve) -> object:
    if fmt == fl_pb2.PUBLIC_KEY_FORMAT_PEM:
        return serialization.load_pem_public_key(data)
    if fmt == fl_pb2.PUBLIC_KEY_FORMAT_SSH:
        return serialization.load_ssh_public_key(data.strip())
    if fmt == fl_pb2.PUBLIC_KEY_FORMAT_RAW:
        if curve not in CURVES:
            raise InvalidKey("a RAW key needs its curve")
        return ec.EllipticCurvePublicKey.from_encoded_point(CURVES[curve], data)
    raise InvalidKey("public_key_format is required")


def parse_public_key(data: bytes, fmt: int, curve: fl_pb2.EcCurve = fl_pb2.EC_CURVE_UNSPECIFIED) -> ParsedKey:
    if not data:
        raise InvalidKey("required")
    if len(data) > MAX_PUBLIC_KEY_BYTES:
        raise InvalidKey(f"larger than {MAX_PUBLIC_KEY_BYTES} bytes")
    try:
        key = _load(data, fmt, curve)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise InvalidKey(f"not a valid {fl_pb2.PublicKeyFormat.Name(fmt).removeprefix('PUBLIC_KEY_FORMAT_')} "
                         "public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise InvalidKey("not an ECDSA (elliptic-curve) key")
    number = _BY_NAME.get(key.curve.name)
    if number is None:
        raise InvalidKey(f"curve {key.curve.name} is not supported (P-256, P-384, P-521)")
    if curve != fl_pb2.EC_CURVE_UNSPECIFIED and curve != number:
        raise InvalidKey(f"the key is on {key.curve.name}, not on the declared curve")
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return ParsedKey(pem, der, number)
