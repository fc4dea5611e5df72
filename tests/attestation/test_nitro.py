"""Verification: the real documents verify inside their window and nowhere else; every tampered part, a
foreign root and each violated certificate constraint yields its refusal reason, all at once."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from privmesh.attestation.document import REFUSAL_REASONS, Refusal, parse_document
from privmesh.attestation.nitro import (
    AWS_NITRO_ROOT_SHA256,
    NitroVerifier,
    UntrustedRoot,
    fingerprint_sha256,
    load_pinned_root,
)

from .conftest import (
    AFTER_WINDOW,
    BEFORE_WINDOW,
    IN_WINDOW,
    NITRO_DIR,
    SYNTH_AT,
    Cose,
    Pki,
    flip_bit,
    key_usage,
    make_cert,
    new_key,
    reasons,
)


def verify(verifier: NitroVerifier, raw: bytes, at: datetime = IN_WINDOW) -> set[str]:
    return reasons(verifier.verify(parse_document(raw), at))


# --- the contract ---------------------------------------------------------------------------------------

def test_reasons_are_the_contracts_refusal_reasons() -> None:
    from privmesh.attestation.v1 import attestation_pb2

    values = attestation_pb2.RefusalReason.DESCRIPTOR.values_by_name
    names = {n.removeprefix("REFUSAL_REASON_") for n in values}
    assert names - {"UNSPECIFIED"} == REFUSAL_REASONS


def test_refusal_rejects_unknown_reason() -> None:
    with pytest.raises(ValueError, match="unknown refusal reason"):
        Refusal("REFUSAL_REASON_PCR_MISMATCH", "prefixed names are not reasons")


# --- pinning ------------------------------------------------------------------------------------------

def test_aws_root_matches_the_pin(aws_root: x509.Certificate) -> None:
    assert fingerprint_sha256(aws_root.public_bytes(Encoding.DER)) == AWS_NITRO_ROOT_SHA256
    assert aws_root.subject.rfc4514_string() == "CN=aws.nitro-enclaves,OU=AWS,O=Amazon,C=US"


def test_pin_accepts_colons_and_upper_case(aws_root: x509.Certificate) -> None:
    pem = (NITRO_DIR / "root.pem").read_bytes()
    colons = ":".join(AWS_NITRO_ROOT_SHA256[i:i + 2] for i in range(0, 64, 2)).upper()
    assert load_pinned_root(pem, colons) == aws_root


def test_root_with_another_fingerprint_is_not_loaded(nitro_pki: Pki, aws_root: x509.Certificate) -> None:
    with pytest.raises(UntrustedRoot, match="does not match"):
        load_pinned_root(nitro_pki.root_cert.public_bytes(Encoding.PEM))
    with pytest.raises(UntrustedRoot, match="does not match"):
        load_pinned_root(aws_root.public_bytes(Encoding.PEM), "00" * 32)
    with pytest.raises(UntrustedRoot, match="not a PEM"):
        load_pinned_root(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")


def test_verifier_needs_a_root() -> None:
    with pytest.raises(ValueError, match="at least one"):
        NitroVerifier([])


# --- the real documents ---------------------------------------------------------------------------------

@pytest.fixture(params=["production", "debug"])
def real_raw(request: pytest.FixtureRequest, production_raw: bytes, debug_raw: bytes) -> bytes:
    return production_raw if request.param == "production" else debug_raw


def test_real_document_verifies_inside_its_window(aws_verifier: NitroVerifier, real_raw: bytes) -> None:
    assert aws_verifier.verify(parse_document(real_raw), IN_WINDOW) == []


def test_real_document_window_edges_are_inclusive(aws_verifier: NitroVerifier, production_raw: bytes) -> None:
    doc = parse_document(production_raw)
    leaf = x509.load_der_x509_certificate(doc.certificate)
    assert leaf.not_valid_before_utc == datetime(2024, 9, 7, 14, 37, 36, tzinfo=timezone.utc)
    assert leaf.not_valid_after_utc == datetime(2024, 9, 7, 17, 37, 39, tzinfo=timezone.utc)
    assert aws_verifier.verify(doc, leaf.not_valid_before_utc) == []
    assert aws_verifier.verify(doc, leaf.not_valid_after_utc) == []
    second = timedelta(seconds=1)
    assert reasons(aws_verifier.verify(doc, leaf.not_valid_before_utc - second)) == {"CERTIFICATE_EXPIRED"}
    assert reasons(aws_verifier.verify(doc, leaf.not_valid_after_utc + second)) == {"CERTIFICATE_EXPIRED"}


@pytest.mark.parametrize("at", [BEFORE_WINDOW, AFTER_WINDOW, datetime(2049, 10, 29, tzinfo=timezone.utc)])
def test_real_document_refused_outside_its_window(aws_verifier: NitroVerifier, real_raw: bytes,
                                                  at: datetime) -> None:
    refusals = aws_verifier.verify(parse_document(real_raw), at)
    assert reasons(refusals) == {"CERTIFICATE_EXPIRED"}
    assert any("certificate is valid" in r.message for r in refusals)


def test_default_time_is_now(aws_verifier: NitroVerifier, production_raw: bytes) -> None:
    # The leaf lived three hours in September 2024; "now" is long past it.
    assert "CERTIFICATE_EXPIRED" in reasons(aws_verifier.verify(parse_document(production_raw)))


def test_naive_time_is_a_programming_error(aws_verifier: NitroVerifier, production_raw: bytes) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        aws_verifier.verify(parse_document(production_raw), datetime(2024, 9, 7, 15))


def test_selfsigned_document_is_refused(aws_verifier: NitroVerifier, selfsigned_raw: bytes) -> None:
    found = verify(aws_verifier, selfsigned_raw)
    assert found & {"ROOT_NOT_TRUSTED", "CHAIN_INVALID"}
    assert "SIGNATURE_INVALID" not in found  # it is validly signed, just by nobody we trust


def test_selfsigned_document_refused_even_when_its_root_is_carried(aws_verifier: NitroVerifier,
                                                                   selfsigned_raw: bytes) -> None:
    cose = Cose.decode(selfsigned_raw)
    cose.payload["cabundle"] = [cose.payload["certificate"]]
    assert "ROOT_NOT_TRUSTED" in verify(aws_verifier, cose.encode())


def test_another_pinned_root_refuses_real_documents(nitro_pki: Pki, production_raw: bytes) -> None:
    assert verify(NitroVerifier([nitro_pki.root_cert]), production_raw) == {"ROOT_NOT_TRUSTED"}


def test_a_pinned_root_among_several(nitro_pki: Pki, aws_root: x509.Certificate, production_raw: bytes) -> None:
    assert verify(NitroVerifier([nitro_pki.root_cert, aws_root]), production_raw) == set()


# --- tampering with the real documents ------------------------------------------------------------------

def _payload_offset(payload: bytes, where: str) -> int:
    """An offset inside the value of a payload field (the flip keeps the payload parseable)."""
    doc = parse_document(cbor2.dumps([b"\xa1\x01\x38\x22", {}, payload, b"\x00" * 96]))
    if where == "module_id":
        return payload.index(doc.module_id.encode()) + 3  # an ASCII letter stays ASCII
    if where in ("pcr0", "pcr4"):
        return payload.index(doc.pcrs[int(where[-1])]) + 10
    if where == "timestamp":
        millis = int(doc.timestamp.timestamp() * 1000)
        return payload.index(cbor2.dumps(millis)) + 8  # the low byte of the uint64
    return payload.index(cbor2.dumps(where)) + len(cbor2.dumps(where)) + 3 + 100  # 3: bstr header


@pytest.mark.parametrize("where", ["module_id", "pcr0", "pcr4", "user_data", "nonce", "timestamp"])
def test_flipped_bit_in_payload(aws_verifier: NitroVerifier, production_raw: bytes, where: str) -> None:
    body = cbor2.loads(production_raw)
    body[2] = flip_bit(body[2], _payload_offset(body[2], where))
    tampered = cbor2.dumps(body)
    assert parse_document(tampered).payload != parse_document(production_raw).payload
    assert verify(aws_verifier, tampered) == {"SIGNATURE_INVALID"}


@pytest.mark.parametrize("index", [0, 1, 47, 48, 60, 95])
def test_flipped_bit_in_signature(aws_verifier: NitroVerifier, production_raw: bytes, index: int) -> None:
    body = cbor2.loads(production_raw)
    body[3] = flip_bit(body[3], index, 7)
    assert verify(aws_verifier, cbor2.dumps(body)) == {"SIGNATURE_INVALID"}


@pytest.mark.parametrize("signature", [b"\x00" * 96, b"\xff" * 96, b"\x00" * 48 + b"\x01" * 48])
def test_degenerate_signatures(aws_verifier: NitroVerifier, production_raw: bytes, signature: bytes) -> None:
    body = cbor2.loads(production_raw)
    body[3] = signature
    assert verify(aws_verifier, cbor2.dumps(body)) == {"SIGNATURE_INVALID"}


def test_swapped_protected_header_encoding(aws_verifier: NitroVerifier, production_raw: bytes) -> None:
    # Same meaning, non-minimal encoding of -35: parses, but it is not what was signed.
    body = cbor2.loads(production_raw)
    body[0] = b"\xa1\x01\x39\x00\x22"
    assert verify(aws_verifier, cbor2.dumps(body)) == {"SIGNATURE_INVALID"}


CHAIN = ["certificate", "cabundle[3]", "cabundle[2]", "cabundle[1]", "cabundle[0]"]


def _tamper_cert(raw: bytes, which: str, index_from_end: int) -> bytes:
    cose = Cose.decode(raw)
    if which == "certificate":
        cert = cose.payload["certificate"]
        cose.payload["certificate"] = flip_bit(cert, len(cert) - index_from_end)
    else:
        i = int(which[len("cabundle["):-1])
        bundle = list(cose.payload["cabundle"])
        bundle[i] = flip_bit(bundle[i], len(bundle[i]) - index_from_end)
        cose.payload["cabundle"] = bundle
    return cose.encode()


@pytest.mark.parametrize("which", CHAIN)
def test_flipped_bit_in_certificate_signature(aws_verifier: NitroVerifier, production_raw: bytes,
                                              which: str) -> None:
    # The last byte is inside the certificate's own ECDSA signature: the DER still parses.
    found = verify(aws_verifier, _tamper_cert(production_raw, which, 1))
    # The payload changed, so the COSE signature fails too; the root is judged by its bytes alone.
    expected = {"ROOT_NOT_TRUSTED"} if which == "cabundle[0]" else {"CHAIN_INVALID"}
    assert found == expected | {"SIGNATURE_INVALID"}


@pytest.mark.parametrize("which", CHAIN)
def test_flipped_bit_in_certificate_body(aws_verifier: NitroVerifier, production_raw: bytes, which: str) -> None:
    # About 120 bytes from the end lies the subject public key: the signed body changes.
    found = verify(aws_verifier, _tamper_cert(production_raw, which, 120))
    assert "SIGNATURE_INVALID" in found
    assert found & {"CHAIN_INVALID", "ROOT_NOT_TRUSTED"}
    if which == "cabundle[0]":
        assert "ROOT_NOT_TRUSTED" in found


def test_certificate_that_is_not_der(aws_verifier: NitroVerifier, production_raw: bytes) -> None:
    cose = Cose.decode(production_raw)
    cose.payload["certificate"] = b"\x30\x03\x02\x01\x00"
    bundle = list(cose.payload["cabundle"])
    bundle[2] = b"not a certificate"
    cose.payload["cabundle"] = bundle
    refusals = aws_verifier.verify(parse_document(cose.encode()), IN_WINDOW)
    assert reasons(refusals) == {"CHAIN_INVALID", "SIGNATURE_INVALID"}
    assert any("cabundle[2] is not a DER" in r.message for r in refusals)


def test_cabundle_in_wrong_order(aws_verifier: NitroVerifier, production_raw: bytes) -> None:
    cose = Cose.decode(production_raw)
    cose.payload["cabundle"] = list(reversed(cose.payload["cabundle"]))
    assert {"CHAIN_INVALID", "ROOT_NOT_TRUSTED", "SIGNATURE_INVALID"} <= verify(aws_verifier, cose.encode())


def test_intermediate_missing(aws_verifier: NitroVerifier, production_raw: bytes) -> None:
    cose = Cose.decode(production_raw)
    del cose.payload["cabundle"][2]
    assert "CHAIN_INVALID" in verify(aws_verifier, cose.encode())


def test_leaf_from_the_other_document(aws_verifier: NitroVerifier, production_raw: bytes,
                                      debug_raw: bytes) -> None:
    # Same instance CA, so the chain holds; but the other leaf's key did not sign this payload.
    cose = Cose.decode(production_raw)
    cose.payload["certificate"] = Cose.decode(debug_raw).payload["certificate"]
    assert verify(aws_verifier, cose.encode()) == {"SIGNATURE_INVALID"}


def test_digest_other_than_sha384(aws_verifier: NitroVerifier, production_raw: bytes) -> None:
    cose = Cose.decode(production_raw)
    cose.payload["digest"] = "SHA256"
    assert verify(aws_verifier, cose.encode()) == {"DIGEST_UNSUPPORTED", "SIGNATURE_INVALID"}


def test_all_refusals_are_reported(aws_verifier: NitroVerifier, production_raw: bytes) -> None:
    cose = Cose.decode(production_raw)
    cose.payload["digest"] = "SHA512"
    cose.payload["cabundle"] = [b"\x30\x00", *cose.payload["cabundle"][1:]]
    found = reasons(aws_verifier.verify(parse_document(cose.encode()), AFTER_WINDOW))
    assert found == {"DIGEST_UNSUPPORTED", "ROOT_NOT_TRUSTED", "CHAIN_INVALID", "CERTIFICATE_EXPIRED",
                     "SIGNATURE_INVALID"}


# --- the cache never skips a check ----------------------------------------------------------------------

def test_cache_does_not_skip_time_checks(production_raw: bytes, aws_root: x509.Certificate) -> None:
    verifier = NitroVerifier([aws_root])
    doc = parse_document(production_raw)
    assert verifier.verify(doc, IN_WINDOW) == []
    assert reasons(verifier.verify(doc, AFTER_WINDOW)) == {"CERTIFICATE_EXPIRED"}
    assert verifier.verify(doc, IN_WINDOW) == []


def test_cache_does_not_skip_tampering(production_raw: bytes, aws_root: x509.Certificate) -> None:
    verifier = NitroVerifier([aws_root])
    assert verify(verifier, production_raw) == set()
    assert "CHAIN_INVALID" in verify(verifier, _tamper_cert(production_raw, "cabundle[2]", 1))
    assert "CHAIN_INVALID" in verify(verifier, _tamper_cert(production_raw, "certificate", 1))
    assert verify(verifier, production_raw) == set()


def test_cache_is_bounded(production_raw: bytes, debug_raw: bytes, aws_root: x509.Certificate) -> None:
    verifier = NitroVerifier([aws_root], cache_size=2)
    for raw in (production_raw, debug_raw, production_raw):
        assert verify(verifier, raw) == set()
    assert len(verifier._certs._items) <= 2
    assert len(verifier._links._items) <= 2


# --- certificate constraints, with a synthetic PKI we control -------------------------------------------

def test_synthetic_document_verifies(nitro_pki: Pki, nitro_pki_verifier: NitroVerifier) -> None:
    assert verify(nitro_pki_verifier, nitro_pki.document(), SYNTH_AT) == set()
    assert verify(nitro_pki_verifier, nitro_pki.document(tagged=True), SYNTH_AT) == set()


def test_synthetic_document_refused_by_production_pin(nitro_pki: Pki, aws_verifier: NitroVerifier) -> None:
    assert verify(aws_verifier, nitro_pki.document(), SYNTH_AT) == {"ROOT_NOT_TRUSTED"}


def test_synthetic_digest_only(nitro_pki: Pki, nitro_pki_verifier: NitroVerifier) -> None:
    assert verify(nitro_pki_verifier, nitro_pki.document(digest="SHA256"), SYNTH_AT) == {"DIGEST_UNSUPPORTED"}


def test_cose_signed_by_another_key(nitro_pki: Pki, nitro_pki_verifier: NitroVerifier) -> None:
    assert verify(nitro_pki_verifier, nitro_pki.document(sign_with=new_key()), SYNTH_AT) == {"SIGNATURE_INVALID"}


def _with_leaf(nitro_pki: Pki, **kwargs: object) -> bytes:
    key, leaf = nitro_pki.issue(**kwargs)  # type: ignore[arg-type]
    return nitro_pki.document(certificate=leaf, sign_with=key)


CONSTRAINT_CASES = {
    "leaf is a CA": {"ca": True, "usage": key_usage(digital_signature=True, key_cert_sign=True)},
    "leaf without digitalSignature": {"usage": key_usage(key_cert_sign=False)},
    "leaf with unknown critical extension": {
        "extra": [(x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00"), True)],
    },
    "leaf with name constraints (critical, unhandled)": {
        "extra": [(x509.NameConstraints(permitted_subtrees=[x509.DNSName("example.com")],
                                        excluded_subtrees=None), True)],
    },
}


@pytest.mark.parametrize("kwargs", CONSTRAINT_CASES.values(), ids=CONSTRAINT_CASES.keys())
def test_leaf_constraints(nitro_pki: Pki, nitro_pki_verifier: NitroVerifier, kwargs: dict[str, object]) -> None:
    assert verify(nitro_pki_verifier, _with_leaf(nitro_pki, **kwargs), SYNTH_AT) == {"CERTIFICATE_CONSTRAINTS"}


def test_leaf_without_basic_constraints_is_fine(nitro_pki: Pki, nitro_pki_verifier: NitroVerifier) -> None:
    assert verify(nitro_pki_verifier, _with_leaf(nitro_pki, basic_constraints=False), SYNTH_AT) == set()


def _with_intermediate(nitro_pki: Pki, **kwargs: object) -> bytes:
    inter_key = new_key()
    inter = make_cert("intermediate", inter_key, "root", nitro_pki.root_key, **kwargs)  # type: ignore[arg-type]
    leaf_key = new_key()
    leaf = make_cert("leaf", leaf_key, "intermediate", inter_key, ca=False)
    return nitro_pki.document(certificate=leaf, cabundle=[nitro_pki.root, inter], sign_with=leaf_key)


INTERMEDIATE_CASES = {
    "not a CA": {"ca": False, "usage": key_usage(key_cert_sign=True)},
    "no basicConstraints": {"ca": True, "basic_constraints": False},
    "no keyCertSign": {"ca": True, "usage": key_usage(digital_signature=True)},
}


@pytest.mark.parametrize("kwargs", INTERMEDIATE_CASES.values(), ids=INTERMEDIATE_CASES.keys())
def test_intermediate_constraints(nitro_pki: Pki, nitro_pki_verifier: NitroVerifier, kwargs: dict[str, object]) -> None:
    assert verify(nitro_pki_verifier, _with_intermediate(nitro_pki, **kwargs), SYNTH_AT) == {"CERTIFICATE_CONSTRAINTS"}


def test_path_length_constraint(nitro_pki: Pki, nitro_pki_verifier: NitroVerifier) -> None:
    # root -> inter (pathLen 0) -> sub-CA -> leaf: one CA too many below `inter`.
    sub_key, leaf_key = new_key(), new_key()
    sub = make_cert("sub", sub_key, "intermediate", nitro_pki.inter_key, ca=True)
    leaf = make_cert("leaf", leaf_key, "sub", sub_key, ca=False)
    raw = nitro_pki.document(certificate=leaf, cabundle=[nitro_pki.root, nitro_pki.inter, sub], sign_with=leaf_key)
    refusals = nitro_pki_verifier.verify(parse_document(raw), SYNTH_AT)
    assert reasons(refusals) == {"CERTIFICATE_CONSTRAINTS"}
    assert "pathLenConstraint 0" in refusals[0].message


def test_expired_intermediate_with_valid_leaf(nitro_pki: Pki, nitro_pki_verifier: NitroVerifier) -> None:
    raw = _with_intermediate(nitro_pki, ca=True, not_before=SYNTH_AT - timedelta(days=2),
                             not_after=SYNTH_AT - timedelta(seconds=1))
    refusals = nitro_pki_verifier.verify(parse_document(raw), SYNTH_AT)
    assert reasons(refusals) == {"CERTIFICATE_EXPIRED"}
    assert refusals[0].message.startswith("cabundle[1]")


def test_not_yet_valid_root(nitro_pki: Pki) -> None:
    root_key = new_key()
    root = make_cert("root", root_key, "root", root_key, ca=True, not_before=SYNTH_AT + timedelta(days=1),
                     not_after=SYNTH_AT + timedelta(days=2))
    leaf_key = new_key()
    leaf = make_cert("leaf", leaf_key, "root", root_key, ca=False)
    raw = nitro_pki.document(certificate=leaf, cabundle=[root], sign_with=leaf_key)
    verifier = NitroVerifier([x509.load_der_x509_certificate(root)])
    assert verify(verifier, raw, SYNTH_AT) == {"CERTIFICATE_EXPIRED"}


def test_leaf_signed_by_an_impostor_with_the_same_name(nitro_pki: Pki, nitro_pki_verifier: NitroVerifier) -> None:
    leaf_key = new_key()
    leaf = make_cert("leaf", leaf_key, "intermediate", new_key(), ca=False)
    raw = nitro_pki.document(certificate=leaf, sign_with=leaf_key)
    assert verify(nitro_pki_verifier, raw, SYNTH_AT) == {"CHAIN_INVALID"}


def test_issuer_name_mismatch(nitro_pki: Pki, nitro_pki_verifier: NitroVerifier) -> None:
    leaf_key = new_key()
    leaf = make_cert("leaf", leaf_key, "someone-else", nitro_pki.inter_key, ca=False)
    raw = nitro_pki.document(certificate=leaf, sign_with=leaf_key)
    assert verify(nitro_pki_verifier, raw, SYNTH_AT) == {"CHAIN_INVALID"}


def test_link_signed_with_sha256(nitro_pki: Pki, nitro_pki_verifier: NitroVerifier) -> None:
    key, leaf = nitro_pki.issue(algorithm=hashes.SHA256())
    raw = nitro_pki.document(certificate=leaf, sign_with=key)
    refusals = nitro_pki_verifier.verify(parse_document(raw), SYNTH_AT)
    assert reasons(refusals) == {"CHAIN_INVALID"}
    assert "ecdsa-with-SHA384" in refusals[0].message


def test_leaf_key_not_p384(nitro_pki: Pki, nitro_pki_verifier: NitroVerifier) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = make_cert("leaf", key, "intermediate", nitro_pki.inter_key, ca=False)  # type: ignore[arg-type]
    document = nitro_pki.document(certificate=leaf, sign_with=key)
    assert verify(nitro_pki_verifier, document, SYNTH_AT) == {"SIGNATURE_INVALID"}


def test_path_that_is_only_the_pinned_root(nitro_pki: Pki, nitro_pki_verifier: NitroVerifier) -> None:
    # The document's leaf *is* the pinned root: a CA cannot be the leaf.
    raw = nitro_pki.document(certificate=nitro_pki.root, cabundle=[nitro_pki.root], sign_with=nitro_pki.root_key)
    assert verify(nitro_pki_verifier, raw, SYNTH_AT) == {"CERTIFICATE_CONSTRAINTS"}


@pytest.mark.parametrize("which", ["certificate", "intermediate"])
def test_certificate_with_an_altered_version_field_is_refused(nitro_pki: Pki, nitro_pki_verifier: NitroVerifier,
                                                              which: str) -> None:
    """cryptography raises InvalidVersion (not a ValueError) for a version other than v1..v3: a refusal, not
    an error."""
    def altered(der: bytes) -> bytes:
        at = der.index(b"\xa0\x03\x02\x01\x02")  # TBSCertificate's [0] EXPLICIT version v3
        return der[:at] + b"\xa0\x03\x02\x01\x07" + der[at + 5:]

    if which == "certificate":
        document = nitro_pki.document(certificate=altered(nitro_pki.leaf))
    else:
        document = nitro_pki.document(cabundle=[nitro_pki.root, altered(nitro_pki.inter)])
    found = verify(nitro_pki_verifier, document, SYNTH_AT)
    assert "CHAIN_INVALID" in found
