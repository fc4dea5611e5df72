"""Caller identity: the SPIFFE-style URI SAN of the peer's mTLS certificate.

spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>. A certificate with no such SAN, or with more
than one, identifies nobody.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from cryptography import x509

_SPIFFE = re.compile(r"^spiffe://(?P<td>[a-z0-9.\-_]{1,255})/ns/(?P<ns>[a-z0-9\-]{1,63})/sa/(?P<sa>[a-z0-9\-.]{1,253})$")


@dataclass(frozen=True)
class SpiffeId:
    trust_domain: str
    namespace: str
    service_account: str

    @property
    def uri(self) -> str:
        return f"spiffe://{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    def __str__(self) -> str:
        return self.uri

    @classmethod
    def parse(cls, uri: str) -> SpiffeId:
        match = _SPIFFE.match(uri)
        if not match:
            raise ValueError("not a spiffe://<trust-domain>/ns/<namespace>/sa/<name> identity")
        return cls(match["td"], match["ns"], match["sa"])


def spiffe_ids_of(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [u for u in san.get_values_for_type(x509.UniformResourceIdentifier) if u.startswith("spiffe://")]


@lru_cache(maxsize=4096)
def identity_from_pem(pem: bytes) -> str | None:
    """The SPIFFE ID of a PEM certificate, or None. Cached: handshakes repeat the same few certificates."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return None
    ids = spiffe_ids_of(cert)
    if len(ids) != 1:
        return None
    try:
        return SpiffeId.parse(ids[0]).uri
    except ValueError:
        return None
