"""`privmesh participant`: what a data owner runs — make a key pair, then run a SuperNode against the
coordinator's SuperLink on local data, or for a FLARE federation a FLARE client from the startup kit the
coordinator issued after admission (`python -m privmesh.fl.participant` is the same command)."""

from __future__ import annotations

import base64
import hashlib
import signal
from pathlib import Path
from types import FrameType

import click
from cryptography.hazmat.primitives import serialization

from privmesh.fl.participant.sdk import FlareClient, ParticipantKeys, SuperNode

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


@participant.command("start-flare")
@DIR
@click.option("--kit", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="the startup kit (zip) from GetStartupKit.startup_kit")
@click.option("--site", required=True, help="GetStartupKit.site (the participant's FLARE site name)")
@click.option("--data", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="the local training data: CSV with the federation's feature and label columns")
def start_flare(directory: Path, kit: Path, site: str, data: Path) -> None:
    """Runs a FLARE client of a FLARE federation with the site's FLARE key from --dir until interrupted."""
    client = FlareClient(kit.read_bytes(), site, data, directory / "flare",
                         ParticipantKeys.load_or_create(directory)).start()
    click.echo(f"FLARE client started (pid {client.process.pid if client.process else '?'}); log: "
               f"{directory / 'flare' / 'client.log'}")
    _wait(client)
