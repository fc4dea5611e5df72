"""Assembles the fl-coordinator from its settings: the definition `python -m privmesh.fl` runs. Starting it starts
the supervised SuperLink; stopping it stops the SuperLink and every process the SuperLink spawned."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from privmesh.fl.app.report import REPORT_ENV
from privmesh.fl.coordinator.admission import SERVICES as ATTESTATION_SERVICES
from privmesh.fl.coordinator.admission import Admission
from privmesh.fl.coordinator.service import CoordinatorOptions, CoordinatorService
from privmesh.fl.coordinator.store import CoordinatorStore
from privmesh.fl.coordinator.superlink import SuperLink, SuperLinkConfig
from privmesh.fl.coordinator.vault import ModelVault
from privmesh.fl.servicer import FLCoordinatorServicer, FLRunReporterServicer
from privmesh.fl.settings import FlSettings
from privmesh.fl.v1 import fl_pb2, fl_pb2_grpc, reporter_pb2, reporter_pb2_grpc
from privmesh.runtime.client import ClientIdentity, secure_channel
from privmesh.runtime.db import Database
from privmesh.runtime.identity import own_principal, peer_principal
from privmesh.runtime.ports import free_loopback_port
from privmesh.runtime.server import Registration, Runtime, ServiceDefinition
from privmesh.sdk.keybroker.client import SERVICES as KEYBROKER_SERVICES

if TYPE_CHECKING:
    from privmesh.fl.flare.server import FlareServer

SERVICE_NAME = fl_pb2.DESCRIPTOR.services_by_name["FLCoordinator"].full_name
REPORTER_NAME = reporter_pb2.DESCRIPTOR.services_by_name["FLRunReporter"].full_name


def _local(address: str) -> str:
    """A listen address as a local client dials it (a wildcard host becomes loopback)."""
    host, _, port = address.rpartition(":")
    return f"{'127.0.0.1' if host in ('0.0.0.0', '::', '[::]') else host}:{port}"  # noqa: S104


def _text(path: Path) -> str:
    return path.read_text()


def _flare_server(settings: FlSettings, state_dir: Path, env: dict[str, str], me: ClientIdentity) -> FlareServer:
    """The FLARE server (imported here: FLARE is the optional `flare` extra). Its port, once chosen, is kept:
    the server's certificate and every issued kit name it. With cc_policy its Nitro authorizer verifies sites'
    evidence with this service's mesh identity."""
    from privmesh.fl.flare.kit import NitroEvidence
    from privmesh.fl.flare.provision import FlareProvisioner
    from privmesh.fl.flare.server import FlareServer, FlareServerConfig

    assert settings.flare is not None
    evidence = None
    if settings.flare.cc_policy:
        if not settings.attestation_verifier_target:
            raise ValueError("service.flare.cc_policy needs service.attestation_verifier_target")
        evidence = NitroEvidence(settings.attestation_verifier_target, peer_principal(
            settings.attestation_verifier_identity, me.cert_file, "attestation-verifier"), me.ca_file, me.cert_file,
            me.key_file, settings.flare.cc_policy)
    directory = settings.flare.directory or state_dir / "flare"
    host, _, port = settings.flare.address.rpartition(":")
    chosen = directory / "port"
    number = int(port) or (int(chosen.read_text()) if chosen.exists() else free_loopback_port())
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    chosen.write_text(str(number))
    provisioner = FlareProvisioner(directory, "privmesh", host, number, bind_host=settings.flare.bind_host,
                                   admin_port=settings.flare.admin_port, evidence=evidence)
    return FlareServer(FlareServerConfig(provisioner, env))


async def build(runtime: Runtime, settings: FlSettings) -> Sequence[Registration]:
    cfg = runtime.config
    report_address = settings.report_address or _local(cfg.listen)
    if report_address.endswith(":0"):
        raise ValueError("server.listen needs a fixed port (or set service.report_address): ServerApps report to it")
    principal = own_principal(cfg.tls.cert_file)
    me = ClientIdentity(cfg.tls.ca_file, cfg.tls.cert_file, cfg.tls.key_file)
    tls = settings.superlink_tls
    ca, cert, key = (tls.ca_file, tls.cert_file, tls.key_file) if tls else (cfg.tls.ca_file, cfg.tls.cert_file,
                                                                            cfg.tls.key_file)
    host, _, port = settings.fleet_address.rpartition(":")
    superlink = SuperLink(SuperLinkConfig(
        state_dir=settings.superlink_dir or cfg.state_dir / "superlink", fleet_host=host,
        fleet_port=int(port) or free_loopback_port(), ca_file=Path(ca), cert_file=Path(cert), key_file=Path(key),
        env=dict(zip(REPORT_ENV, (report_address, str(cfg.tls.ca_file), str(cfg.tls.cert_file),
                                  str(cfg.tls.key_file)), strict=True))))
    db = Database(settings.database)
    channels: list[grpc.aio.Channel] = [secure_channel(
        settings.key_broker_target, me, KEYBROKER_SERVICES, settings.call_timeout_seconds,
        peer=peer_principal(settings.key_broker_identity, cfg.tls.cert_file, "key-broker"))]
    verifier = None
    if settings.attestation_verifier_target:
        verifier = secure_channel(settings.attestation_verifier_target, me, ATTESTATION_SERVICES,
                                  settings.call_timeout_seconds,
                                  peer=peer_principal(settings.attestation_verifier_identity, cfg.tls.cert_file,
                                                      "attestation-verifier"))
        channels.append(verifier)
    advertised = settings.advertised_fleet_address or superlink.config.fleet_address
    flare = _flare_server(settings, cfg.state_dir, superlink.config.env, me) if settings.flare else None
    service = CoordinatorService(CoordinatorStore(db), superlink, runtime.audit, ModelVault(channels[0], principal),
                                 Admission(verifier), CoordinatorOptions(
                                     settings.default_model_key, advertised, _text(Path(ca))), flare)
    await superlink.start()
    if flare is not None:
        await flare.start()
    service.start_monitor()

    async def close() -> None:
        await service.stop_monitor()
        if flare is not None:
            await flare.stop()
        await superlink.stop()
        for channel in channels:
            await channel.close()
        db.close()

    runtime.on_close.append(close)
    coordinator = FLCoordinatorServicer(service, runtime.authorizer)
    reporter = FLRunReporterServicer(service, principal)
    return [
        Registration(SERVICE_NAME, lambda s: fl_pb2_grpc.add_FLCoordinatorServicer_to_server(coordinator, s)),
        Registration(REPORTER_NAME, lambda s: reporter_pb2_grpc.add_FLRunReporterServicer_to_server(reporter, s)),
    ]


DEFINITION = ServiceDefinition("fl-coordinator", "fl.privmesh.dev", FlSettings, build)
