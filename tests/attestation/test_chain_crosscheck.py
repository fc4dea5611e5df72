"""The hand-written chain walk of privmesh.attestation.nitro agrees with cryptography.x509.verification.

The library path: the pinned root as the only trust anchor, the CA bundle as untrusted intermediates, the
Web PKI CA profile for the CAs and, for the leaf (a Nitro leaf has no SAN or EKU), a custom extension policy
that asks what the hand-written walk asks: keyUsage digitalSignature and no CA flag. Both run on the real
Nitro documents at and around their verification times and on mutated chains.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import pytest
from cryptography import x509
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from privmesh.attestation.document import AttestationDocument, parse_document
from privmesh.attestation.nitro import (
    CERTIFICATE_CONSTRAINTS,
    CERTIFICATE_EXPIRED,
    CHAIN_INVALID,
    ROOT_NOT_TRUSTED,
    NitroVerifier,
)

from .conftest import AFTER_WINDOW, BEFORE_WINDOW, IN_WINDOW, flip_bit, read_document

CHAIN_REASONS = {CHAIN_INVALID, ROOT_NOT_TRUSTED, CERTIFICATE_EXPIRED, CERTIFICATE_CONSTRAINTS}


def _leaf_usage(_policy: Policy, _cert: x509.Certificate, usage: x509.KeyUsage) -> None:
    if not usage.digital_signature:
        raise ValueError("the leaf certificate lacks keyUsage digitalSignature")


def _leaf_not_ca(_policy: Policy, _cert: x509.Certificate, basic: x509.BasicConstraints | None) -> None:
    if basic is not None and basic.ca:
        raise ValueError("the leaf certificate is a CA")


LEAF_POLICY = (
    ExtensionPolicy.permit_all()
    .require_present(x509.KeyUsage, Criticality.AGNOSTIC, _leaf_usage)
    .may_be_present(x509.BasicConstraints, Criticality.AGNOSTIC, _leaf_not_ca)
)


def library_accepts(doc: AttestationDocument, root: x509.Certificate, at: datetime) -> bool:
    try:
        leaf = x509.load_der_x509_certificate(doc.certificate)
        pool = [x509.load_der_x509_certificate(der) for der in doc.cabundle]
    except ValueError:
        return False
    verifier = (PolicyBuilder().store(Store([root])).time(at)
                .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=LEAF_POLICY)
                .build_client_verifier())
    try:
        verifier.verify(leaf, pool)
    except VerificationError:
        return False
    return True


def walk_accepts(verifier: NitroVerifier, doc: AttestationDocument, at: datetime) -> bool:
    return not {r.reason for r in verifier.verify(doc, at)} & CHAIN_REASONS


def _docs() -> dict[str, AttestationDocument]:
    return {name: parse_document(read_document(name)) for name in
            ("blocky_nitro_attestation.b64", "blocky_nitro_attestation_debug.b64",
             "blocky_selfsigned_attestation.b64")}


DOCS = _docs()
PRODUCTION = DOCS["blocky_nitro_attestation.b64"]
DEBUG = DOCS["blocky_nitro_attestation_debug.b64"]


def _mutations() -> dict[str, AttestationDocument]:
    bundle = list(PRODUCTION.cabundle)
    out = {
        "intermediate missing": replace(PRODUCTION, cabundle=(bundle[0], *bundle[2:])),
        "no CA bundle": replace(PRODUCTION, cabundle=()),
        "leaf signature flipped": replace(PRODUCTION, certificate=flip_bit(PRODUCTION.certificate, -5)),
    }
    for i in range(1, len(bundle)):
        out[f"cabundle[{i}] signature flipped"] = replace(
            PRODUCTION, cabundle=(*bundle[:i], flip_bit(bundle[i], -5), *bundle[i + 1:]))
    return out


@pytest.mark.parametrize("name", sorted(DOCS))
@pytest.mark.parametrize("at", [IN_WINDOW, BEFORE_WINDOW, AFTER_WINDOW], ids=["in", "before", "after"])
def test_real_documents_agree(aws_root: x509.Certificate, aws_verifier: NitroVerifier, name: str,
                              at: datetime) -> None:
    doc = DOCS[name]
    assert walk_accepts(aws_verifier, doc, at) == library_accepts(doc, aws_root, at)


def test_the_real_chains_are_accepted_by_both(aws_root: x509.Certificate, aws_verifier: NitroVerifier) -> None:
    # Guards the cross-check itself: a library set-up that refuses everything would "agree" on every refusal.
    for doc in (PRODUCTION, DEBUG):
        assert walk_accepts(aws_verifier, doc, IN_WINDOW) and library_accepts(doc, aws_root, IN_WINDOW)


@pytest.mark.parametrize("mutation", sorted(_mutations()))
def test_mutated_chains_are_refused_by_both(aws_root: x509.Certificate, aws_verifier: NitroVerifier,
                                            mutation: str) -> None:
    doc = _mutations()[mutation]
    assert not walk_accepts(aws_verifier, doc, IN_WINDOW)
    assert not library_accepts(doc, aws_root, IN_WINDOW)


def test_the_other_documents_leaf_chains_for_both(aws_root: x509.Certificate, aws_verifier: NitroVerifier) -> None:
    # Both real leaves hang under the same intermediates: only the COSE signature (not a chain check) refuses.
    swapped = replace(PRODUCTION, certificate=DEBUG.certificate)
    assert walk_accepts(aws_verifier, swapped, IN_WINDOW) and library_accepts(swapped, aws_root, IN_WINDOW)


@pytest.mark.parametrize("bundle", ["reordered", "with an extra certificate"])
def test_the_bundle_as_given_is_where_they_differ(aws_root: x509.Certificate, aws_verifier: NitroVerifier,
                                                  bundle: str) -> None:
    """The library builds a path from an unordered pool and ignores what it does not need; the Nitro format
    fixes the bundle (root first, then each issuer of the next), and the hand-written walk holds the document
    to it."""
    given = PRODUCTION.cabundle
    cabundle = ((given[0], *reversed(given[1:])) if bundle == "reordered"
                else (*given, PRODUCTION.certificate))
    doc = replace(PRODUCTION, cabundle=cabundle)
    assert library_accepts(doc, aws_root, IN_WINDOW)
    assert not walk_accepts(aws_verifier, doc, IN_WINDOW)
