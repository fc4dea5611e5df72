"""Bounded parsing of AWS Nitro Enclave attestation documents (COSE_Sign1 carrying a CBOR payload).

Parsing checks shape only (types, lengths, the ES384 protected header); whether the document is
*trustworthy* is for `nitro.NitroVerifier` and `policy.evaluate`, which return `Refusal`s. Every
malformed input raises `MalformedDocument`, whatever cbor2 would have raised, so a caller has exactly
one error to map to INVALID_ARGUMENT.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any, NoReturn

import cbor2

#: Largest document accepted, checked before any decoding (real documents are about 7.5 KiB).
MAX_DOCUMENT_BYTES = 32 * 1024
#: Containers nest at most this deep (a document needs 3); bounds cbor2's recursion.
MAX_CBOR_DEPTH = 8
MAX_MODULE_ID_CHARS = 256
MAX_DIGEST_CHARS = 16
MAX_PCRS = 32
PCR_INDEX_MAX = 31
PCR_VALUE_LENGTHS = frozenset({32, 48, 64})
MAX_CERTIFICATE_BYTES = 1024 * 4
MAX_CABUNDLE_ENTRIES = 16
MAX_OPTIONAL_BYTES = 1024
ES384_SIGNATURE_BYTES = 96
COSE_SIGN1_TAG = 18
COSE_ALG = 1
COSE_ALG_ES384 = -35
# The largest millisecond timestamp a datetime can hold (9999-12-31T23:59:59.999Z).
_MAX_TIMESTAMP_MS = 253_402_300_799_999

# Every tag cbor2 decodes into a Python object by itself (dates, bignums, regexes, shared references,
# sets, ...). None belongs in a Nitro document, and each is surface (e.g. shared references build
# cycles), so all are refused; tags cbor2 does not know reach `_refuse_tag` through tag_hook.
_SEMANTIC_TAGS = (0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261, 1004,
                  43000, 55799)


class MalformedDocument(ValueError):
    """The bytes are not a well-formed Nitro attestation document; `field` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


#: Every RefusalReason name of the contract, "REFUSAL_REASON_" removed: the only values `Refusal.reason`
#: takes, so the servicer can map them with RefusalReason.Value("REFUSAL_REASON_" + reason).
REFUSAL_REASONS = frozenset({
    "SIGNATURE_INVALID", "CHAIN_INVALID", "ROOT_NOT_TRUSTED", "CERTIFICATE_EXPIRED",
    "CERTIFICATE_CONSTRAINTS", "DOCUMENT_STALE", "NONCE_UNKNOWN", "NONCE_REPLAYED", "NONCE_MISSING",
    "PCR_MISMATCH", "DEBUG_ENCLAVE", "PUBLIC_KEY_MISSING", "USER_DATA_MISMATCH", "DIGEST_UNSUPPORTED",
    "PUBLIC_KEY_UNSUPPORTED",
})


@dataclass(frozen=True)
class Refusal:
    """One failed check: `reason` is a RefusalReason name without its prefix (e.g. "PCR_MISMATCH")."""

    reason: str
    message: str

    def __post_init__(self) -> None:
        if self.reason not in REFUSAL_REASONS:
            raise ValueError(f"unknown refusal reason {self.reason!r}")


@dataclass(frozen=True)
class AttestationDocument:
    """A parsed (not yet verified) document; keeps the signed bytes so the signature can be checked."""

    module_id: str
    digest: str
    timestamp: datetime
    pcrs: Mapping[int, bytes]
    certificate: bytes
    cabundle: tuple[bytes, ...]
    public_key: bytes | None
    user_data: bytes | None
    nonce: bytes | None
    protected: bytes
    payload: bytes
    signature: bytes


class _TagRefused(Exception):
    pass


def _refuse_semantic(*_args: object) -> NoReturn:
    raise _TagRefused("semantic tags are not allowed")


_NO_SEMANTIC_TAGS = {tag: _refuse_semantic for tag in _SEMANTIC_TAGS}


def _refuse_tag(tag: cbor2.CBORTag, _immutable: bool = False) -> Any:
    # Tag 18 is only meaningful around the whole COSE_Sign1; `_split_cose` checks where it is.
    if tag.tag == COSE_SIGN1_TAG:
        return tag
    raise _TagRefused(f"tag {tag.tag} is not allowed")


def _decode(data: bytes, field: str) -> Any:
    """Decodes exactly one CBOR item, strictly: no semantic tags, no indefinite lengths, no duplicate
    keys, bounded depth, no trailing bytes."""
    stream = io.BytesIO(data)
    try:
        decoder = cbor2.CBORDecoder(
            stream,
            tag_hook=_refuse_tag,
            semantic_decoders=_NO_SEMANTIC_TAGS,
            max_depth=MAX_CBOR_DEPTH,
            allow_indefinite=False,
            allow_duplicate_keys=False,
        )
        value = decoder.decode()
    except Exception as exc:  # cbor2 wraps most errors, but hooks and buffers can raise others
        raise MalformedDocument(field, f"not well-formed CBOR ({exc})") from None
    if stream.tell() != len(data):
        raise MalformedDocument(field, f"{len(data) - stream.tell()} trailing bytes after the CBOR item")
    return value


def _fail(field: str, message: str) -> NoReturn:
    raise MalformedDocument(field, message)


def _bytes(value: Any, field: str, low: int, high: int) -> bytes:
    if not isinstance(value, bytes):
        _fail(field, f"must be a byte string, not {type(value).__name__}")
    if not low <= len(value) <= high:
        _fail(field, f"must be {low}..{high} bytes, is {len(value)}")
    return value


def _optional_bytes(payload: Mapping[str, Any], field: str) -> bytes | None:
    value = payload.get(field)
    return None if value is None else _bytes(value, field, 0, MAX_OPTIONAL_BYTES)


def _text(value: Any, field: str, high: int) -> str:
    if not isinstance(value, str):
        _fail(field, f"must be a text string, not {type(value).__name__}")
    if not 1 <= len(value) <= high:
        _fail(field, f"must be 1..{high} characters, is {len(value)}")
    return value


def _uint(value: Any, field: str, high: int) -> int:
    if not _is_int(value):
        _fail(field, f"must be an unsigned integer, not {type(value).__name__}")
    if not 0 <= value <= high:
        _fail(field, f"must be 0..{high}, is {value}")
    return int(value)


def _pcrs(value: Any) -> Mapping[int, bytes]:
    if not isinstance(value, Mapping):
        _fail("pcrs", f"must be a map, not {type(value).__name__}")
    if not 1 <= len(value) <= MAX_PCRS:
        _fail("pcrs", f"must have 1..{MAX_PCRS} entries, has {len(value)}")
    pcrs: dict[int, bytes] = {}
    for index, pcr in value.items():
        _uint(index, "pcrs", PCR_INDEX_MAX)
        if not isinstance(pcr, bytes) or len(pcr) not in PCR_VALUE_LENGTHS:
            _fail(f"pcrs[{index}]", "must be a byte string of 32, 48 or 64 bytes")
        pcrs[index] = pcr
    return MappingProxyType(dict(sorted(pcrs.items())))


def _cabundle(value: Any) -> tuple[bytes, ...]:
    # AWS specifies 1.. entries, but real self-signed documents carry null; accepting null/empty here
    # lets the verifier refuse them with a reason (ROOT_NOT_TRUSTED) instead of "malformed".
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        _fail("cabundle", f"must be an array, not {type(value).__name__}")
    if len(value) > MAX_CABUNDLE_ENTRIES:
        _fail("cabundle", f"must have at most {MAX_CABUNDLE_ENTRIES} entries, has {len(value)}")
    return tuple(_bytes(c, f"cabundle[{i}]", 1, MAX_CERTIFICATE_BYTES) for i, c in enumerate(value))


def _is_int(value: Any) -> bool:
    # bool is an int subclass in Python; CBOR true/false must not pass for a number.
    return isinstance(value, int) and not isinstance(value, bool)


def _check_protected(header: Any) -> None:
    """The only protected header accepted is {alg (1): ES384 (-35)}: anything else (another algorithm,
    `crit` parameters we would have to understand) is refused, and True/-35.0 do not pass for 1/-35."""
    if not isinstance(header, Mapping) or len(header) != 1:
        _fail("protected", "must be a map holding only the algorithm")
    (key, alg), = header.items()
    if not (_is_int(key) and key == COSE_ALG and _is_int(alg)):
        _fail("protected", "must be {1: alg} with an integer algorithm")
    if alg != COSE_ALG_ES384:
        _fail("protected", f"algorithm {alg} is not ES384 (-35)")


def _split_cose(raw: bytes) -> tuple[bytes, bytes, bytes]:
    top = _decode(raw, "document")
    if isinstance(top, cbor2.CBORTag):
        if top.tag != COSE_SIGN1_TAG:
            _fail("document", f"tag {top.tag} is not COSE_Sign1 (18)")
        top = top.value
    if not isinstance(top, list | tuple) or len(top) != 4:
        _fail("document", "must be a COSE_Sign1: an array of 4 items")
    protected, unprotected, payload, signature = top
    _bytes(protected, "protected", 1, MAX_DOCUMENT_BYTES)
    _check_protected(_decode(protected, "protected"))
    # The unprotected header is not signed and never read; real documents send {} or null.
    if unprotected is not None and not isinstance(unprotected, Mapping):
        _fail("unprotected", f"must be a map or null, not {type(unprotected).__name__}")
    _bytes(payload, "payload", 1, MAX_DOCUMENT_BYTES)
    _bytes(signature, "signature", ES384_SIGNATURE_BYTES, ES384_SIGNATURE_BYTES)
    return protected, payload, signature


def parse_document(raw: bytes) -> AttestationDocument:
    """Parses and shape-checks a document (tagged or untagged COSE_Sign1); verifies nothing."""
    if not isinstance(raw, bytes | bytearray | memoryview):
        _fail("document", f"must be bytes, not {type(raw).__name__}")
    if len(raw) > MAX_DOCUMENT_BYTES:
        _fail("document", f"is {len(raw)} bytes, at most {MAX_DOCUMENT_BYTES} are accepted")
    if not raw:
        _fail("document", "is empty")
    protected, payload_bytes, signature = _split_cose(bytes(raw))
    payload = _decode(payload_bytes, "payload")
    if not isinstance(payload, Mapping):
        _fail("payload", f"must be a map, not {type(payload).__name__}")
    if not all(isinstance(key, str) for key in payload):
        _fail("payload", "map keys must be text strings")
    for required in ("module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle"):
        if required not in payload:
            _fail(required, "is missing")
    millis = _uint(payload["timestamp"], "timestamp", _MAX_TIMESTAMP_MS)
    return AttestationDocument(
        module_id=_text(payload["module_id"], "module_id", MAX_MODULE_ID_CHARS),
        digest=_text(payload["digest"], "digest", MAX_DIGEST_CHARS),
        timestamp=datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=millis),
        pcrs=_pcrs(payload["pcrs"]),
        certificate=_bytes(payload["certificate"], "certificate", 1, MAX_CERTIFICATE_BYTES),
        cabundle=_cabundle(payload["cabundle"]),
        public_key=_optional_bytes(payload, "public_key"),
        user_data=_optional_bytes(payload, "user_data"),
        nonce=_optional_bytes(payload, "nonce"),
        protected=protected,
        payload=payload_bytes,
        signature=signature,
    )
