"""Reference-value policies (the domain twin of the proto's Policy) and judging a document against one.

`evaluate` covers what the document alone can answer; nonce freshness (unknown/replayed) needs the
service's nonce store and is judged there.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from .document import (
    KIND_NITRO_ENCLAVE,
    KIND_NITRO_TPM,
    KINDS,
    MAX_OPTIONAL_BYTES,
    TPM_PCR_INDEX_MAX,
    AttestationDocument,
    Refusal,
)

NAME_PATTERN = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
PCR_VALUE_BYTES = 48
PCR_INDEX_MAX = 31
MAX_PCR_SETS = 64
MAX_DESCRIPTION_CHARS = 1024
DEFAULT_MAX_DOCUMENT_AGE = timedelta(minutes=5)
MAX_DOCUMENT_AGE_LIMIT = timedelta(days=1)
#: How far a document's timestamp may lie ahead of the verification time (clock skew).
MAX_FUTURE_SKEW = timedelta(minutes=1)
DEBUG_PCRS = (0, 1, 2)


class InvalidPolicy(ValueError):
    """A policy field is invalid; `field` is its path as in the proto (for BadRequest field violations)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class PcrSet:
    """PCR values that must all match (indices not listed are not checked)."""

    pcrs: Mapping[int, bytes]
    description: str = ""


@dataclass(frozen=True)
class Policy:
    """Reference values a document is judged against; `validate()` before storing or using one."""

    name: str
    allowed_pcr_sets: Sequence[PcrSet]
    allow_debug: bool = False
    max_document_age: timedelta = DEFAULT_MAX_DOCUMENT_AGE
    require_nonce: bool = True
    require_public_key: bool = False
    #: None: no requirement; bytes (b"" included): user_data must equal them exactly (absent == b"").
    required_user_data: bytes | None = None
    description: str = ""
    #: Which documents the policy judges: NITRO_ENCLAVE or NITRO_TPM; a document of the other kind is refused.
    kind: str = KIND_NITRO_ENCLAVE

    def validate(self) -> None:
        """Raises InvalidPolicy for the first invalid field."""
        if not isinstance(self.name, str) or not NAME_PATTERN.fullmatch(self.name):
            raise InvalidPolicy("name", "must be 1..63 lower-case letters, digits or '-', "
                                        "starting and ending with a letter or digit")
        if self.kind not in KINDS:
            raise InvalidPolicy("kind", f"must be one of {', '.join(sorted(KINDS))}")
        if not self.allowed_pcr_sets:
            raise InvalidPolicy("allowed_pcr_sets", "at least one PCR set is required")
        if len(self.allowed_pcr_sets) > MAX_PCR_SETS:
            raise InvalidPolicy("allowed_pcr_sets", f"at most {MAX_PCR_SETS} sets are allowed")
        for i, pcr_set in enumerate(self.allowed_pcr_sets):
            _validate_pcr_set(pcr_set, f"allowed_pcr_sets[{i}]",
                              TPM_PCR_INDEX_MAX if self.kind == KIND_NITRO_TPM else PCR_INDEX_MAX)
        if not timedelta(0) < self.max_document_age <= MAX_DOCUMENT_AGE_LIMIT:
            raise InvalidPolicy("max_document_age", "must be positive and at most 1 day")
        if self.required_user_data is not None and (
            not isinstance(self.required_user_data, bytes) or len(self.required_user_data) > MAX_OPTIONAL_BYTES
        ):
            raise InvalidPolicy("required_user_data", f"must be at most {MAX_OPTIONAL_BYTES} bytes")
        if len(self.description) > MAX_DESCRIPTION_CHARS:
            raise InvalidPolicy("description", f"must be at most {MAX_DESCRIPTION_CHARS} characters")


def _validate_pcr_set(pcr_set: PcrSet, path: str, index_max: int) -> None:
    # An empty set would match every enclave: refuse it rather than let a typo allow everything.
    if not pcr_set.pcrs:
        raise InvalidPolicy(f"{path}.pcrs", "must list at least one PCR")
    for index, value in pcr_set.pcrs.items():
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= index_max:
            raise InvalidPolicy(f"{path}.pcrs", f"PCR index {index!r} is not in 0..{index_max}")
        if not isinstance(value, bytes) or len(value) != PCR_VALUE_BYTES:
            raise InvalidPolicy(f"{path}.pcrs[{index}]", f"must be {PCR_VALUE_BYTES} bytes (SHA384)")
    if len(pcr_set.description) > MAX_DESCRIPTION_CHARS:
        raise InvalidPolicy(f"{path}.description", f"must be at most {MAX_DESCRIPTION_CHARS} characters")


@dataclass(frozen=True)
class Claims:
    """What a parsed document says about the enclave (mirrors the proto's Claims)."""

    module_id: str
    digest: str
    timestamp: datetime
    pcrs: Mapping[int, bytes]
    public_key: bytes | None
    user_data: bytes | None
    nonce: bytes | None
    debug_mode: bool
    certificate_sha256: str
    kind: str = KIND_NITRO_ENCLAVE


def is_debug_enclave(doc: AttestationDocument) -> bool:
    """Debug-mode enclaves report PCR0, PCR1 and PCR2 as all zeros (a NitroTPM has no debug mode, and its
    PCR0..2 mean firmware, not an enclave image)."""
    return doc.kind == KIND_NITRO_ENCLAVE and all(i in doc.pcrs and not any(doc.pcrs[i]) for i in DEBUG_PCRS)


def claims_of(doc: AttestationDocument) -> Claims:
    """The claims of a parsed document (filled even when the verdict is a rejection)."""
    return Claims(
        module_id=doc.module_id,
        digest=doc.digest,
        timestamp=doc.timestamp,
        pcrs=doc.pcrs,
        public_key=doc.public_key,
        user_data=doc.user_data,
        nonce=doc.nonce,
        debug_mode=is_debug_enclave(doc),
        certificate_sha256=hashlib.sha256(doc.certificate).hexdigest(),
        kind=doc.kind,
    )


def needs_nonce_check(policy: Policy, doc: AttestationDocument) -> bytes | None:
    """The nonce the service must look up (and consume) in its store, or None when there is none to
    check (a missing nonce under a nonce-requiring policy is refused by `evaluate`)."""
    return doc.nonce if policy.require_nonce and doc.nonce else None


def _matches(pcr_set: PcrSet, pcrs: Mapping[int, bytes]) -> bool:
    return all(i in pcrs and hmac.compare_digest(pcrs[i], v) for i, v in pcr_set.pcrs.items())


def matched_pcrs(policy: Policy, doc: AttestationDocument) -> Mapping[int, bytes]:
    """The PCRs the policy used: those of the first allowed set the document matches ({} when none does,
    or when the document is of another kind)."""
    if doc.kind != policy.kind:
        return {}
    for pcr_set in policy.allowed_pcr_sets:
        if _matches(pcr_set, doc.pcrs):
            return {i: doc.pcrs[i] for i in sorted(pcr_set.pcrs)}
    return {}


def evaluate(policy: Policy, doc: AttestationDocument, at: datetime) -> list[Refusal]:
    """Every policy check that fails, one refusal each (empty: the document satisfies the policy)."""
    if at.tzinfo is None:
        raise ValueError("`at` must be timezone-aware")
    refusals: list[Refusal] = []
    if doc.kind != policy.kind:
        # PCRs of one kind mean nothing under the other (enclave PCR0 is an image, NitroTPM PCR0 firmware).
        refusals.append(Refusal("KIND_MISMATCH", f"the document is {doc.kind}, policy {policy.name!r} "
                                                 f"judges {policy.kind} documents"))
    elif not any(_matches(s, doc.pcrs) for s in policy.allowed_pcr_sets):
        refusals.append(Refusal("PCR_MISMATCH", f"the PCRs match none of the {len(policy.allowed_pcr_sets)} "
                                                f"allowed sets of policy {policy.name!r}"))
    if not policy.allow_debug and is_debug_enclave(doc):
        refusals.append(Refusal("DEBUG_ENCLAVE", "PCR0..2 are all zero (debug mode) and the policy forbids it"))
    age = at - doc.timestamp
    if age > policy.max_document_age:
        refusals.append(Refusal("DOCUMENT_STALE", f"the document is {age} old, more than "
                                                  f"{policy.max_document_age}"))
    elif -age > MAX_FUTURE_SKEW:
        refusals.append(Refusal("DOCUMENT_STALE", f"the document is dated {-age} in the future"))
    if policy.require_public_key and not doc.public_key:
        refusals.append(Refusal("PUBLIC_KEY_MISSING", "the policy requires a public key and there is none"))
    if policy.required_user_data is not None and not hmac.compare_digest(
        doc.user_data or b"", policy.required_user_data
    ):
        refusals.append(Refusal("USER_DATA_MISMATCH", "user_data differs from the policy's required_user_data"))
    if policy.require_nonce and not doc.nonce:
        refusals.append(Refusal("NONCE_MISSING", "the policy requires a nonce and there is none"))
    return refusals
