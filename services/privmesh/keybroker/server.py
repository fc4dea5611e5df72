"""Assembles the key broker from its settings: the definition `python -m privmesh.keybroker` runs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import timedelta

import grpc

from privmesh.attestation.v1 import attestation_pb2, attestation_pb2_grpc
from privmesh.keybroker.backends.base import Backend
from privmesh.keybroker.backends.local import LocalBackend
from privmesh.keybroker.keystore import load_root_key
from privmesh.keybroker.release import RecipientJudge
from privmesh.keybroker.service import KeyBrokerService, run_periodically
from privmesh.keybroker.servicer import KeyBrokerServicer
from privmesh.keybroker.settings import KeyBrokerSettings
from privmesh.keybroker.store import KeyStore
from privmesh.keybroker.v1 import keybroker_pb2, keybroker_pb2_grpc
from privmesh.runtime.client import ClientIdentity, secure_channel
from privmesh.runtime.db import Database
from privmesh.runtime.identity import own_principal, peer_principal
from privmesh.runtime.server import Registration, Runtime, ServiceDefinition

SERVICE_NAME = keybroker_pb2.DESCRIPTOR.services_by_name["KeyBroker"].full_name
VERIFIER = attestation_pb2.DESCRIPTOR.services_by_name["AttestationVerifier"]


def make_backends(settings: KeyBrokerSettings) -> dict[str, Backend]:
    backends: dict[str, Backend] = {}
    if settings.keystore_file is not None:
        root_key = load_root_key(settings.root_key_file, settings.root_key_env)
        backends["local"] = LocalBackend(settings.keystore_file, root_key)
    if settings.aws_kms is not None:
        from privmesh.keybroker.backends.aws_kms import AwsKmsBackend

        backends["aws-kms"] = AwsKmsBackend(settings.aws_kms.region, settings.aws_kms.endpoint_url,
                                            settings.aws_kms.timeout_seconds)
    return backends


async def build(runtime: Runtime, settings: KeyBrokerSettings) -> Sequence[Registration]:
    db = Database(settings.database)
    runtime.on_close.append(db.close)
    tls = runtime.config.tls
    attestation = settings.attestation
    verifier = None
    if attestation.verifier_target:
        channel = secure_channel(attestation.verifier_target, ClientIdentity(tls.ca_file, tls.cert_file, tls.key_file),
                                 [VERIFIER], timeout_seconds=attestation.timeout_seconds,
                                 peer=peer_principal(attestation.verifier_identity, tls.cert_file,
                                                     "attestation-verifier"))
        runtime.on_close.append(channel.close)
        verifier = attestation_pb2_grpc.AttestationVerifierStub(channel)
    judge = RecipientJudge(verifier, attestation.jwks_file, attestation.audience or own_principal(tls.cert_file),
                           attestation.issuer, attestation.timeout_seconds)
    service = KeyBrokerService(KeyStore(db), make_backends(settings), settings.default_backend, runtime.audit, judge,
                               timedelta(seconds=settings.min_deletion_waiting_seconds), runtime.authorizer)
    sweeper = asyncio.get_running_loop().create_task(run_periodically(settings.sweep_seconds, service.sweep))

    async def stop_sweeper() -> None:
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper

    runtime.on_close.append(stop_sweeper)
    servicer = KeyBrokerServicer(service)

    def register(server: grpc.aio.Server) -> None:
        keybroker_pb2_grpc.add_KeyBrokerServicer_to_server(servicer, server)

    return [Registration(SERVICE_NAME, register)]


DEFINITION = ServiceDefinition("key-broker", "keybroker.privmesh.dev", KeyBrokerSettings, build)
