"""What both sides of a FLARE federation share without importing FLARE: the names the coordinator provisions with,
unpacking a startup kit into a participant's workspace, and the messages a participant signs with its registered
(attested) key: the endorsement of its FLARE key's certificate request, and each segment of its site's audit log.

The signed messages carry a purpose prefix and the participant's name, so a signature made for one purpose or
participant is worth nothing for another.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

ORG = "privmesh"
ADMIN = "coordinator@privmesh.dev"
DATA_ENV = "PRIVMESH_FL_DATA"  # the site's local CSV, read by privmesh's FLARE executor
KEY_FILE = "startup/client.key"  # where FLARE's client reads its private key; never in a kit
MAX_CSR_BYTES = 16 * 1024
MAX_SIGNATURE_BYTES = 256
MAX_AUDIT_SEGMENT_BYTES = 64 * 1024
NONCE = "@nonce@"  # stands for the challenge in an attestation command (FLARE's config loader resolves {var})
NITRO = "nitro"  # the component id of the Nitro authorizer in a kit's resources.json
AUTHORIZER = "privmesh.fl.flare.nitro_authorizer.NitroAuthorizer"
CC_MANAGER = "privmesh.fl.flare.cc.AttestedSitesCCManager"


@dataclass(frozen=True)
class NitroEvidence:
    """A FLARE party's Nitro authorizer: how it reaches attestation-verifier (mTLS with its mesh identity), the
    policy it verifies under (the coordinator's) and the command that makes its documents (a site's)."""

    verifier_target: str
    verifier_identity: str
    ca_file: Path
    cert_file: Path
    key_file: Path
    policy: str = ""
    command: tuple[str, ...] = ()

    def component(self) -> dict[str, object]:
        """The authorizer's entry in a FLARE resources.json."""
        return {"id": NITRO, "path": AUTHORIZER, "args": {
            "verifier_target": self.verifier_target, "verifier_identity": self.verifier_identity,
            "policy": self.policy, "ca_file": str(self.ca_file), "cert_file": str(self.cert_file),
            "key_file": str(self.key_file), "command": list(self.command)}}


def configure_site_evidence(workspace: Path, evidence: NitroEvidence) -> None:
    """Fills the site's Nitro authorizer into its kit's local/resources.json (the kit names it without
    arguments when the coordinator requires evidence: a site that configures none fails to start)."""
    path = workspace / "local" / "resources.json"
    resources = json.loads(path.read_text())
    for component in resources.get("components", []):
        if component.get("id") == NITRO:
            component.update(evidence.component())
    path.write_text(json.dumps(resources, indent=2))


def csr_message(participant: str, csr_der: bytes) -> bytes:
    """What the participant signs to endorse its FLARE key's certificate request (DER)."""
    return b"privmesh.fl.flare-csr.v1\n" + participant.encode() + b"\n" + csr_der


def site_audit_message(participant: str, from_byte: int, events: bytes) -> bytes:
    """What the participant signs to ship `events`, the bytes of its site's audit.log from `from_byte`."""
    return b"privmesh.fl.site-audit.v1\n" + participant.encode() + b"\n" + str(from_byte).encode() + b"\n" + events


def unpack_kit(kit: bytes, workspace: Path) -> None:
    """Extracts a startup kit into a participant's FLARE workspace, refusing paths that leave it."""
    workspace.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(kit)) as archive:
        for member in archive.infolist():
            target = (workspace / member.filename).resolve()
            if not target.is_relative_to(workspace.resolve()):
                raise ValueError(f"startup kit entry {member.filename!r} leaves the workspace")
        archive.extractall(workspace)
