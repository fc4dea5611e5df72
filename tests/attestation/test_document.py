"""Parsing: real documents parse into the right fields; every malformed, truncated, oversized or hostile
input raises MalformedDocument (never another exception, never a hang)."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from privmesh.attestation.document import (
    MAX_DOCUMENT_BYTES,
    AttestationDocument,
    MalformedDocument,
    Refusal,
    parse_document,
)
from privmesh.attestation.nitro import NitroVerifier

from .conftest import IN_WINDOW, Cose

ES384_HEADER = b"\xa1\x01\x38\x22"


def malformed(raw: bytes) -> MalformedDocument:
    with pytest.raises(MalformedDocument) as info:
        parse_document(raw)
    return info.value


def with_payload(raw: bytes, **changes: Any) -> bytes:
    cose = Cose.decode(raw)
    for key, value in changes.items():
        if value is _DROP:
            del cose.payload[key]
        else:
            cose.payload[key] = value
    return cose.encode()


_DROP = object()


# --- real documents ---------------------------------------------------------------------------------------

def test_production_document_fields(production_raw: bytes) -> None:
    doc = parse_document(production_raw)
    assert production_raw[0] == 0x84  # untagged COSE_Sign1, as the README says
    assert doc.module_id == "i-0a22e5c5f24d22174-enc0191cceb4289903f"
    assert doc.digest == "SHA384"
    assert doc.timestamp == datetime(2024, 9, 7, 14, 37, 39, 545000, tzinfo=timezone.utc)
    assert sorted(doc.pcrs) == list(range(16))
    assert all(len(v) == 48 for v in doc.pcrs.values())
    assert any(doc.pcrs[0]) and any(doc.pcrs[1]) and any(doc.pcrs[2])
    assert len(doc.cabundle) == 4
    assert doc.certificate[:1] == b"\x30" and all(c[:1] == b"\x30" for c in doc.cabundle)
    assert doc.public_key is not None and len(doc.public_key) == 1024
    assert doc.user_data is not None and len(doc.user_data) == 1024
    assert doc.nonce is not None and len(doc.nonce) == 1024
    assert doc.protected == ES384_HEADER
    assert len(doc.signature) == 96


def test_debug_document_has_zero_pcrs(debug_raw: bytes) -> None:
    doc = parse_document(debug_raw)
    assert doc.timestamp == datetime(2024, 9, 7, 14, 38, 6, 508000, tzinfo=timezone.utc)
    assert all(doc.pcrs[i] == bytes(48) for i in (0, 1, 2))


def test_selfsigned_document_parses_with_null_cabundle_and_unprotected(selfsigned_raw: bytes) -> None:
    # Real quirks: unprotected header null, cabundle null. Parsed so the verifier can refuse it with a reason.
    doc = parse_document(selfsigned_raw)
    assert doc.cabundle == ()
    assert len(doc.pcrs) == 32
    assert doc.user_data == b"" and doc.nonce == b""


def test_tagged_and_untagged_parse_alike(production_raw: bytes) -> None:
    tagged = Cose.decode(production_raw).encode(tagged=True)
    assert tagged[0] == 0xD2
    assert parse_document(tagged) == parse_document(production_raw)


def test_reencoding_unchanged_is_byte_identical(production_raw: bytes) -> None:
    # The mutation tests rely on this: only what a test changes differs from the original.
    assert Cose.decode(production_raw).encode() == production_raw


def test_accepts_bytearray_and_memoryview(production_raw: bytes) -> None:
    expected = parse_document(production_raw)
    assert parse_document(bytearray(production_raw)) == expected  # type: ignore[arg-type]
    assert parse_document(memoryview(production_raw)) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["public_key", "user_data", "nonce"])
def test_optional_fields_may_be_null_or_absent(production_raw: bytes, field: str) -> None:
    assert getattr(parse_document(with_payload(production_raw, **{field: None})), field) is None
    assert getattr(parse_document(with_payload(production_raw, **{field: _DROP})), field) is None


def test_unknown_payload_keys_are_ignored(production_raw: bytes) -> None:
    assert parse_document(with_payload(production_raw, future_field=[1, 2])).module_id


# --- missing and mistyped fields --------------------------------------------------------------------------

@pytest.mark.parametrize("field", ["module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle"])
def test_missing_required_field(production_raw: bytes, field: str) -> None:
    assert malformed(with_payload(production_raw, **{field: _DROP})).field == field


MISTYPED: list[tuple[str, Any, str]] = [
    ("module_id", 42, "module_id"),
    ("module_id", "", "module_id"),
    ("module_id", b"i-0123", "module_id"),
    ("module_id", "x" * 257, "module_id"),
    ("digest", b"SHA384", "digest"),
    ("digest", "", "digest"),
    ("digest", None, "digest"),
    ("timestamp", -1, "timestamp"),
    ("timestamp", "1725719859545", "timestamp"),
    ("timestamp", 1.7e12, "timestamp"),
    ("timestamp", True, "timestamp"),
    ("timestamp", 2**64 - 1, "timestamp"),
    ("pcrs", [b"\x00" * 48], "pcrs"),
    ("pcrs", {}, "pcrs"),
    ("pcrs", {32: b"\x00" * 48}, "pcrs"),
    ("pcrs", {-1: b"\x00" * 48}, "pcrs"),
    ("pcrs", {"0": b"\x00" * 48}, "pcrs"),
    ("pcrs", {True: b"\x00" * 48}, "pcrs"),
    ("pcrs", {0: b"\x00" * 47}, "pcrs[0]"),
    ("pcrs", {0: b"\x00" * 49}, "pcrs[0]"),
    ("pcrs", {0: "00" * 48}, "pcrs[0]"),
    ("pcrs", {0: None}, "pcrs[0]"),
    ("certificate", "MIIC", "certificate"),
    ("certificate", b"", "certificate"),
    ("certificate", b"\x30" * 4097, "certificate"),
    ("certificate", None, "certificate"),
    ("cabundle", b"\x30", "cabundle"),
    ("cabundle", {0: b"\x30"}, "cabundle"),
    ("cabundle", [b"\x30"] * 17, "cabundle"),
    ("cabundle", [b"\x30", 7], "cabundle[1]"),
    ("cabundle", [b""], "cabundle[0]"),
    ("cabundle", [b"\x30" * 4097], "cabundle[0]"),
    ("public_key", "-----BEGIN PUBLIC KEY-----", "public_key"),
    ("public_key", b"\x01" * 1025, "public_key"),
    ("user_data", 5, "user_data"),
    ("user_data", b"\x01" * 1025, "user_data"),
    ("nonce", [b"\x01"], "nonce"),
    ("nonce", b"\x01" * 1025, "nonce"),
]


@pytest.mark.parametrize(("field", "value", "blamed"), MISTYPED, ids=[f"{f}-{i}" for i, (f, _, _) in
                                                                        enumerate(MISTYPED)])
def test_mistyped_field(production_raw: bytes, field: str, value: Any, blamed: str) -> None:
    assert malformed(with_payload(production_raw, **{field: value})).field == blamed


def test_payload_must_be_a_map_with_text_keys(production_raw: bytes) -> None:
    cose = Cose.decode(production_raw)
    int_key: dict[Any, Any] = {1: "x", **cose.payload}
    for payload in ([1, 2], "text", 7, int_key):
        raw = cbor2.dumps([cose.protected, {}, cbor2.dumps(payload), cose.signature])
        assert malformed(raw).field == "payload"


@pytest.mark.parametrize("header", [
    {1: -7},                 # ES256
    {1: -36},                # ES512
    {1: -35, 2: [1]},        # crit: parameters we would have to understand
    {1: -35, 4: b"kid"},
    {1: True},
    {True: -35},
    {1: -35.0},
    {1: "ES384"},
    [1, -35],
    {},
])
def test_protected_header_must_be_es384_only(production_raw: bytes, header: Any) -> None:
    cose = Cose.decode(production_raw)
    cose.protected = cbor2.dumps(header)
    assert malformed(cose.encode()).field == "protected"


def test_protected_header_must_be_bytes(production_raw: bytes) -> None:
    cose = Cose.decode(production_raw)
    raw = cbor2.dumps([{1: -35}, {}, cbor2.dumps(cose.payload), cose.signature])
    assert malformed(raw).field == "protected"


@pytest.mark.parametrize("body", [
    "not-an-array", 42, {1: 2}, [], [b"\xa1\x01\x38\x22", {}, b"\xa0"],
    [b"\xa1\x01\x38\x22", {}, b"\xa0", b"\x00" * 96, b"extra"],
])
def test_not_a_cose_sign1(body: Any) -> None:
    assert malformed(cbor2.dumps(body)).field == "document"


@pytest.mark.parametrize(("index", "value", "blamed"), [
    (1, 7, "unprotected"),
    (1, [1], "unprotected"),
    (2, "payload-as-text", "payload"),
    (2, b"", "payload"),
    (3, b"\x00" * 95, "signature"),
    (3, b"\x00" * 97, "signature"),
    (3, b"\x00" * 64, "signature"),
    (3, "sig", "signature"),
])
def test_cose_item_types(production_raw: bytes, index: int, value: Any, blamed: str) -> None:
    body = list(cbor2.loads(production_raw))
    body[index] = value
    assert malformed(cbor2.dumps(body)).field == blamed


def test_other_tag_than_cose_sign1(production_raw: bytes) -> None:
    body = cbor2.loads(production_raw)
    assert "tag 98" in malformed(cbor2.dumps(cbor2.CBORTag(98, body))).message  # COSE_Sign, not Sign1


def test_payload_not_cbor(production_raw: bytes) -> None:
    body = list(cbor2.loads(production_raw))
    body[2] = b"\xff\xfe\xfd"
    assert malformed(cbor2.dumps(body)).field == "payload"


def test_trailing_bytes(production_raw: bytes) -> None:
    assert "trailing" in malformed(production_raw + b"\x00").message
    body = list(cbor2.loads(production_raw))
    body[2] = body[2] + b"\xa0"
    assert "trailing" in malformed(cbor2.dumps(body)).message


# --- truncated, oversized and hostile input ---------------------------------------------------------------

def test_truncated_at_many_cut_points(production_raw: bytes) -> None:
    cuts = {*range(0, 64), *range(64, len(production_raw), 37), len(production_raw) - 1}
    for cut in sorted(cuts):
        with pytest.raises(MalformedDocument):
            parse_document(production_raw[:cut])


def test_oversized_refused_before_decoding() -> None:
    # A valid CBOR array prefix followed by junk: only the size check can refuse it this quickly.
    raw = b"\x84" + b"\x00" * MAX_DOCUMENT_BYTES
    started = time.perf_counter()
    error = malformed(raw)
    assert "at most 32768" in error.message
    assert time.perf_counter() - started < 0.1
    malformed(b"\x00" * (10 * 1024 * 1024))


def test_empty_and_non_bytes() -> None:
    assert malformed(b"").field == "document"
    assert malformed("a string").field == "document"  # type: ignore[arg-type]
    assert malformed(None).field == "document"  # type: ignore[arg-type]


HOSTILE = {
    "deep arrays": b"\x81" * 20000 + b"\x00",
    "deep maps": b"\xa1\x00" * 10000 + b"\x00",
    "deep tags": b"\xd2" * 20000 + b"\x00",
    "bstr claims 2^64-1 bytes": b"\x5b" + b"\xff" * 8,
    "text claims 2^63 bytes": b"\x7b\x80" + b"\x00" * 7,
    "array claims 2^64-1 items": b"\x9b" + b"\xff" * 8,
    "map claims 2^32 entries": b"\xba\xff\xff\xff\xff",
    "array of 4 with huge bstr": b"\x84\x5b" + b"\xff" * 8,
    "indefinite array": b"\x9f\x41\x00\xa0\x41\x00\x41\x00\xff",
    "indefinite bstr": b"\x84\x5f\x41\x00\xff\xa0\x41\x00\x41\x00",
    "break alone": b"\xff",
    "reserved additional info": b"\x1c",
    "duplicate map keys": b"\x84\x41\x00\xa2\x01\x02\x01\x03\x41\x00\x41\x00",
    "bignum": b"\xc2\x59\x7f\x00" + b"\x01" * 0x7F00,
    "bigfloat with huge exponent": b"\xc5\x82\x1b\x7f\xff\xff\xff\xff\xff\xff\xff\x01",
    "epoch datetime": b"\xc1\x1b\x7f\xff\xff\xff\xff\xff\xff\xff",
    "regex": b"\xd8\x23\x6a(a+)+$" + b"b" * 4,
    "shared reference cycle": b"\xd8\x1c\x81\xd8\x1d\x00",
    "string reference": b"\xd9\x01\x00\x82\x63abc\xd8\x19\x00",
    "set": b"\xd9\x01\x02\x80",
    "self-describe tag": b"\xd9\xd9\xf7\x84\x41\x00\xa0\x41\x00\x41\x00",
    "unknown tag": b"\xda\x00\x01\x00\x00\x80",
    "invalid utf-8 text": b"\x84\x41\x00\xa1\x62\xff\xfe\x00\x41\x00\x41\x00",
    "undefined": b"\xf7",
    "simple value": b"\xf8\x20",
    "half-float nan": b"\xf9\x7e\x00",
}


@pytest.mark.parametrize("raw", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_cbor(raw: bytes) -> None:
    started = time.perf_counter()
    malformed(raw)
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize("raw", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_cbor_as_payload(production_raw: bytes, raw: bytes) -> None:
    body = list(cbor2.loads(production_raw))
    body[2] = raw
    malformed(cbor2.dumps(body))


def test_hostile_cbor_inside_payload_fields(production_raw: bytes) -> None:
    cose = Cose.decode(production_raw)
    for field in ("module_id", "pcrs", "cabundle", "nonce"):
        payload = cbor2.dumps({**cose.payload, field: None})
        # Replace the encoded null with a hostile item, keeping the rest of the map intact.
        for hostile in (b"\xc1\x00", b"\xd8\x1c\x81\xd8\x1d\x00", b"\x81" * 100 + b"\x00"):
            body = [cose.protected, {}, payload.replace(field.encode() + b"\xf6", field.encode() + hostile, 1),
                    cose.signature]
            malformed(cbor2.dumps(body))


# --- fuzzing: only MalformedDocument or refusals ever come out --------------------------------------------

def _parse_and_verify(raw: bytes, verifier: NitroVerifier) -> AttestationDocument | None:
    try:
        doc = parse_document(raw)
    except MalformedDocument:
        return None
    refusals = verifier.verify(doc, IN_WINDOW)
    assert isinstance(refusals, list) and all(isinstance(r, Refusal) for r in refusals)
    return doc if not refusals else None


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_fuzz_arbitrary_bytes(nitro_pki_verifier: NitroVerifier, raw: bytes) -> None:
    # The synthetic root is enough here, so this runs even without ../shared/testdata/nitro.
    assert _parse_and_verify(raw, nitro_pki_verifier) is None


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_mutated_real_document(production_raw: bytes, aws_verifier: NitroVerifier, data: st.DataObject) -> None:
    raw = bytearray(production_raw)
    for _ in range(data.draw(st.integers(1, 8), label="mutations")):
        kind = data.draw(st.sampled_from(["xor", "set", "delete", "insert"]), label="kind")
        at = data.draw(st.integers(0, len(raw) - 1), label="at")
        if kind == "xor":
            raw[at] ^= data.draw(st.integers(1, 255), label="mask")
        elif kind == "set":
            raw[at] = data.draw(st.sampled_from([0x00, 0xFF, 0x1B, 0x5B, 0x9F, 0xBF, 0xD8, 0xF6, 0xF7]))
        elif kind == "delete" and len(raw) > 1:
            del raw[at]
        else:
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=16), label="inserted")
    accepted = _parse_and_verify(bytes(raw), aws_verifier)
    if accepted is not None:
        # Only unsigned framing can change without a refusal: the signed parts must be the original ones.
        original = parse_document(production_raw)
        assert (accepted.protected, accepted.payload, accepted.signature) == (
            original.protected, original.payload, original.signature)


def test_certificate_naming_an_unknown_curve_is_refused_not_raised(production_raw: bytes,
                                                                  aws_verifier: NitroVerifier) -> None:
    # Found by the fuzzer above: this bit flip turns a certificate's curve OID into one cryptography does not know.
    raw = bytearray(production_raw)
    raw[1825] ^= 1
    assert _parse_and_verify(bytes(raw), aws_verifier) is None
