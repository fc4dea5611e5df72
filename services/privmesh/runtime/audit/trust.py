"""What an auditor pins, and the one check every offline verifier makes of a key against it: a pinned key id
(several during a rotation's overlap), or an endorsement by the service's mesh identity under a pinned CA."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cryptography import x509

from privmesh.runtime.audit.endorsement import EndorsementError, verify_endorsement


@dataclass(frozen=True)
class Trust:
    """What the auditor pins: key ids per service (lower-case hex SHA-256 of the raw key; a list accepts any of
    them, e.g. a witness's old and new keys), and/or the mesh CA(s) whose certificates endorse each service's keys
    (a key endorsed by the service's SPIFFE ID in `trust_domain`)."""

    keys: Mapping[str, str | Sequence[str]] = field(default_factory=dict)
    roots: Sequence[x509.Certificate] = ()
    trust_domain: str = "privmesh.local"

    def pinned_ids(self, service: str) -> tuple[str, ...]:
        value = self.keys.get(service, ())
        return (value,) if isinstance(value, str) else tuple(value)


def key_problem(trust: Trust, service: str, raw_key: bytes, certificate_chain: str, endorsement: bytes,
                at: dt.datetime) -> str | None:
    """Why `raw_key` is not an accepted key of `service`, or None: pinned ids decide for a service that has
    them; otherwise an endorsement valid at `at` under the pinned CA."""
    key_id = hashlib.sha256(raw_key).hexdigest()
    pinned = trust.pinned_ids(service)
    if pinned:
        return None if any(hmac.compare_digest(p, key_id) for p in pinned) else \
            f"key {key_id[:16]}... is not the trusted key"
    if not trust.roots:
        return f"key {key_id[:16]}... is not pinned, and no mesh CA is"
    try:
        verify_endorsement(certificate_chain, endorsement, raw_key, service, list(trust.roots), trust.trust_domain, at)
    except EndorsementError as exc:
        return f"key {key_id[:16]}... is not vouched for: {exc}"
    return None
