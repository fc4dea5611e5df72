"""Policies: validation of their fields, and evaluation of real documents against them (PCR sets, debug
enclaves, age, public key, user data, nonce)."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import datetime, timedelta
from typing import Any

import pytest

from privmesh.attestation.document import AttestationDocument, parse_document
from privmesh.attestation.nitro import NitroVerifier
from privmesh.attestation.policy import (
    InvalidPolicy,
    PcrSet,
    Policy,
    claims_of,
    evaluate,
    is_debug_enclave,
    needs_nonce_check,
)

from .conftest import reasons


@pytest.fixture(scope="module")
def prod(production_raw: bytes) -> AttestationDocument:
    return parse_document(production_raw)


@pytest.fixture(scope="module")
def debug(debug_raw: bytes) -> AttestationDocument:
    return parse_document(debug_raw)


def image_of(doc: AttestationDocument, description: str = "image") -> PcrSet:
    return PcrSet({i: doc.pcrs[i] for i in (0, 1, 2)}, description)


def policy_for(doc: AttestationDocument, **changes: Any) -> Policy:
    policy = Policy(name="prod-enclave", allowed_pcr_sets=[image_of(doc)])
    return dataclasses.replace(policy, **changes)


def fresh(doc: AttestationDocument) -> datetime:
    return doc.timestamp + timedelta(seconds=30)


# --- validation -----------------------------------------------------------------------------------------

def test_a_valid_policy(prod: AttestationDocument) -> None:
    policy = policy_for(prod)
    policy.validate()
    assert not policy.allow_debug and policy.require_nonce  # the safe defaults
    assert policy.max_document_age == timedelta(minutes=5)


@pytest.mark.parametrize("name", ["a", "0", "prod-enclave", "a" * 63, "a-b-c-1"])
def test_valid_names(prod: AttestationDocument, name: str) -> None:
    policy_for(prod, name=name).validate()


@pytest.mark.parametrize("name", ["", "A", "-a", "a-", "a_b", "a.b", "a" * 64, "prod enclave", "é"])
def test_invalid_names(prod: AttestationDocument, name: str) -> None:
    with pytest.raises(InvalidPolicy) as info:
        policy_for(prod, name=name).validate()
    assert info.value.field == "name"


PCR48 = b"\x11" * 48
INVALID: list[tuple[dict[str, Any], str]] = [
    ({"allowed_pcr_sets": []}, "allowed_pcr_sets"),
    ({"allowed_pcr_sets": [PcrSet({0: PCR48})] * 65}, "allowed_pcr_sets"),
    ({"allowed_pcr_sets": [PcrSet({})]}, "allowed_pcr_sets[0].pcrs"),
    ({"allowed_pcr_sets": [PcrSet({0: PCR48}), PcrSet({32: PCR48})]}, "allowed_pcr_sets[1].pcrs"),
    ({"allowed_pcr_sets": [PcrSet({-1: PCR48})]}, "allowed_pcr_sets[0].pcrs"),
    ({"allowed_pcr_sets": [PcrSet({True: PCR48})]}, "allowed_pcr_sets[0].pcrs"),
    ({"allowed_pcr_sets": [PcrSet({3: b"\x11" * 32})]}, "allowed_pcr_sets[0].pcrs[3]"),
    ({"allowed_pcr_sets": [PcrSet({3: "11" * 48})]}, "allowed_pcr_sets[0].pcrs[3]"),  # type: ignore[dict-item]
    ({"allowed_pcr_sets": [PcrSet({0: PCR48}, "x" * 1025)]}, "allowed_pcr_sets[0].description"),
    ({"max_document_age": timedelta(0)}, "max_document_age"),
    ({"max_document_age": timedelta(seconds=-1)}, "max_document_age"),
    ({"max_document_age": timedelta(days=1, microseconds=1)}, "max_document_age"),
    ({"required_user_data": b"\x00" * 1025}, "required_user_data"),
    ({"description": "x" * 1025}, "description"),
]


@pytest.mark.parametrize(("changes", "field"), INVALID, ids=[f for _, f in INVALID])
def test_invalid_policies(prod: AttestationDocument, changes: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidPolicy) as info:
        policy_for(prod, **changes).validate()
    assert info.value.field == field


def test_limits_are_inclusive(prod: AttestationDocument) -> None:
    policy_for(prod, max_document_age=timedelta(days=1), required_user_data=b"\x00" * 1024).validate()


# --- evaluation -----------------------------------------------------------------------------------------

def test_production_document_passes_its_policy(prod: AttestationDocument) -> None:
    assert evaluate(policy_for(prod, require_public_key=True), prod, fresh(prod)) == []


def test_pcr_mismatch(prod: AttestationDocument, debug: AttestationDocument) -> None:
    assert reasons(evaluate(policy_for(debug, allow_debug=True), prod, fresh(prod))) == {"PCR_MISMATCH"}


def test_several_sets_for_a_rolling_deploy(prod: AttestationDocument) -> None:
    old = PcrSet({0: b"\x42" * 48}, "v41")
    policy = policy_for(prod, allowed_pcr_sets=[old, image_of(prod, "v42")])
    assert evaluate(policy, prod, fresh(prod)) == []


def test_every_pcr_of_a_set_must_match(prod: AttestationDocument) -> None:
    partial = PcrSet({**image_of(prod).pcrs, 4: b"\x00" * 48})
    assert reasons(evaluate(policy_for(prod, allowed_pcr_sets=[partial]), prod, fresh(prod))) == {"PCR_MISMATCH"}


def test_a_pcr_the_document_lacks_does_not_match(prod: AttestationDocument) -> None:
    absent = PcrSet({20: b"\x00" * 48})
    assert reasons(evaluate(policy_for(prod, allowed_pcr_sets=[absent]), prod, fresh(prod))) == {"PCR_MISMATCH"}


def test_debug_enclave_refused_by_default(debug: AttestationDocument) -> None:
    assert reasons(evaluate(policy_for(debug), debug, fresh(debug))) == {"DEBUG_ENCLAVE"}


def test_debug_enclave_passes_only_when_allowed(debug: AttestationDocument) -> None:
    assert evaluate(policy_for(debug, allow_debug=True), debug, fresh(debug)) == []


def test_debug_document_end_to_end(debug_raw: bytes, aws_verifier: NitroVerifier) -> None:
    # Chain + signature + policy, as the service will combine them.
    doc = parse_document(debug_raw)
    at = fresh(doc)
    for allow_debug, expected in ((False, {"DEBUG_ENCLAVE"}), (True, set())):
        refusals = aws_verifier.verify(doc, at) + evaluate(policy_for(doc, allow_debug=allow_debug), doc, at)
        assert reasons(refusals) == expected


def test_production_document_end_to_end(production_raw: bytes, aws_verifier: NitroVerifier) -> None:
    doc = parse_document(production_raw)
    assert aws_verifier.verify(doc, fresh(doc)) + evaluate(policy_for(doc), doc, fresh(doc)) == []


def test_is_debug_enclave(prod: AttestationDocument, debug: AttestationDocument) -> None:
    assert is_debug_enclave(debug) and not is_debug_enclave(prod)
    one_nonzero = dict(debug.pcrs)
    one_nonzero[2] = b"\x00" * 47 + b"\x01"
    assert not is_debug_enclave(dataclasses.replace(debug, pcrs=one_nonzero))
    missing = {i: v for i, v in debug.pcrs.items() if i != 1}
    assert not is_debug_enclave(dataclasses.replace(debug, pcrs=missing))


@pytest.mark.parametrize(("offset", "stale"), [
    (timedelta(0), False),
    (timedelta(minutes=5), False),
    (timedelta(minutes=5, milliseconds=1), True),
    (timedelta(hours=3), True),
    (-timedelta(seconds=60), False),
    (-timedelta(seconds=61), True),
])
def test_document_age(prod: AttestationDocument, offset: timedelta, stale: bool) -> None:
    found = reasons(evaluate(policy_for(prod), prod, prod.timestamp + offset))
    assert found == ({"DOCUMENT_STALE"} if stale else set())


def test_longer_max_age(prod: AttestationDocument) -> None:
    policy = policy_for(prod, max_document_age=timedelta(hours=1))
    assert evaluate(policy, prod, prod.timestamp + timedelta(minutes=59)) == []


@pytest.mark.parametrize("public_key", [None, b""])
def test_public_key_missing(prod: AttestationDocument, public_key: bytes | None) -> None:
    doc = dataclasses.replace(prod, public_key=public_key)
    assert evaluate(policy_for(doc), doc, fresh(doc)) == []
    assert reasons(evaluate(policy_for(doc, require_public_key=True), doc, fresh(doc))) == {"PUBLIC_KEY_MISSING"}


def test_user_data(prod: AttestationDocument) -> None:
    assert prod.user_data is not None
    assert evaluate(policy_for(prod, required_user_data=prod.user_data), prod, fresh(prod)) == []
    other = prod.user_data[:-1] + b"\x02"
    assert reasons(evaluate(policy_for(prod, required_user_data=other), prod, fresh(prod))) == {
        "USER_DATA_MISMATCH"}
    assert reasons(evaluate(policy_for(prod, required_user_data=b""), prod, fresh(prod))) == {
        "USER_DATA_MISMATCH"}


def test_required_empty_user_data_matches_absent(prod: AttestationDocument) -> None:
    doc = dataclasses.replace(prod, user_data=None)
    assert evaluate(policy_for(doc, required_user_data=b""), doc, fresh(doc)) == []


@pytest.mark.parametrize("nonce", [None, b""])
def test_nonce_missing(prod: AttestationDocument, nonce: bytes | None) -> None:
    doc = dataclasses.replace(prod, nonce=nonce)
    assert reasons(evaluate(policy_for(doc), doc, fresh(doc))) == {"NONCE_MISSING"}
    assert evaluate(policy_for(doc, require_nonce=False), doc, fresh(doc)) == []
    assert needs_nonce_check(policy_for(doc), doc) is None


def test_nonce_to_check(prod: AttestationDocument) -> None:
    assert needs_nonce_check(policy_for(prod), prod) == prod.nonce
    assert needs_nonce_check(policy_for(prod, require_nonce=False), prod) is None


def test_every_failure_is_reported(debug: AttestationDocument, prod: AttestationDocument) -> None:
    doc = dataclasses.replace(debug, public_key=None, nonce=None)
    policy = policy_for(prod, require_public_key=True, required_user_data=b"expected")
    found = reasons(evaluate(policy, doc, doc.timestamp + timedelta(days=1)))
    assert found == {"PCR_MISMATCH", "DEBUG_ENCLAVE", "DOCUMENT_STALE", "PUBLIC_KEY_MISSING",
                     "USER_DATA_MISMATCH", "NONCE_MISSING"}


def test_claims(prod: AttestationDocument, debug: AttestationDocument) -> None:
    claims = claims_of(prod)
    assert claims.module_id == prod.module_id and claims.digest == "SHA384"
    assert claims.timestamp == prod.timestamp and dict(claims.pcrs) == dict(prod.pcrs)
    assert (claims.public_key, claims.user_data, claims.nonce) == (prod.public_key, prod.user_data, prod.nonce)
    assert claims.certificate_sha256 == hashlib.sha256(prod.certificate).hexdigest()
    assert not claims.debug_mode and claims_of(debug).debug_mode


def test_naive_time_is_a_programming_error(prod: AttestationDocument) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        evaluate(policy_for(prod), prod, datetime(2024, 9, 7, 15))
