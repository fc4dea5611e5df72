"""Real NitroTPM documents (attestable AMIs on EC2, tests/data/nitro/README.md says where they come from):
they parse as NITRO_TPM and verify against the pinned AWS root inside their chain windows (test_service.py
also judges one through the attestation-verifier service); the cryptography library's X.509 path builder
agrees on their chains; every mutation (each signed field, the signature, the chain, the map encoding) is
refused."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import cbor2
import pytest
from cryptography import x509

from privmesh.attestation.document import KIND_NITRO_TPM, MalformedDocument, parse_document
from privmesh.attestation.nitro import AWS_NITRO_ROOT_SHA256, NitroVerifier
from privmesh.attestation.policy import PcrSet, Policy, evaluate
from privmesh.enclave.nitrotpm_simulator import indefinite_map
from tests.attestation.conftest import flip_bit, read_document
from tests.attestation.test_chain_crosscheck import library_accepts, walk_accepts
from tests.attestation.test_nitrotpm import _parts, _with_payload

UTC = timezone.utc


class Real:
    """One real document and the facts its source states: the nonce it was asked for, its chain window."""

    def __init__(self, name: str, nonce: str, issued: datetime, leaf_expires: datetime) -> None:
        self.name, self.nonce, self.issued, self.leaf_expires = name, bytes.fromhex(nonce), issued, leaf_expires
        self.raw = read_document(name)
        self.in_window = issued + timedelta(minutes=30)


REAL = [
    Real("vaportpm_nitrotpm_2026-02-02.b64", "8ec265e6a21b13c946c70ee90b604c4aa7a742d4a334f1f2b62e6088a002cc82",
         datetime(2026, 2, 2, 7, 28, 28, 379000, tzinfo=UTC), datetime(2026, 2, 2, 10, 28, 28, tzinfo=UTC)),
    Real("vaportpm_nitrotpm_2026-02-03.b64", "230af3f7c0ec43ccf99a4cab47ac61469a36ea74b1e79740fdf8ccfc8f56161a",
         datetime(2026, 2, 3, 10, 12, 2, 437000, tzinfo=UTC), datetime(2026, 2, 3, 13, 12, 2, tzinfo=UTC)),
]
IDS = [r.name.removesuffix(".b64") for r in REAL]
AWS = NitroVerifier(pinned_sha256=[AWS_NITRO_ROOT_SHA256])


def _reasons_at(raw: bytes, at: datetime) -> set[str]:
    return {r.reason for r in AWS.verify(parse_document(raw), at)}


@pytest.mark.parametrize("real", REAL, ids=IDS)
def test_real_document_parses_as_nitrotpm(real: Real) -> None:
    cose, payload = _parts(real.raw)
    assert real.raw[0] == 0x84 and cose[2][0] == 0xBF  # untagged COSE_Sign1, indefinite-length payload map
    assert indefinite_map(payload) == cose[2]  # the mutations below re-encode exactly what AWS signed
    doc = parse_document(real.raw)
    assert doc.kind == KIND_NITRO_TPM and "-tpm" in doc.module_id
    assert sorted(doc.pcrs) == list(range(24)) and all(len(v) == 48 for v in doc.pcrs.values())
    assert doc.nonce == real.nonce and doc.timestamp == real.issued
    assert doc.public_key is not None and len(doc.public_key) == 65 and doc.public_key[0] == 0x04  # the TPM AK
    assert doc.user_data is None  # CBOR null, as on enclave documents


@pytest.mark.parametrize("real", REAL, ids=IDS)
def test_real_document_verifies_only_inside_its_chain_window(real: Real) -> None:
    assert _reasons_at(real.raw, real.issued) == set()
    assert _reasons_at(real.raw, real.in_window) == set()
    assert _reasons_at(real.raw, real.leaf_expires + timedelta(seconds=1)) == {"CERTIFICATE_EXPIRED"}
    assert "CERTIFICATE_EXPIRED" in _reasons_at(real.raw, real.issued - timedelta(minutes=5))


@pytest.mark.parametrize("real", REAL, ids=IDS)
def test_the_library_path_builder_agrees_on_the_real_chains(aws_root: x509.Certificate, real: Real) -> None:
    doc = parse_document(real.raw)
    assert walk_accepts(AWS, doc, real.in_window) and library_accepts(doc, aws_root, real.in_window)
    bundle = list(doc.cabundle)
    for mutated in (replace(doc, cabundle=(bundle[0], *bundle[2:])), replace(doc, cabundle=()),
                    replace(doc, certificate=flip_bit(doc.certificate, -5))):
        assert not walk_accepts(AWS, mutated, real.in_window)
        assert not library_accepts(mutated, aws_root, real.in_window)


_FIELD_CHANGES: dict[str, Any] = {
    "module_id": lambda v: v[:-1] + "1",
    "digest": lambda v: "SHA512",
    "timestamp": lambda v: v + 1,
    "nitrotpm_pcrs": lambda v: {**v, 4: bytes(48)},
    "certificate": lambda v: flip_bit(v, 40),
    "cabundle": lambda v: [*v[:1], flip_bit(v[1], 40), *v[2:]],
    "public_key": lambda v: v[:-1] + bytes([v[-1] ^ 1]),
    "user_data": lambda v: b"\x00",
    "nonce": lambda v: bytes([v[0] ^ 1]) + v[1:],
}


@pytest.mark.parametrize("real", REAL, ids=IDS)
@pytest.mark.parametrize("field", sorted(_FIELD_CHANGES))
def test_every_field_changed_after_signing_is_refused(real: Real, field: str) -> None:
    _, payload = _parts(real.raw)
    payload[field] = _FIELD_CHANGES[field](payload[field])
    mutated = _with_payload(real.raw, indefinite_map(payload))
    try:
        reasons = _reasons_at(mutated, real.in_window)
    except MalformedDocument:  # a changed certificate may no longer parse: refused all the same
        assert field in {"certificate", "cabundle"}
        return
    assert reasons and "SIGNATURE_INVALID" in reasons | ({"CHAIN_INVALID"} if field == "cabundle" else set())


@pytest.mark.parametrize("real", REAL, ids=IDS)
def test_a_flipped_signature_bit_is_refused(real: Real) -> None:
    cose, _ = _parts(real.raw)
    for position in (0, 47, 48, 95):
        signature = cose[3][:position] + bytes([cose[3][position] ^ 1]) + cose[3][position + 1:]
        assert _reasons_at(cbor2.dumps([cose[0], cose[1], cose[2], signature]), real.in_window) == \
            {"SIGNATURE_INVALID"}
    with pytest.raises(MalformedDocument):
        parse_document(cbor2.dumps([cose[0], cose[1], cose[2], cose[3][:-1]]))


@pytest.mark.parametrize("real", REAL, ids=IDS)
def test_the_map_encoding_is_strict(real: Real) -> None:
    _, payload = _parts(real.raw)
    body = indefinite_map(payload)

    def malformed(encoded: bytes) -> MalformedDocument:
        with pytest.raises(MalformedDocument) as info:
            parse_document(_with_payload(real.raw, encoded))
        return info.value

    assert malformed(cbor2.dumps(payload)).field == "payload"  # the same items in a definite-length map
    assert "duplicate" in malformed(body[:-1] + cbor2.dumps("nonce") + cbor2.dumps(b"x") + b"\xff").message
    assert "break" in malformed(body[:-1]).message
    assert "trailing" in malformed(body + b"\x00").message
    renamed = {("pcrs" if k == "nitrotpm_pcrs" else k): v for k, v in payload.items()}
    assert "NitroTPM payloads only" in malformed(indefinite_map(renamed)).message


@pytest.mark.parametrize("real", REAL, ids=IDS)
def test_policies_on_the_real_ami_pcrs(real: Real) -> None:
    doc = parse_document(real.raw)
    boot = {i: doc.pcrs[i] for i in (4, 7)}
    other = {4: bytes(48), 7: doc.pcrs[7]}
    policy = Policy("ami", [PcrSet(other), PcrSet(boot)], kind=KIND_NITRO_TPM, require_nonce=False)
    policy.validate()
    at = real.issued + timedelta(minutes=1)
    assert not evaluate(policy, doc, at)
    assert {r.reason for r in evaluate(policy, doc, real.in_window)} == {"DOCUMENT_STALE"}  # 30 min > 5 min
    assert {r.reason for r in evaluate(Policy("ami", [PcrSet(other)], kind=KIND_NITRO_TPM, require_nonce=False),
                                       doc, at)} == {"PCR_MISMATCH"}
    assert {r.reason for r in evaluate(Policy("enclave", [PcrSet({0: doc.pcrs[0]})], require_nonce=False),
                                       doc, at)} == {"KIND_MISMATCH"}


def test_one_ami_policy_admits_both_instances() -> None:
    """Both documents come from instances booted from the same image: the boot PCRs (4, 7) an AMI build
    publishes match across instances, while PCR10 (the runtime measurement log) differs."""
    first, second = (parse_document(r.raw) for r in REAL)
    assert first.module_id != second.module_id and first.pcrs[10] != second.pcrs[10]
    policy = Policy("ami", [PcrSet({i: first.pcrs[i] for i in (4, 7)})], kind=KIND_NITRO_TPM, require_nonce=False)
    policy.validate()
    for real, doc in zip(REAL, (first, second), strict=True):
        assert not evaluate(policy, doc, real.issued + timedelta(minutes=1))
