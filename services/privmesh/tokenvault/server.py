"""Assembles the token vault from its settings: the definition `python -m privmesh.tokenvault` runs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import grpc

from privmesh.runtime.client import ClientIdentity
from privmesh.runtime.db import Database
from privmesh.runtime.identity import own_principal, peer_principal
from privmesh.runtime.server import Registration, Runtime, ServiceDefinition
from privmesh.tokenvault.field_service import FieldService
from privmesh.tokenvault.keybroker_source import KeyBrokerSource
from privmesh.tokenvault.keyring import Keyring
from privmesh.tokenvault.rotation import Rotations
from privmesh.tokenvault.servicer import TokenVaultServicer
from privmesh.tokenvault.settings import TokenVaultSettings
from privmesh.tokenvault.store import Store, now_us
from privmesh.tokenvault.v1 import tokenvault_pb2, tokenvault_pb2_grpc
from privmesh.tokenvault.vault import Vault

SERVICE_NAME = tokenvault_pb2.DESCRIPTOR.services_by_name["TokenVault"].full_name
log = logging.getLogger("privmesh.tokenvault")


async def _maintain(store: Store, keyring: Keyring, rotations: Rotations, interval: float) -> None:
    """At start and every `interval`: resumes rotations whose process stopped (their lease expired), schedules
    the deletion of deleted fields' subject KEKs, deletes expired entries (reads already ignore them) and old
    idempotency records."""
    while True:
        try:
            await rotations.resume_abandoned()
            await keyring.shred_buried()
            await asyncio.to_thread(store.purge_expired, now_us())
        except Exception:
            log.exception("vault maintenance failed; retrying later")
        await asyncio.sleep(interval)


async def build(runtime: Runtime, settings: TokenVaultSettings) -> Sequence[Registration]:
    db = Database(settings.database)
    store = Store(db)
    tls = runtime.config.tls
    source = KeyBrokerSource(ClientIdentity(tls.ca_file, tls.cert_file, tls.key_file), settings.key_broker_target,
                             settings.key_broker_timeout_seconds, own_principal(tls.cert_file),
                             peer_principal(settings.key_broker_identity, tls.cert_file, "key-broker"))
    keyring = Keyring(source, store, settings.subject_key_deletion_waiting_seconds)
    rotations = Rotations(store, keyring, runtime.audit, settings.rotation_batch_size, settings.rotation_lease_seconds)
    purger = asyncio.create_task(_maintain(store, keyring, rotations, settings.purge_interval_seconds))

    async def close() -> None:
        purger.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await purger
        await rotations.stop()
        await source.close()
        db.close()

    runtime.on_close.append(close)
    servicer = TokenVaultServicer(Vault(store, keyring, runtime.audit, settings.max_batch_items),
                                  FieldService(store, keyring, runtime.audit), rotations, runtime.authorizer)

    def register(server: grpc.aio.Server) -> None:
        tokenvault_pb2_grpc.add_TokenVaultServicer_to_server(servicer, server)

    return [Registration(SERVICE_NAME, register)]


DEFINITION = ServiceDefinition("token-vault", "tokenvault.privmesh.dev", TokenVaultSettings, build)
