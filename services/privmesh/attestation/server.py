"""Assembles the attestation-verifier from its settings: the definition `python -m privmesh.attestation` runs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from privmesh.attestation.nitro import AWS_NITRO_ROOT_SHA256, NitroVerifier
from privmesh.attestation.policy_files import put_policy_files
from privmesh.attestation.results import ResultStore
from privmesh.attestation.servicer import AttestationServicer
from privmesh.attestation.settings import AttestationSettings
from privmesh.attestation.store import NonceStore, PolicyStore
from privmesh.attestation.v1 import attestation_pb2, attestation_pb2_grpc
from privmesh.attestation.verifier_service import AttestationService
from privmesh.runtime.db import Database
from privmesh.runtime.server import Registration, Runtime, ServiceDefinition
from privmesh.sdk.attestation.tokens import ResultTokenIssuer

SERVICE_NAME = attestation_pb2.DESCRIPTOR.services_by_name["AttestationVerifier"].full_name


def load_or_create_token_key(path: Path) -> ec.EllipticCurvePrivateKey:
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{path} does not hold an EC private key")
        return key
    key = ec.generate_private_key(ec.SECP256R1())
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("xb") as handle:
        path.chmod(0o600)
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return key


def make_verifier(settings: AttestationSettings) -> NitroVerifier:
    dev_roots = [x509.load_pem_x509_certificate(Path(p).read_bytes()) for p in settings.dev_root_files]
    pins = [AWS_NITRO_ROOT_SHA256] if settings.trust_aws_nitro_root else []
    return NitroVerifier(dev_roots, pinned_sha256=pins)


async def build(runtime: Runtime, settings: AttestationSettings) -> Sequence[Registration]:
    db = Database(settings.database)
    runtime.on_close.append(db.close)
    issuer = ResultTokenIssuer(load_or_create_token_key(settings.token_signing_key_file), settings.issuer,
                               timedelta(seconds=settings.token_ttl_seconds))
    service = AttestationService(make_verifier(settings), PolicyStore(db), NonceStore(db), issuer, runtime.audit,
                                 ResultStore(db))
    await put_policy_files(service, settings.policy_files)
    servicer = AttestationServicer(service, runtime.authorizer)

    def register(server: grpc.aio.Server) -> None:
        attestation_pb2_grpc.add_AttestationVerifierServicer_to_server(servicer, server)

    return [Registration(SERVICE_NAME, register)]


DEFINITION = ServiceDefinition("attestation-verifier", "attestation.privmesh.dev", AttestationSettings, build)
