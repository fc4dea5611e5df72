"""What a participant signs with its registered (attested) key, checked by the coordinator: the certificate
request of its FLARE key (so the site's FLARE identity is a key the attested participant holds and endorses), and
the segments of its FLARE site's audit log (so a changed byte is refused before it reaches the audit chain).

Every failure is an InvalidArgument naming the request field; nothing here echoes key material.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from privmesh.fl.flare.kit import (
    MAX_AUDIT_SEGMENT_BYTES,
    MAX_CSR_BYTES,
    MAX_SIGNATURE_BYTES,
    csr_message,
    site_audit_message,
)
from privmesh.runtime.errors import InvalidArgument

RSA_BITS = (2048, 4096)  # FLARE 2.9 signs with RSA-PSS and encrypts to site certificates with RSA-OAEP


def _verify(public_key_pem: str, signature: bytes, message: bytes, field: str) -> None:
    if not signature or len(signature) > MAX_SIGNATURE_BYTES:
        raise InvalidArgument.single(field, f"required, at most {MAX_SIGNATURE_BYTES} bytes")
    key = serialization.load_pem_public_key(public_key_pem.encode())
    if not isinstance(key, ec.EllipticCurvePublicKey):  # admission stores ECDSA keys only
        raise InvalidArgument.single(field, "the participant's key cannot sign")
    try:
        key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise InvalidArgument.single(field, "not a signature of the participant's registered key",
                                     "SIGNATURE_INVALID") from None


def endorsed_csr(participant: str, public_key_pem: str, csr_pem: bytes,
                 signature: bytes) -> x509.CertificateSigningRequest:
    """The participant's FLARE certificate request, once its own signature (proof of possession of the FLARE
    key) and the participant's endorsement with its registered key both verify."""
    field = "certificate_signing_request"
    if not csr_pem or len(csr_pem) > MAX_CSR_BYTES:
        raise InvalidArgument.single(field, f"required, at most {MAX_CSR_BYTES} bytes")
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError:
        raise InvalidArgument.single(field, "not a PEM PKCS#10 certificate request") from None
    key = csr.public_key()
    if not isinstance(key, rsa.RSAPublicKey) or not RSA_BITS[0] <= key.key_size <= RSA_BITS[1]:
        raise InvalidArgument.single(field, f"FLARE needs an RSA key of {RSA_BITS[0]} to {RSA_BITS[1]} bits")
    if not csr.is_signature_valid:
        raise InvalidArgument.single(field, "the request's own signature does not verify")
    _verify(public_key_pem, signature, csr_message(participant, csr.public_bytes(serialization.Encoding.DER)),
            "csr_signature")
    return csr


def check_audit_segment(participant: str, public_key_pem: str, from_byte: int, events: bytes,
                        signature: bytes) -> None:
    """A site audit segment: whole UTF-8 lines within the size limit (the audit entry keeps them as text, so what
    was signed can be checked again from it), signed by the participant for this offset."""
    if not events or len(events) > MAX_AUDIT_SEGMENT_BYTES or not events.endswith(b"\n"):
        raise InvalidArgument.single("events", f"1 to {MAX_AUDIT_SEGMENT_BYTES} bytes of whole lines")
    try:
        events.decode()
    except UnicodeDecodeError:
        raise InvalidArgument.single("events", "not UTF-8") from None
    _verify(public_key_pem, signature, site_audit_message(participant, from_byte, events), "signature")
