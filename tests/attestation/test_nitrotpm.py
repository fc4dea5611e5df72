"""NitroTPM documents (attestable AMIs): the simulator's documents parse as NITRO_TPM and verify under its
root; every mutation (each field, the chain, the signature, the map encoding) is refused; policies of one
kind refuse documents of the other. The simulator's documents let the tests re-sign any payload; the real
documents (test_nitrotpm_real.py) cannot be re-signed, so malformed-but-signed payloads are tested here."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from privmesh.attestation.document import KIND_NITRO_TPM, MalformedDocument, parse_document
from privmesh.attestation.nitro import AWS_NITRO_ROOT_SHA256, NitroVerifier
from privmesh.attestation.policy import InvalidPolicy, PcrSet, Policy, claims_of, evaluate, matched_pcrs
from privmesh.enclave.nitrotpm_simulator import SimulatedNitroTpm, ami_pcrs, indefinite_map
from privmesh.enclave.simulator import DevCa, cose_sign1

AT = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)
NONCE = b"\x07" * 32


@pytest.fixture(scope="module")
def ca() -> DevCa:
    return DevCa.generate(AT)


@pytest.fixture(scope="module")
def tpm(ca: DevCa) -> SimulatedNitroTpm:
    return SimulatedNitroTpm(ca, ami="ami-v1", now=lambda: AT)


@pytest.fixture(scope="module")
def raw(tpm: SimulatedNitroTpm) -> bytes:
    return tpm.attest(public_key=b"k" * 91, user_data=b"u", nonce=NONCE)


def _parts(raw: bytes) -> tuple[list[Any], dict[str, Any]]:
    cose = cbor2.loads(raw)
    # cbor2 decodes the indefinite map for inspection only; the parser under test walks it strictly.
    return cose, dict(cbor2.loads(cose[2]))


def _with_payload(raw: bytes, payload: bytes) -> bytes:
    cose, _ = _parts(raw)
    return cbor2.dumps([cose[0], cose[1], payload, cose[3]])


def _resign(ca: DevCa, payload: bytes) -> bytes:
    return cose_sign1(ca.issue_leaf("i-0-tpm0", AT), payload)


def _resigned(ca: DevCa, payload: dict[str, Any], encode: Callable[[Any], bytes] = indefinite_map) -> bytes:
    """The payload signed again by a fresh leaf of `ca` (whose certificate it now carries)."""
    leaf = ca.issue_leaf("i-0-tpm0", AT)
    payload = {**payload, "certificate": leaf.cert.public_bytes(Encoding.DER)}
    return cose_sign1(leaf, encode(payload))


def _verify(ca: DevCa, raw: bytes) -> set[str]:
    return {r.reason for r in NitroVerifier([ca.root.cert]).verify(parse_document(raw), AT)}


def _policy(*sets: dict[int, bytes], kind: str = KIND_NITRO_TPM) -> Policy:
    policy = Policy("ami", [PcrSet(s) for s in sets], kind=kind)
    policy.validate()
    return policy


def test_simulated_document_parses_as_nitrotpm_and_verifies(ca: DevCa, raw: bytes) -> None:
    assert raw[0] == 0x84 and _parts(raw)[0][2][0] == 0xBF  # untagged COSE_Sign1, indefinite payload map
    doc = parse_document(raw)
    assert doc.kind == KIND_NITRO_TPM and sorted(doc.pcrs) == list(range(24))
    assert all(len(v) == 48 for v in doc.pcrs.values())
    assert "-tpm" in doc.module_id and doc.nonce == NONCE and doc.timestamp == AT
    assert {i: doc.pcrs[i] for i in (4, 7, 12)} == ami_pcrs("ami-v1")
    assert _verify(ca, raw) == set()
    assert claims_of(doc).kind == KIND_NITRO_TPM and not claims_of(doc).debug_mode


def test_the_aws_pin_refuses_simulator_documents(raw: bytes) -> None:
    refusals = NitroVerifier(pinned_sha256=[AWS_NITRO_ROOT_SHA256]).verify(parse_document(raw), AT)
    assert {r.reason for r in refusals} == {"ROOT_NOT_TRUSTED"}


def test_the_chain_is_checked_at_the_documents_time(ca: DevCa, raw: bytes) -> None:
    verifier = NitroVerifier([ca.root.cert])
    late = verifier.verify(parse_document(raw), AT + timedelta(hours=4))
    assert {r.reason for r in late} == {"CERTIFICATE_EXPIRED"}


# --- mutations: every field changed after signing breaks the signature ------------------------------------

_FIELD_CHANGES: dict[str, Callable[[Any], Any]] = {
    "module_id": lambda v: v + "x",
    "digest": lambda v: "SHA512",
    "timestamp": lambda v: v + 1,
    "nitrotpm_pcrs": lambda v: {**v, 4: bytes(48)},
    "public_key": lambda v: b"K" + v[1:],
    "user_data": lambda v: b"v",
    "nonce": lambda v: b"\x08" * 32,
}


@pytest.mark.parametrize("field", sorted(_FIELD_CHANGES))
def test_every_signed_field_is_covered_by_the_signature(ca: DevCa, raw: bytes, field: str) -> None:
    _, payload = _parts(raw)
    payload[field] = _FIELD_CHANGES[field](payload[field])
    reasons = _verify(ca, _with_payload(raw, indefinite_map(payload)))
    assert "SIGNATURE_INVALID" in reasons


def test_a_flipped_signature_bit_is_refused(ca: DevCa, raw: bytes) -> None:
    cose, _ = _parts(raw)
    signature = bytes([cose[3][0] ^ 1]) + cose[3][1:]
    assert _verify(ca, cbor2.dumps([cose[0], cose[1], cose[2], signature])) == {"SIGNATURE_INVALID"}


@pytest.mark.parametrize("change", ["drop-intermediate", "foreign-root", "reorder", "foreign-leaf"])
def test_chain_mutations_are_refused(ca: DevCa, raw: bytes, change: str) -> None:
    _, payload = _parts(raw)
    other = DevCa.generate(AT)
    if change == "drop-intermediate":
        payload["cabundle"] = payload["cabundle"][:2] + payload["cabundle"][3:]
    elif change == "foreign-root":
        payload["cabundle"] = other.cabundle
    elif change == "reorder":
        payload["cabundle"] = list(reversed(payload["cabundle"]))
    else:  # a leaf of another CA signs: the signature holds, the chain does not
        leaf = other.issue_leaf("x", AT)
        payload["certificate"] = leaf.cert.public_bytes(Encoding.DER)
        assert _verify(ca, cose_sign1(leaf, indefinite_map(payload))) == {"CHAIN_INVALID"}
        return
    # Re-signed by a valid leaf of `ca`, so only the chain is wrong.
    reasons = _verify(ca, _resigned(ca, payload))
    assert reasons and reasons <= {"CHAIN_INVALID", "ROOT_NOT_TRUSTED", "CERTIFICATE_CONSTRAINTS"}


# --- the map encoding: indefinite length for the NitroTPM payload map only ------------------------------

def _malformed(raw: bytes) -> MalformedDocument:
    with pytest.raises(MalformedDocument) as info:
        parse_document(raw)
    return info.value


def test_a_resigned_definite_nitrotpm_payload_is_refused(ca: DevCa, raw: bytes) -> None:
    _, payload = _parts(raw)
    assert _malformed(_resigned(ca, payload, cbor2.dumps)).field == "payload"
    assert _verify(ca, _resigned(ca, payload)) == set()  # the control: the same items, indefinite


def test_an_indefinite_enclave_payload_is_refused(ca: DevCa, raw: bytes) -> None:
    _, payload = _parts(raw)
    payload["pcrs"] = payload.pop("nitrotpm_pcrs")
    assert "NitroTPM payloads only" in _malformed(_resign(ca, indefinite_map(payload))).message


def test_indefinite_length_inside_the_payload_is_refused(ca: DevCa, raw: bytes) -> None:
    _, payload = _parts(raw)
    pcrs = payload.pop("nitrotpm_pcrs")
    inner = b"\xbf" + b"".join(cbor2.dumps(k) + cbor2.dumps(v) for k, v in pcrs.items()) + b"\xff"
    body = indefinite_map(payload)[:-1] + cbor2.dumps("nitrotpm_pcrs") + inner + b"\xff"
    assert _malformed(_resign(ca, body)).field == "payload"
    indefinite_bytes = b"\x5f" + cbor2.dumps(b"ab") + cbor2.dumps(b"cd") + b"\xff"
    _, payload = _parts(raw)
    body = indefinite_map({k: v for k, v in payload.items() if k != "user_data"})[:-1]
    assert _malformed(_resign(ca, body + cbor2.dumps("user_data") + indefinite_bytes + b"\xff")).field == "payload"


def test_duplicate_keys_missing_break_and_trailing_bytes_are_refused(ca: DevCa, raw: bytes) -> None:
    _, payload = _parts(raw)
    body = indefinite_map(payload)
    duplicate = body[:-1] + cbor2.dumps("nonce") + cbor2.dumps(b"x") + b"\xff"
    assert "duplicate" in _malformed(_resign(ca, duplicate)).message
    assert "break" in _malformed(_resign(ca, body[:-1])).message
    assert "trailing" in _malformed(_resign(ca, body + b"\x00")).message
    assert _malformed(_resign(ca, body[:-1] + cbor2.dumps(1) + cbor2.dumps(2) + b"\xff")).field == "payload"


def test_a_payload_with_both_pcr_maps_is_refused(ca: DevCa, raw: bytes) -> None:
    _, payload = _parts(raw)
    payload["pcrs"] = payload["nitrotpm_pcrs"]
    assert "both" in _malformed(_resign(ca, indefinite_map(payload))).message


@pytest.mark.parametrize(("pcrs", "field"), [
    ({24: bytes(48)}, "nitrotpm_pcrs"),
    ({4: bytes(32)}, "nitrotpm_pcrs[4]"),
    ({}, "nitrotpm_pcrs"),
    ({i: bytes(48) for i in range(25)}, "nitrotpm_pcrs"),
])
def test_nitrotpm_pcrs_are_24_sha384_values(ca: DevCa, raw: bytes, pcrs: dict[int, bytes], field: str) -> None:
    _, payload = _parts(raw)
    payload["nitrotpm_pcrs"] = pcrs
    assert _malformed(_resign(ca, indefinite_map(payload))).field == field


@pytest.mark.parametrize("field", ["module_id", "digest", "timestamp", "nitrotpm_pcrs", "certificate", "cabundle"])
def test_required_fields(ca: DevCa, raw: bytes, field: str) -> None:
    _, payload = _parts(raw)
    del payload[field]
    if field == "nitrotpm_pcrs":  # without it the payload is an enclave payload in indefinite form
        assert _malformed(_resign(ca, indefinite_map(payload))).field == "payload"
    else:
        assert _malformed(_resign(ca, indefinite_map(payload))).field == field


# --- policies --------------------------------------------------------------------------------------------

def test_policy_with_several_allowed_sets_matches_the_ami_and_reports_the_set_used(raw: bytes) -> None:
    doc = parse_document(raw)
    v1, v2 = ami_pcrs("ami-v1"), ami_pcrs("ami-v2")
    standard_boot = {i: v1[i] for i in (4, 12)}
    policy = _policy({i: v2[i] for i in (4, 12)}, standard_boot)
    assert evaluate(policy, doc, AT) == []
    assert matched_pcrs(policy, doc) == standard_boot
    secure_boot = _policy({7: v1[7]})
    assert evaluate(secure_boot, doc, AT) == [] and matched_pcrs(secure_boot, doc) == {7: v1[7]}
    refused = _policy({i: v2[i] for i in (4, 12)})
    assert [r.reason for r in evaluate(refused, doc, AT)] == ["PCR_MISMATCH"] and matched_pcrs(refused, doc) == {}


def test_kinds_do_not_cross(raw: bytes, ca: DevCa) -> None:
    doc = parse_document(raw)
    enclave_policy = _policy({4: doc.pcrs[4]}, kind="NITRO_ENCLAVE")
    assert [r.reason for r in evaluate(enclave_policy, doc, AT)] == ["KIND_MISMATCH"]
    assert matched_pcrs(enclave_policy, doc) == {}
    from privmesh.enclave.simulator import SimulatedNsm
    enclave_doc = parse_document(SimulatedNsm(ca, now=lambda: AT).attest(nonce=NONCE))
    tpm_policy = _policy({4: enclave_doc.pcrs[4]})
    assert [r.reason for r in evaluate(tpm_policy, enclave_doc, AT)] == ["KIND_MISMATCH"]


def test_nitrotpm_policy_validation() -> None:
    with pytest.raises(InvalidPolicy) as info:
        _policy({24: bytes(48)})
    assert info.value.field == "allowed_pcr_sets[0].pcrs"
    with pytest.raises(InvalidPolicy) as info:
        _policy({4: bytes(48)}, kind="SEV_SNP")
    assert info.value.field == "kind"
    _policy({31: bytes(48)}, kind="NITRO_ENCLAVE")  # enclaves keep 0..31


def test_debug_rule_is_for_enclaves_only(ca: DevCa) -> None:
    zeros = SimulatedNitroTpm(ca, pcrs={0: bytes(48), 1: bytes(48), 2: bytes(48)}, now=lambda: AT)
    doc = parse_document(zeros.attest(nonce=NONCE))
    assert evaluate(_policy({4: doc.pcrs[4]}), doc, AT) == []
