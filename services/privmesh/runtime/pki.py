"""A development PKI for the local mesh: one CA, short-lived leaves with SPIFFE URI SANs, re-issue to rotate.

Production meshes get certificates from cert-manager (or another CA); the services only need PEM files.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from privmesh.runtime.identity import SpiffeId

CA_VALIDITY = dt.timedelta(days=365)
LEAF_VALIDITY = dt.timedelta(hours=24)


@dataclass(frozen=True)
class Bundle:
    """Paths of one identity's credentials."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class DevPki:
    """A CA kept in a directory: ca.crt, ca.key, and <name>.crt/<name>.key per identity."""

    def __init__(self, directory: Path, trust_domain: str = "privmesh.local", namespace: str = "privmesh") -> None:
        self.directory = Path(directory)
        self.trust_domain = trust_domain
        self.namespace = namespace

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.crt"

    def exists(self) -> bool:
        return self.ca_file.exists() and (self.directory / "ca.key").exists()

    def init(self, common_name: str = "privmesh development CA") -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "privmesh")])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        _write_private(self.directory / "ca.key", _key_pem(key))
        _write_public(self.ca_file, cert.public_bytes(serialization.Encoding.PEM))

    def spiffe_id(self, name: str) -> str:
        return SpiffeId(self.trust_domain, self.namespace, name).uri

    def issue(self, name: str, *, dns_names: tuple[str, ...] = ("localhost",), validity: dt.timedelta = LEAF_VALIDITY,
              not_before: dt.datetime | None = None) -> Bundle:
        """(Re-)issues the leaf for `name`: a fresh key, a SPIFFE URI SAN, server and client usage."""
        ca_key = serialization.load_pem_private_key((self.directory / "ca.key").read_bytes(), None)
        ca_cert = x509.load_pem_x509_certificate(self.ca_file.read_bytes())
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        key = ec.generate_private_key(ec.SECP256R1())
        start = not_before or (_now() - dt.timedelta(minutes=5))
        spiffe = SpiffeId(self.trust_domain, self.namespace, name)
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe.uri), x509.DNSName(spiffe.dns_name)]
        sans += [x509.DNSName(d) for d in dns_names]
        sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + validity)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        bundle = self.bundle(name)
        _write_private(bundle.key_file, _key_pem(key))
        _write_public(bundle.cert_file, cert.public_bytes(serialization.Encoding.PEM))
        return bundle

    def bundle(self, name: str) -> Bundle:
        return Bundle(self.ca_file, self.directory / f"{name}.crt", self.directory / f"{name}.key")

    def expires_within(self, name: str, margin: dt.timedelta) -> bool:
        """Whether `name`'s leaf is missing or expires within `margin` (then re-issue it)."""
        path = self.bundle(name).cert_file
        if not path.exists():
            return True
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        return cert.not_valid_after_utc - _now() < margin
