"""The data owner's side: an ECDSA key pair for Flower's SuperNode authentication, and a SuperNode process that
connects to the coordinator's SuperLink with the private key and trains on local data; for FLARE federations a
FLARE client started from the startup kit the coordinator issued after admission.

The private keys never leave the participant's directory (mode 0600): the ECDSA key (an OpenSSH file, as
flower-supernode reads it; its public key goes to RegisterParticipant and is the one attestation binds) and the
site's FLARE key (RSA, as FLARE signs with RSA-PSS), whose certificate request the ECDSA key endorses. The same
ECDSA key signs the segments of the site's FLARE audit log the participant ships to the coordinator.
"""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from privmesh.fl.app.spec import DATA_PATH_KEY
from privmesh.fl.flare.kit import (
    DATA_ENV,
    KEY_FILE,
    MAX_AUDIT_SEGMENT_BYTES,
    ORG,
    NitroEvidence,
    configure_site_evidence,
    csr_message,
    site_audit_message,
    unpack_kit,
)
from privmesh.fl.v1 import fl_pb2, fl_pb2_grpc
from privmesh.runtime.errors import read_error
from privmesh.runtime.ports import free_loopback_port

PRIVATE_KEY_FILE = "supernode-key"
PUBLIC_KEY_FILE = "supernode-key.pub"
FLARE_KEY_FILE = "flare-key.pem"


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


@dataclass(frozen=True)
class ParticipantKeys:
    directory: Path

    @property
    def private_key_file(self) -> Path:
        return self.directory / PRIVATE_KEY_FILE

    @property
    def public_key_file(self) -> Path:
        return self.directory / PUBLIC_KEY_FILE

    @classmethod
    def load_or_create(cls, directory: Path, curve: ec.EllipticCurve | None = None) -> ParticipantKeys:
        """Creates a P-384 (by default) key pair in `directory` unless one is there."""
        keys = cls(Path(directory))
        if keys.private_key_file.exists():
            return keys
        keys.directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(curve or ec.SECP384R1())
        _write_private(keys.private_key_file, key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()))
        keys.public_key_file.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                                        serialization.PublicFormat.OpenSSH) + b"\n")
        return keys

    def public_key_ssh(self) -> bytes:
        return self.public_key_file.read_bytes().strip()

    def public_key_pem(self) -> bytes:
        key = serialization.load_ssh_public_key(self.public_key_ssh())
        return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def sign(self, message: bytes) -> bytes:
        """An ECDSA (SHA-256, DER) signature with the participant's registered key."""
        key = serialization.load_ssh_private_key(self.private_key_file.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{self.private_key_file} is not an ECDSA key")
        return key.sign(message, ec.ECDSA(hashes.SHA256()))

    @property
    def flare_key_file(self) -> Path:
        return self.directory / FLARE_KEY_FILE

    def flare_kit_request(self, participant: str) -> fl_pb2.GetStartupKitRequest:
        """GetStartupKit for `participant` with a request for the site's FLARE key (made here once, RSA-3072),
        endorsed by the registered key."""
        if not self.flare_key_file.exists():
            _write_private(self.flare_key_file, rsa.generate_private_key(65537, 3072).private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption()))
        key = serialization.load_pem_private_key(self.flare_key_file.read_bytes(), password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(
            [x509.NameAttribute(NameOID.COMMON_NAME, participant.rsplit("/", 1)[-1])])).sign(key, hashes.SHA256())
        der = csr.public_bytes(serialization.Encoding.DER)
        return fl_pb2.GetStartupKitRequest(name=participant,
                                           certificate_signing_request=csr.public_bytes(serialization.Encoding.PEM),
                                           csr_signature=self.sign(csr_message(participant, der)))


def write_training_csv(path: Path, feature_names: Sequence[str], label_name: str,
                       examples: Iterable[tuple[Sequence[float], int]]) -> Path:
    """A participant's local data in the form the ClientApp reads: a header, then features and label per row."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*feature_names, label_name])
        for features, label in examples:
            writer.writerow([*features, label])
    return path


class SuperNode:
    """A flower-supernode process for one participant."""

    def __init__(self, keys: ParticipantKeys, superlink: str, root_certificates: Path, data_path: Path,
                 work_dir: Path) -> None:
        self.keys = keys
        self.superlink = superlink
        self.root_certificates = root_certificates
        self.data_path = Path(data_path).resolve()
        self.work_dir = Path(work_dir)
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [str(Path(sys.executable).with_name("flower-supernode")), "--superlink", self.superlink,
                "--root-certificates", str(self.root_certificates),
                "--auth-supernode-private-key", str(self.keys.private_key_file),
                "--clientappio-api-address", f"127.0.0.1:{free_loopback_port()}",
                "--node-config", f'{DATA_PATH_KEY}="{self.data_path}"']

    def start(self) -> SuperNode:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "FLWR_HOME": str(self.work_dir / "flwr-home"), "FLWR_TELEMETRY_ENABLED": "0",
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               "PYTHONUNBUFFERED": "1"}
        with (self.work_dir / "supernode.log").open("ab") as out:
            self.process = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)
        return self

    def log_text(self) -> str:
        path = self.work_dir / "supernode.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """Stops the SuperNode and the ClientApp processes it spawned (its own session)."""
        _stop_group(self.process)


def _stop_group(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM to the process's session, SIGKILL to what is left after 5 s."""
    if process is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


class FlareClient:
    """A FLARE client process for one participant of a FLARE federation, from the startup kit GetStartupKit
    returned (unpacked into `workspace`) and the participant's own FLARE key; it trains on `data_path`
    (PRIVMESH_FL_DATA for privmesh's executor)."""

    def __init__(self, kit: bytes, site: str, data_path: Path, workspace: Path, keys: ParticipantKeys,
                 evidence: NitroEvidence | None = None) -> None:
        """`evidence`: the site's Nitro authorizer, needed when the coordinator requires fresh Nitro evidence."""
        self.kit = kit
        self.site = site
        self.keys = keys
        self.evidence = evidence
        self.data_path = Path(data_path).resolve()
        self.workspace = Path(workspace).resolve()
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [sys.executable, "-m", "nvflare.private.fed.app.client.client_train", "-m", str(self.workspace),
                "-s", "fed_client.json", "--set", "secure_train=true", f"uid={self.site}", f"org={ORG}",
                "config_folder=config"]

    def start(self) -> FlareClient:
        unpack_kit(self.kit, self.workspace)
        key = self.workspace / KEY_FILE
        key.unlink(missing_ok=True)
        _write_private(key, self.keys.flare_key_file.read_bytes())
        if self.evidence is not None:
            configure_site_evidence(self.workspace, self.evidence)
        env = {**os.environ, DATA_ENV: str(self.data_path), "PYTHONUNBUFFERED": "1",
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        with (self.workspace / "client.log").open("ab") as out:
            self.process = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT, env=env,
                                            cwd=self.workspace, start_new_session=True)
        return self

    def log_text(self) -> str:
        path = self.workspace / "client.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """Stops the client and the job processes it spawned (its own session)."""
        _stop_group(self.process)

    def audit_report(self, participant: str, from_byte: int) -> fl_pb2.ReportSiteAuditRequest | None:
        """ReportSiteAudit for the whole lines of the site's FLARE audit.log from `from_byte` (at most the
        coordinator's segment limit), signed with the registered key; None when there is nothing new."""
        path = self.workspace / "audit.log"
        if not path.exists():
            return None
        with path.open("rb") as handle:
            handle.seek(from_byte)
            data = handle.read(MAX_AUDIT_SEGMENT_BYTES)
        events = data[:data.rfind(b"\n") + 1]
        if not events:
            return None
        return fl_pb2.ReportSiteAuditRequest(name=participant, from_byte=from_byte, events=events, signature=(
            self.keys.sign(site_audit_message(participant, from_byte, events))))


class SiteAuditShipper:
    """Ships a FLARE client's audit log to the coordinator (ReportSiteAudit), segment by segment from where the
    coordinator's copy ends: a first call at byte 0 learns that offset from FAILED_PRECONDITION's next_byte."""

    def __init__(self, client: FlareClient, participant: str, stub: fl_pb2_grpc.FLCoordinatorStub) -> None:
        self.client = client
        self.participant = participant
        self.stub = stub
        self.next_byte = 0

    def ship(self) -> int:
        """Sends what the log holds beyond next_byte; returns the new next_byte (raises grpc.RpcError)."""
        while (report := self.client.audit_report(self.participant, self.next_byte)) is not None:
            try:
                self.next_byte = self.stub.ReportSiteAudit(report, timeout=30).next_byte
            except grpc.RpcError as exc:
                expected = read_error(exc).metadata.get("next_byte")
                if exc.code() != grpc.StatusCode.FAILED_PRECONDITION or expected is None:
                    raise
                self.next_byte = int(expected)
        return self.next_byte
