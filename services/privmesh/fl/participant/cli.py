"""`privmesh participant`: what a data owner runs — make a key pair, then run a SuperNode against the
coordinator's SuperLink on local data, or for a FLARE federation a FLARE client from the startup kit the
coordinator issued after admission (`python -m privmesh.fl.participant` is the same command)."""

from __future__ import annotations

import base64
import hashlib
import shlex
import signal
import threading
import time
from pathlib import Path
from types import FrameType

import click
import grpc
from cryptography.hazmat.primitives import serialization

from privmesh.fl.flare.kit import NONCE, NitroEvidence
from privmesh.fl.participant.sdk import FlareClient, ParticipantKeys, SiteAuditShipper, SuperNode
from privmesh.fl.v1 import fl_pb2_grpc
from privmesh.runtime.client import pinned_options
from privmesh.runtime.tls import channel_credentials

DIR = click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), required=True,
                   help="the participant's directory: its key pair (private key mode 0600) and SuperNode state")


@click.group()
def participant() -> None:
    """A federated-learning participant (data owner)."""


@participant.command("keygen")
@DIR
def keygen(directory: Path) -> None:
    """Creates a P-384 key pair (once) and prints the public key to register with RegisterParticipant."""
    keys = ParticipantKeys.load_or_create(directory)
    der = serialization.load_pem_public_key(keys.public_key_pem()).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    click.echo(keys.public_key_ssh().decode())
    click.echo(f"fingerprint (SHA-256 of the DER SubjectPublicKeyInfo): {hashlib.sha256(der).hexdigest()}", err=True)


@participant.command("start")
@DIR
@click.option("--superlink", required=True, help="Federation.superlink.fleet_address, host:port")
@click.option("--root-certificates", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="PEM file with Federation.superlink.root_certificates_pem")
@click.option("--data", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="the local training data: CSV with the federation's feature and label columns")
def start(directory: Path, superlink: str, root_certificates: Path, data: Path) -> None:
    """Runs a Flower SuperNode with the participant's private key until interrupted."""
    keys = ParticipantKeys.load_or_create(directory)
    node = SuperNode(keys, superlink, root_certificates, data, directory / "supernode").start()
    click.echo(f"SuperNode started (pid {node.process.pid if node.process else '?'}); log: "
               f"{directory / 'supernode' / 'supernode.log'}")
    _wait(node)


def _wait(node: SuperNode | FlareClient) -> None:
    """Waits for the process, stopping it (and what it spawned) on SIGTERM or Ctrl-C."""
    def stop(signum: int, frame: FrameType | None) -> None:
        node.stop()

    signal.signal(signal.SIGTERM, stop)
    try:
        code = node.process.wait() if node.process else 1
    except KeyboardInterrupt:
        node.stop()
        code = 0
    raise SystemExit(code)


@participant.command("flare-csr")
@DIR
@click.option("--participant", "name", required=True, help="the participant's name, federations/{f}/participants/{p}")
def flare_csr(directory: Path, name: str) -> None:
    """Prints GetStartupKit's certificate_signing_request for the site's FLARE key (made once in --dir) and, on
    stderr, csr_signature (base64): the endorsement by the participant's registered key."""
    request = ParticipantKeys.load_or_create(directory).flare_kit_request(name)
    click.echo(request.certificate_signing_request.decode(), nl=False)
    click.echo(f"csr_signature (base64): {base64.b64encode(request.csr_signature).decode()}", err=True)


MESH = (click.option("--mesh-ca", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="the participant's mesh CA bundle (for attestation-verifier and the coordinator)"),
        click.option("--mesh-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="the participant's mesh certificate"),
        click.option("--mesh-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="its private key"))


def _mesh_channel(target: str, identity: str, ca: Path | None, cert: Path | None, key: Path | None) -> grpc.Channel:
    if ca is None or cert is None or key is None:
        raise click.UsageError("--mesh-ca, --mesh-cert and --mesh-key are needed to reach the mesh")
    return grpc.secure_channel(target, channel_credentials(ca, cert, key), options=pinned_options(target, identity))


def _ship_forever(shipper: SiteAuditShipper, interval: float) -> None:
    """Ships the site's FLARE audit log every `interval` seconds; failures are retried at the next turn."""
    while True:
        try:
            shipper.ship()
        except grpc.RpcError as exc:
            click.echo(f"shipping the FLARE audit log failed: {exc.code().name}; retrying", err=True)
        time.sleep(interval)


@participant.command("start-flare")
@DIR
@click.option("--kit", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="the startup kit (zip) from GetStartupKit.startup_kit")
@click.option("--site", required=True, help="GetStartupKit.site (the participant's FLARE site name)")
@click.option("--data", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="the local training data: CSV with the federation's feature and label columns")
@MESH[0]
@MESH[1]
@MESH[2]
@click.option("--attest-command", help="when the coordinator requires Nitro evidence: the command that prints a "
              f"fresh attestation document, '{NONCE}' standing for the challenge in hex (e.g. 'python -m "
              f"privmesh.enclave.attest --nonce {NONCE}' in an enclave)")
@click.option("--attestation-verifier", help="host:port of attestation-verifier (challenges for --attest-command)")
@click.option("--attestation-verifier-identity", help="the SPIFFE ID attestation-verifier presents")
@click.option("--coordinator", help="host:port of fl-coordinator: ship the site's FLARE audit log to it")
@click.option("--coordinator-identity", help="the SPIFFE ID fl-coordinator presents")
@click.option("--participant", "name", help="the participant's name, federations/{f}/participants/{p}")
@click.option("--audit-interval", type=click.FloatRange(1, 3600), default=30.0, show_default=True,
              help="seconds between audit log shipments")
def start_flare(directory: Path, kit: Path, site: str, data: Path, mesh_ca: Path | None, mesh_cert: Path | None,
                mesh_key: Path | None, attest_command: str | None, attestation_verifier: str | None,
                attestation_verifier_identity: str | None, coordinator: str | None, coordinator_identity: str | None,
                name: str | None, audit_interval: float) -> None:
    """Runs a FLARE client of a FLARE federation with the site's FLARE key from --dir until interrupted; with
    --attest-command it presents fresh Nitro evidence to FLARE, with --coordinator it ships its audit log."""
    keys = ParticipantKeys.load_or_create(directory)
    evidence = None
    if attest_command:
        if not attestation_verifier or not attestation_verifier_identity or not (mesh_ca and mesh_cert and mesh_key):
            raise click.UsageError("--attest-command needs --attestation-verifier(-identity) and the mesh files")
        evidence = NitroEvidence(attestation_verifier, attestation_verifier_identity, mesh_ca, mesh_cert, mesh_key,
                                 command=tuple(shlex.split(attest_command)))
    client = FlareClient(kit.read_bytes(), site, data, directory / "flare", keys, evidence).start()
    if coordinator:
        if not coordinator_identity or not name:
            raise click.UsageError("--coordinator needs --coordinator-identity and --participant")
        stub = fl_pb2_grpc.FLCoordinatorStub(_mesh_channel(coordinator, coordinator_identity, mesh_ca, mesh_cert,
                                                           mesh_key))
        threading.Thread(target=_ship_forever, args=(SiteAuditShipper(client, name, stub), audit_interval),
                         daemon=True).start()
    click.echo(f"FLARE client started (pid {client.process.pid if client.process else '?'}); log: "
               f"{directory / 'flare' / 'client.log'}")
    _wait(client)
