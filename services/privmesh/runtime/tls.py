"""mTLS credentials. The server re-reads its certificate files when they change, so re-issued leaves
(rotation) take effect on the next handshake without a restart."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc

from privmesh.runtime.config import TlsConfig

log = logging.getLogger("privmesh.tls")


def _read(config: TlsConfig) -> tuple[bytes, bytes, bytes]:
    return Path(config.ca_file).read_bytes(), Path(config.key_file).read_bytes(), Path(config.cert_file).read_bytes()


def _stamp(config: TlsConfig) -> tuple[float, ...]:
    return tuple(Path(p).stat().st_mtime_ns for p in (config.ca_file, config.key_file, config.cert_file))


def server_credentials(config: TlsConfig, require_client_auth: bool = True) -> grpc.ServerCredentials:
    """Requires and verifies a client certificate from the mesh CA on every connection (without
    `require_client_auth`: server authentication only, for the service-account token port)."""
    ca, key, cert = _read(config)
    initial = grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)
    last = {"stamp": _stamp(config)}

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        try:
            stamp = _stamp(config)
            if stamp == last["stamp"]:
                return None
            ca_now, key_now, cert_now = _read(config)
        except OSError:
            log.warning("tls files unreadable; keeping the current certificate")
            return None
        last["stamp"] = stamp
        log.info("tls certificate files changed; new handshakes use them")
        return grpc.ssl_server_certificate_configuration([(key_now, cert_now)], root_certificates=ca_now)

    # types-grpcio types the fetcher as never returning None, but gRPC documents None as "keep the current one".
    return grpc.dynamic_ssl_server_credentials(initial, fetch,  # type: ignore[arg-type]
                                               require_client_authentication=require_client_auth)


def channel_credentials(ca_file: Path, cert_file: Path, key_file: Path) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=Path(ca_file).read_bytes(),
        private_key=Path(key_file).read_bytes(),
        certificate_chain=Path(cert_file).read_bytes(),
    )
