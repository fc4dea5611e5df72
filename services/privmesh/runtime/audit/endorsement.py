"""Audit-key endorsements: a service's mesh identity vouches for its audit key, so an auditor who pins only the
mesh CA (not every service's key id) can still tell the service's log from a forged one.

The service signs {"audit_public_key", "service"} (canonical JSON, see common.proto GetAuditHeadResponse) with
its TLS key; the verifier checks the certificate chain against the pinned CA with cryptography's X.509
verifier, that the leaf's SPIFFE ID is the service in the expected trust domain, and the signature.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509 import verification

from privmesh.runtime.identity import SpiffeId, principal_from_sans

_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)


class EndorsementError(ValueError):
    """The audit key is not vouched for by the service's mesh identity (the message says why)."""


def message(audit_public_key: bytes, service: str) -> bytes:
    return json.dumps({"audit_public_key": audit_public_key.hex(), "service": service}, sort_keys=True,
                      separators=(",", ":")).encode()


def endorse(key_file: Path, cert_file: Path, audit_public_key: bytes, service: str) -> tuple[str, bytes]:
    """(certificate chain PEM, signature) from the service's current mesh credentials."""
    key = serialization.load_pem_private_key(Path(key_file).read_bytes(), None)
    data = message(audit_public_key, service)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        signature = key.sign(data, ec.ECDSA(hashes.SHA256()))
    elif isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(data, _PSS, hashes.SHA256())
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        signature = key.sign(data)
    else:
        raise EndorsementError(f"unsupported TLS key type {type(key).__name__}")
    return Path(cert_file).read_text(), signature


def _check_signature(certificate: x509.Certificate, signature: bytes, data: bytes) -> None:
    key = certificate.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, _PSS, hashes.SHA256())
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
        else:
            raise EndorsementError("the certificate's key type cannot endorse")
    except InvalidSignature:
        raise EndorsementError("the endorsement signature does not verify under the service's certificate") from None


def verify_endorsement(chain_pem: str, signature: bytes, audit_public_key: bytes, service: str,
                       roots: list[x509.Certificate], trust_domain: str, at: dt.datetime) -> str:
    """The endorsing SPIFFE ID, once the chain verifies to `roots` at time `at`, names `service` in
    `trust_domain`, and signs the audit key; EndorsementError otherwise."""
    if not chain_pem or not signature:
        raise EndorsementError("the bundle carries no endorsement of the audit key")
    try:
        chain = x509.load_pem_x509_certificates(chain_pem.encode())
    except ValueError:
        raise EndorsementError("the endorsing certificate chain is not PEM") from None
    verifier = (verification.PolicyBuilder().store(verification.Store(roots)).time(at)
                .build_client_verifier())
    try:
        verified = verifier.verify(chain[0], chain[1:])
    except verification.VerificationError as exc:
        raise EndorsementError(f"the endorsing certificate does not chain to the pinned CA ({exc})") from None
    uris = tuple(str(name.value).encode() for name in verified.subjects or ()
                 if isinstance(name, x509.UniformResourceIdentifier))
    principal = principal_from_sans(uris)
    if principal is None:
        raise EndorsementError("the endorsing certificate carries no single SPIFFE ID")
    spiffe = SpiffeId.parse(principal)
    if spiffe.trust_domain != trust_domain or spiffe.service_account != service:
        raise EndorsementError(f"the audit key is endorsed by {principal}, not by {service} in {trust_domain}")
    _check_signature(chain[0], signature, message(audit_public_key, service))
    return principal
