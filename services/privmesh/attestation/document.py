"""Bounded parsing of AWS Nitro attestation documents (COSE_Sign1 carrying a CBOR payload), of both kinds:
Nitro Enclave documents (`pcrs`, a definite-length payload map) and NitroTPM documents from instances booted
from attestable AMIs (`nitrotpm_pcrs`, an indefinite-length payload map, as the NitroTPM emits it).

Indefinite length is accepted for the NitroTPM payload's top-level map only, so that map is walked here
item by item (cbor2 can only allow indefinite lengths for a whole item); everything inside stays strict.

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
PCR_INDEX_MAX = 31
PCR_VALUE_LENGTHS = frozenset({32, 48, 64})
#: A NitroTPM reports PCR0..23 (a TPM 2.0 bank), each SHA-384.
TPM_PCR_INDEX_MAX = 23
TPM_PCR_VALUE_LENGTHS = frozenset({48})
#: The payload map has 9 keys today; bound the item-by-item walk of an indefinite-length map.
MAX_PAYLOAD_KEYS = 16
KIND_NITRO_ENCLAVE = "NITRO_ENCLAVE"
KIND_NITRO_TPM = "NITRO_TPM"
#: The AttestationKind names of the contract, "ATTESTATION_KIND_" removed.
KINDS = frozenset({KIND_NITRO_ENCLAVE, KIND_NITRO_TPM})
_INDEFINITE_MAP = 0xBF
_BREAK = 0xFF
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
    "PUBLIC_KEY_UNSUPPORTED", "KIND_MISMATCH",
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
    #: NITRO_ENCLAVE (`pcrs`) or NITRO_TPM (`nitrotpm_pcrs`, held in `pcrs` here).
    kind: str = KIND_NITRO_ENCLAVE


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


def _strict_decoder(stream: io.BytesIO, max_depth: int = MAX_CBOR_DEPTH) -> cbor2.CBORDecoder:
    return cbor2.CBORDecoder(
        stream,
        tag_hook=_refuse_tag,
        semantic_decoders=_NO_SEMANTIC_TAGS,
        max_depth=max_depth,
        allow_indefinite=False,
        allow_duplicate_keys=False,
    )


def _decode(data: bytes, field: str) -> Any:
    """Decodes exactly one CBOR item, strictly: no semantic tags, no indefinite lengths, no duplicate
    keys, bounded depth, no trailing bytes."""
    stream = io.BytesIO(data)
    try:
        value = _strict_decoder(stream).decode()
    except Exception as exc:  # cbor2 wraps most errors, but hooks and buffers can raise others
        raise MalformedDocument(field, f"not well-formed CBOR ({exc})") from None
    _no_trailing(stream, data, field)
    return value


def _no_trailing(stream: io.BytesIO, data: bytes, field: str) -> None:
    if stream.tell() != len(data):
        raise MalformedDocument(field, f"{len(data) - stream.tell()} trailing bytes after the CBOR item")


def _decode_indefinite_map(data: bytes, field: str) -> dict[Any, Any]:
    """Decodes an indefinite-length map (0xBF ... 0xFF) whose keys and values are strict CBOR: the one
    place the NitroTPM format needs indefinite length. Duplicate keys, a missing break, more than
    MAX_PAYLOAD_KEYS entries and trailing bytes are refused."""
    stream = io.BytesIO(data)
    stream.read(1)  # the 0xBF head, checked by the caller
    decoder = _strict_decoder(stream, MAX_CBOR_DEPTH - 1)  # the map itself is one level
    items: dict[Any, Any] = {}
    while True:
        head = stream.read(1)
        if not head:
            _fail(field, "the indefinite-length map has no break byte")
        if head[0] == _BREAK:
            break
        if len(items) >= MAX_PAYLOAD_KEYS:
            _fail(field, f"the map has more than {MAX_PAYLOAD_KEYS} entries")
        stream.seek(-1, io.SEEK_CUR)
        try:
            key = decoder.decode()
            value = decoder.decode()
        except Exception as exc:  # as in _decode: one error type for every malformed input
            raise MalformedDocument(field, f"not well-formed CBOR ({exc})") from None
        if not isinstance(key, str):
            _fail(field, "map keys must be text strings")
        if key in items:
            _fail(field, f"duplicate key {key!r}")
        items[key] = value
    _no_trailing(stream, data, field)
    return items


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


def _pcrs(value: Any, field: str = "pcrs", index_max: int = PCR_INDEX_MAX,
          lengths: frozenset[int] = PCR_VALUE_LENGTHS) -> Mapping[int, bytes]:
    if not isinstance(value, Mapping):
        _fail(field, f"must be a map, not {type(value).__name__}")
    if not 1 <= len(value) <= index_max + 1:
        _fail(field, f"must have 1..{index_max + 1} entries, has {len(value)}")
    pcrs: dict[int, bytes] = {}
    for index, pcr in value.items():
        _uint(index, field, index_max)
        if not isinstance(pcr, bytes) or len(pcr) not in lengths:
            _fail(f"{field}[{index}]", f"must be a byte string of {' or '.join(map(str, sorted(lengths)))} bytes")
        pcrs[index] = pcr
    return MappingProxyType(dict(sorted(pcrs.items())))


def _payload(payload_bytes: bytes) -> tuple[Mapping[str, Any], str]:
    """The payload map and the document's kind; each kind must come in its own map encoding."""
    indefinite = payload_bytes[0] == _INDEFINITE_MAP
    payload = (_decode_indefinite_map(payload_bytes, "payload") if indefinite
               else _decode(payload_bytes, "payload"))
    if not isinstance(payload, Mapping):
        _fail("payload", f"must be a map, not {type(payload).__name__}")
    if not all(isinstance(key, str) for key in payload):
        _fail("payload", "map keys must be text strings")
    if "pcrs" in payload and "nitrotpm_pcrs" in payload:
        _fail("payload", "carries both pcrs and nitrotpm_pcrs")
    kind = KIND_NITRO_TPM if "nitrotpm_pcrs" in payload else KIND_NITRO_ENCLAVE
    if kind == KIND_NITRO_TPM and not indefinite:
        _fail("payload", "a NitroTPM payload must be an indefinite-length map, as the NitroTPM encodes it")
    if kind == KIND_NITRO_ENCLAVE and indefinite:
        _fail("payload", "indefinite length is allowed in NitroTPM payloads only")
    return payload, kind


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
    payload, kind = _payload(payload_bytes)
    pcr_field = "nitrotpm_pcrs" if kind == KIND_NITRO_TPM else "pcrs"
    for required in ("module_id", "digest", "timestamp", pcr_field, "certificate", "cabundle"):
        if required not in payload:
            _fail(required, "is missing")
    pcrs = (_pcrs(payload[pcr_field], pcr_field, TPM_PCR_INDEX_MAX, TPM_PCR_VALUE_LENGTHS) if kind == KIND_NITRO_TPM
            else _pcrs(payload[pcr_field]))
    millis = _uint(payload["timestamp"], "timestamp", _MAX_TIMESTAMP_MS)
    return AttestationDocument(
        module_id=_text(payload["module_id"], "module_id", MAX_MODULE_ID_CHARS),
        digest=_text(payload["digest"], "digest", MAX_DIGEST_CHARS),
        timestamp=datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=millis),
        pcrs=pcrs,
        certificate=_bytes(payload["certificate"], "certificate", 1, MAX_CERTIFICATE_BYTES),
        cabundle=_cabundle(payload["cabundle"]),
        public_key=_optional_bytes(payload, "public_key"),
        user_data=_optional_bytes(payload, "user_data"),
        nonce=_optional_bytes(payload, "nonce"),
        protected=protected,
        payload=payload_bytes,
        signature=signature,
        kind=kind,
    )
