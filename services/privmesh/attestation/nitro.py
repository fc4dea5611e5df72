"""Cryptographic verification of a parsed Nitro attestation document: certificate path to a pinned root,
validity at a given time, CA/leaf constraints, and the COSE_Sign1 ES384 signature by the leaf key.

Every check runs and every failure is reported, so an operator sees the whole picture at once.

The chain walk is hand-written rather than cryptography.x509.verification because that verifier stops at the
first problem with one message, while a refusal here names each failure with its contract reason (expired vs.
not issued vs. constraints); and it builds a path from an unordered pool, while a Nitro CA bundle has a fixed
order that is held to. tests/attestation/test_chain_crosscheck.py runs both (the library with a custom
extension policy for the leaf) on the real documents and mutated chains and checks they agree.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import Generic, TypeVar

import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtensionOID, SignatureAlgorithmOID

from .document import REFUSAL_REASONS, AttestationDocument, Refusal

__all__ = [
    "AWS_NITRO_ROOT_SHA256",
    "REFUSAL_REASONS",
    "NitroVerifier",
    "Refusal",
    "UntrustedRoot",
    "fingerprint_sha256",
    "load_pinned_root",
]

#: SHA-256 of the DER of the AWS Nitro Enclaves root (CN=aws.nitro-enclaves, AWS_NitroEnclaves_Root-G1).
AWS_NITRO_ROOT_SHA256 = "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"

SIGNATURE_INVALID = "SIGNATURE_INVALID"
CHAIN_INVALID = "CHAIN_INVALID"
ROOT_NOT_TRUSTED = "ROOT_NOT_TRUSTED"
CERTIFICATE_EXPIRED = "CERTIFICATE_EXPIRED"
CERTIFICATE_CONSTRAINTS = "CERTIFICATE_CONSTRAINTS"
DIGEST_UNSUPPORTED = "DIGEST_UNSUPPORTED"

# Critical extensions this verifier understands; any other critical one fails the certificate (RFC 5280).
_HANDLED_CRITICAL = frozenset({
    ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.KEY_USAGE, ExtensionOID.EXTENDED_KEY_USAGE,
    ExtensionOID.SUBJECT_KEY_IDENTIFIER, ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
    ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
})

_DER = Encoding.DER
K = TypeVar("K")
V = TypeVar("V")


class UntrustedRoot(ValueError):
    """A root certificate offered for pinning does not match its configured fingerprint."""


def fingerprint_sha256(der: bytes) -> str:
    """Lower-case hex SHA-256 of DER bytes: the form pins and claims use."""
    return hashlib.sha256(der).hexdigest()


def _normalise_pin(pin: str) -> str:
    return pin.replace(":", "").strip().lower()


def load_pinned_root(pem: bytes, pin_sha256: str = AWS_NITRO_ROOT_SHA256) -> x509.Certificate:
    """Loads a root PEM only if its SHA-256 fingerprint equals the configured pin (hex, colons allowed),
    so a swapped file cannot silently change what the verifier trusts."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except (ValueError, x509.InvalidVersion) as exc:
        raise UntrustedRoot(f"not a PEM certificate: {exc}") from None
    actual = fingerprint_sha256(cert.public_bytes(_DER))
    if actual != _normalise_pin(pin_sha256):
        raise UntrustedRoot(f"root fingerprint {actual} does not match the pin {_normalise_pin(pin_sha256)}")
    return cert


class _LRU(Generic[K, V]):
    """A small thread-safe LRU map (the service may verify from several threads)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


class NitroVerifier:
    """Verifies documents against roots pinned by SHA-256 fingerprint.

    Caches parsed CA certificates and already-verified (issuer, subject) signature links, keyed by DER
    bytes: those results depend on nothing but the bytes. Validity at `at`, constraints, the root pin and
    the COSE signature are checked on every call.
    """

    def __init__(self, trusted_roots: Iterable[x509.Certificate] = (), *, pinned_sha256: Iterable[str] = (),
                 cache_size: int = 256) -> None:
        # A pin alone suffices: the document's root is then trusted only if its bytes hash to the pin, i.e.
        # it is the pinned certificate (how production pins the AWS root without shipping its PEM).
        self._roots = {fingerprint_sha256(r.public_bytes(_DER)) for r in trusted_roots}
        self._roots |= {_normalise_pin(pin) for pin in pinned_sha256}
        if not self._roots:
            raise ValueError("at least one trusted root is required")
        self._certs: _LRU[bytes, x509.Certificate] = _LRU(cache_size)
        self._links: _LRU[tuple[bytes, bytes], bool] = _LRU(cache_size)

    @property
    def pinned_fingerprints(self) -> frozenset[str]:
        return frozenset(self._roots)

    def verify(self, doc: AttestationDocument, at: datetime | None = None) -> list[Refusal]:
        """Returns every refusal (empty: the document is authentic and its chain valid at `at`)."""
        at = datetime.now(timezone.utc) if at is None else at
        if at.tzinfo is None:
            raise ValueError("`at` must be timezone-aware")
        refusals: list[Refusal] = []
        if doc.digest != "SHA384":
            refusals.append(Refusal(DIGEST_UNSUPPORTED, f"digest {doc.digest!r} is not SHA384"))
        # The path, leaf first: certificate, then the cabundle reversed (it is root-first).
        ders = [doc.certificate, *reversed(doc.cabundle)]
        names = ["certificate", *(f"cabundle[{i}]" for i in reversed(range(len(doc.cabundle))))]
        certs = [self._load(der, cache=i > 0) for i, der in enumerate(ders)]
        for name, cert in zip(names, certs, strict=True):
            if cert is None:
                refusals.append(Refusal(CHAIN_INVALID, f"{name} is not a DER X.509 certificate"))
        refusals += self._check_root(doc.cabundle)
        refusals += self._check_links(ders, certs, names)
        refusals += _check_validity(certs, names, at)
        refusals += _check_constraints(certs, names)
        refusals += _check_cose(doc, certs[0])
        return refusals

    def _load(self, der: bytes, *, cache: bool) -> x509.Certificate | None:
        cert = self._certs.get(der) if cache else None
        if cert is None:
            try:
                cert = x509.load_der_x509_certificate(der)
            except (ValueError, x509.InvalidVersion):  # InvalidVersion (an altered version field) is no ValueError
                return None
            if cache:
                self._certs.put(der, cert)
        return cert

    def _check_root(self, cabundle: Sequence[bytes]) -> list[Refusal]:
        # Only byte-equality with a pinned root counts: whatever root the document carries is never
        # trusted for its own sake.
        if not cabundle:
            return [Refusal(ROOT_NOT_TRUSTED, "the document has no CA bundle, so no path to a pinned root")]
        fingerprint = fingerprint_sha256(cabundle[0])
        if fingerprint not in self._roots:
            return [Refusal(ROOT_NOT_TRUSTED, f"the path ends in root {fingerprint}, which is not pinned")]
        return []

    def _check_links(
        self, ders: list[bytes], certs: list[x509.Certificate | None], names: list[str]
    ) -> list[Refusal]:
        refusals = []
        for i in range(len(certs) - 1):
            child, issuer = certs[i], certs[i + 1]
            if child is None or issuer is None:
                continue  # already refused as unparseable
            key = (ders[i + 1], ders[i])
            if self._links.get(key):
                continue
            problem = _link_problem(child, issuer)
            if problem is None:
                self._links.put(key, True)
            else:
                refusals.append(Refusal(CHAIN_INVALID, f"{names[i]} is not issued by {names[i + 1]}: {problem}"))
        return refusals


def _p384_key(cert: x509.Certificate) -> ec.EllipticCurvePublicKey | None:
    # public_key() parses lazily: a tampered certificate can fail here (e.g. a point not on the curve).
    try:
        key = cert.public_key()
    except (ValueError, TypeError, UnsupportedAlgorithm):  # a flipped bit can also name an unknown curve
        return None
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp384r1":
        return key
    return None


def _link_problem(child: x509.Certificate, issuer: x509.Certificate) -> str | None:
    """Why `issuer` did not sign `child` with ECDSA P-384/SHA-384, or None when it did."""
    if child.signature_algorithm_oid != SignatureAlgorithmOID.ECDSA_WITH_SHA384:
        return f"signature algorithm {child.signature_algorithm_oid.dotted_string} is not ecdsa-with-SHA384"
    if _p384_key(issuer) is None:
        return "the issuer key is not a valid ECDSA P-384 key"
    try:
        child.verify_directly_issued_by(issuer)
    except InvalidSignature:
        return "the signature does not verify"
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        return str(exc) or type(exc).__name__
    return None


def _check_validity(certs: list[x509.Certificate | None], names: list[str], at: datetime) -> list[Refusal]:
    refusals = []
    for name, cert in zip(names, certs, strict=True):
        if cert is None:
            continue
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        if not start <= at <= end:
            refusals.append(Refusal(
                CERTIFICATE_EXPIRED,
                f"{name} is valid {start.isoformat()} .. {end.isoformat()}, not at {at.isoformat()}",
            ))
    return refusals


def _check_constraints(certs: list[x509.Certificate | None], names: list[str]) -> list[Refusal]:
    refusals = []
    for depth, (name, cert) in enumerate(zip(names, certs, strict=True)):
        if cert is None:
            continue
        problem = _constraint_problem(cert, is_ca=depth > 0, cas_below=max(depth - 1, 0))
        if problem:
            refusals.append(Refusal(CERTIFICATE_CONSTRAINTS, f"{name}: {problem}"))
    return refusals


def _constraint_problem(cert: x509.Certificate, *, is_ca: bool, cas_below: int) -> str | None:
    """CAs need basicConstraints CA=true (with room in pathLen) and keyCertSign; the leaf must not be a
    CA and needs digitalSignature."""
    try:
        extensions = cert.extensions
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        return f"extensions do not parse ({exc})"
    for ext in extensions:
        if ext.critical and ext.oid not in _HANDLED_CRITICAL:
            return f"unhandled critical extension {ext.oid.dotted_string}"
    basic = _extension(extensions, x509.BasicConstraints)
    usage = _extension(extensions, x509.KeyUsage)
    if is_ca:
        if basic is None or not basic.ca:
            return "a CA certificate without basicConstraints CA=true"
        if basic.path_length is not None and cas_below > basic.path_length:
            return f"pathLenConstraint {basic.path_length} but {cas_below} CA certificates below it"
        if usage is None or not usage.key_cert_sign:
            return "a CA certificate without keyUsage keyCertSign"
        return None
    if basic is not None and basic.ca:
        return "the leaf certificate is a CA"
    if usage is None or not usage.digital_signature:
        return "the leaf certificate lacks keyUsage digitalSignature"
    return None


E = TypeVar("E", bound=x509.ExtensionType)


def _extension(extensions: x509.Extensions, kind: type[E]) -> E | None:
    try:
        return extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _check_cose(doc: AttestationDocument, leaf: x509.Certificate | None) -> list[Refusal]:
    """COSE_Sign1 (RFC 9052 s4.4): ES384 over ["Signature1", protected, external_aad=b"", payload],
    with the signature as raw r||s, which cryptography wants as DER."""
    if leaf is None:
        return [Refusal(SIGNATURE_INVALID, "cannot check the signature: the leaf certificate does not parse")]
    key = _p384_key(leaf)
    if key is None:
        return [Refusal(SIGNATURE_INVALID, "the leaf key is not a valid ECDSA P-384 key, as ES384 requires")]
    to_be_signed = cbor2.dumps(["Signature1", doc.protected, b"", doc.payload])
    half = len(doc.signature) // 2
    r = int.from_bytes(doc.signature[:half], "big")
    s = int.from_bytes(doc.signature[half:], "big")
    try:
        key.verify(encode_dss_signature(r, s), to_be_signed, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        return [Refusal(SIGNATURE_INVALID, "the COSE_Sign1 signature does not verify under the leaf key")]
    return []
