"""`privmesh participant`: what a data owner runs — make a key pair, then run a SuperNode against the
coordinator's SuperLink on local data (`python -m privmesh.fl.participant` is the same command)."""

from __future__ import annotations

import hashlib
import signal
from pathlib import Path
from types import FrameType

import click
from cryptography.hazmat.primitives import serialization

from privmesh.fl.participant.sdk import ParticipantKeys, SuperNode

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

    def stop(signum: int, frame: FrameType | None) -> None:
        node.stop()

    signal.signal(signal.SIGTERM, stop)
    try:
        code = node.process.wait() if node.process else 1
    except KeyboardInterrupt:
        node.stop()
        code = 0
    raise SystemExit(code)
