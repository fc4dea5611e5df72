"""Caller identity: the SPIFFE-style URI SAN of the peer's mTLS certificate.

spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>. A certificate with no such SAN, or with more
than one, identifies nobody. The SANs come from gRPC's peer identity, i.e. from the certificate the TLS
handshake verified against the mesh CA.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

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

    @property
    def dns_name(self) -> str:
        """The same identity as a DNS name (under the reserved `.invalid`, so it never names a host): every mesh
        certificate carries it beside the URI SAN because gRPC's client checks a server's DNS SANs only (see
        runtime/client.py). Injective: namespaces hold no dot, and the trust domain is the last part but two."""
        return f"{self.service_account}.{self.namespace}.{self.trust_domain}.spiffe.invalid"

    def __str__(self) -> str:
        return self.uri

    @classmethod
    def parse(cls, uri: str) -> SpiffeId:
        match = _SPIFFE.match(uri)
        if not match:
            raise ValueError("not a spiffe://<trust-domain>/ns/<namespace>/sa/<name> identity")
        return cls(match["td"], match["ns"], match["sa"])


SAN_PROPERTY = "x509_subject_alternative_name"


@lru_cache(maxsize=4096)
def principal_from_sans(sans: tuple[bytes, ...]) -> str | None:
    """The one SPIFFE ID among a verified certificate's SANs, or None when there is none or more than one."""
    ids = [san for san in sans if san.startswith(b"spiffe://")]
    if len(ids) != 1:
        return None
    try:
        return SpiffeId.parse(ids[0].decode("ascii")).uri
    except (ValueError, UnicodeDecodeError):
        return None


def own_principal(cert_file: str | Path) -> str:
    """A service's own SPIFFE ID, from its certificate: the audience of tokens meant for it, the principal
    that policies it writes for itself name."""
    cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    principal = principal_from_sans(tuple(u.encode() for u in sans.get_values_for_type(x509.UniformResourceIdentifier)))
    if principal is None:
        raise ValueError(f"{cert_file} carries no single SPIFFE identity")
    return principal


def peer_principal(configured: str | None, cert_file: str | Path, service: str) -> str:
    """The SPIFFE ID a service pins when it calls `service`: the configured one, else that service's in this
    service's own mesh (same trust domain and namespace)."""
    if configured:
        return SpiffeId.parse(configured).uri
    own = SpiffeId.parse(own_principal(cert_file))
    return SpiffeId(own.trust_domain, own.namespace, service).uri
