"""The coordinator's FLARE provisioning: one FLARE project (the server, the coordinator's admin user, one site per
admitted participant) built with FLARE's own provisioner, its certificates signed by a FLARE root CA that the
coordinator creates once and keeps in the provisioning state (mode 0700).

Every kit is generated into a private scratch directory and moved out at once, so FLARE's prod_NN numbering never
grows. A site's certificate is signed for the key in the participant's certificate request (the participant holds
the key; the coordinator checked the request's endorsement by the participant's attested key): the key FLARE's
CertBuilder makes for the site is dropped from the kit and from the state, so no copy of a site key exists here.

The server binds the configured host only (server_main) and FLARE's internal listener and job-storage paths are
written into the server's local/ folder, so nothing listens on other interfaces or writes under /tmp/nvflare.
Behind a load balancer the server's name (its certificate, every kit's target) differs from the interface it binds
(`bind_host`), and with `admin_port` FLARE's admin API gets a listener of its own on 127.0.0.1 that only the
coordinator's admin kit dials (as localhost, a name of the server's certificate).
"""

from __future__ import annotations

import datetime
import io
import json
import shutil
import threading
import zipfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from nvflare.lighter.constants import CtxKey
from nvflare.lighter.ctx import ProvisionContext
from nvflare.lighter.entity import Project
from nvflare.lighter.impl.cert import DEFAULT_CERT_VALID_DAYS, CertBuilder
from nvflare.lighter.impl.signature import SignatureBuilder
from nvflare.lighter.impl.static_file import StaticFileBuilder
from nvflare.lighter.impl.workspace import WorkspaceBuilder
from nvflare.lighter.provisioner import Provisioner
from nvflare.lighter.spec import Builder
from nvflare.lighter.utils import Identity, generate_cert

from privmesh.fl.flare.kit import ADMIN, AUTHORIZER, CC_MANAGER, KEY_FILE, NITRO, ORG, NitroEvidence

SERVER_COMPONENTS = ("privmesh.fl.flare.controller.RunController",)
CLIENT_COMPONENTS = ("privmesh.fl.flare.executor.LocalTrainer",)
ADMIN_HOST = "localhost"


class _Quiet:
    """FLARE's provisioner prints by default; the coordinator keeps its log for its own records."""

    def debug(self, msg: str) -> None: ...
    def info(self, msg: str) -> None: ...
    def warning(self, msg: str) -> None: ...
    def error(self, msg: str) -> None: ...


def _comm_config() -> dict[str, object]:
    """FLARE's internal listener (server <-> its job processes) on loopback only, no ad-hoc listeners."""
    return {"allow_adhoc_conns": False,
            "internal": {"scheme": "tcp", "resources": {"host": "127.0.0.1", "listen_host": "127.0.0.1"}}}


def _cc_components(evidence: NitroEvidence | None) -> list[dict[str, object]]:
    """The confidential-computing components: on the server (`evidence` given) the Nitro authorizer verifying
    under the coordinator's policy; on a site (None) one that issues, its arguments left to the participant."""
    if evidence is None:
        authorizer: dict[str, object] = {"id": NITRO, "path": AUTHORIZER, "args": {}}
        roles: dict[str, object] = {"cc_issuers_conf": [{"issuer_id": NITRO, "token_expiration": 600}]}
    else:
        authorizer, roles = evidence.component(), {"cc_verifier_ids": [NITRO]}
    return [authorizer, {"id": "cc_manager", "path": CC_MANAGER, "args": roles}]


def _allow(local: Path, extra: tuple[str, ...], storage: Path | None,
           cc: list[dict[str, object]] | None = None) -> None:
    """Adds privmesh's FLARE components to the kit's class allow-list (FLARE enforces it) and its CC components
    when the coordinator requires evidence; on the server, keeps job and snapshot storage inside its workspace."""
    resources = json.loads((local / "resources.json.default").read_text())
    resources["class_allow_list"] = sorted({*resources.get("class_allow_list", []), *extra,
                                            *([AUTHORIZER, CC_MANAGER] if cc else [])})
    resources["components"] = [*resources.get("components", []), *(cc or [])]
    if storage is not None:
        resources["snapshot_persistor"]["args"]["storage"]["args"]["root_dir"] = str(storage / "snapshots")
        for component in resources["components"]:
            if component["id"] == "job_manager":
                component["args"]["uri_root"] = str(storage / "jobs")
    (local / "resources.json").write_text(json.dumps(resources, indent=2))
    (local / "comm_config.json").write_text(json.dumps(_comm_config(), indent=2))


class _SiteCertificate(Builder):  # type: ignore[misc]
    """Runs after CertBuilder: signs the site's certificate for the participant's own key and removes the key
    CertBuilder made (from the kit, and from the state before CertBuilder persists it)."""

    def __init__(self, certs: CertBuilder, site: str, csr: x509.CertificateSigningRequest) -> None:
        self.certs = certs
        self.site = site
        self.csr = csr

    def build(self, project: Project, ctx: ProvisionContext) -> None:
        root: x509.Certificate = ctx[CtxKey.ROOT_CERT]
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = generate_cert(Identity(self.site, ORG), Identity(root.subject.get_attributes_for_oid(
            NameOID.COMMON_NAME)[0].value), ctx[CtxKey.ROOT_PRI_KEY], self.csr.public_key(), not_valid_before=now,
            not_valid_after=min(root.not_valid_after_utc, now + datetime.timedelta(days=DEFAULT_CERT_VALID_DAYS)))
        (client,) = (c for c in project.get_clients() if c.name == self.site)
        kit = Path(ctx.get_ws_dir(client))
        (kit / "startup" / "client.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (kit / KEY_FILE).unlink()
        self.certs.persistent_state.content.pop(self.site, None)


class FlareProvisioner:
    """Builds startup kits for one FLARE project under `root` (its state holds the FLARE root CA's key)."""

    def __init__(self, root: Path, project: str, server_host: str, port: int, bind_host: str | None = None,
                 admin_port: int | None = None, evidence: NitroEvidence | None = None) -> None:
        """`evidence`: the server's Nitro authorizer when every site must present fresh Nitro evidence."""
        self.root = root
        self.evidence = evidence
        self.project = project
        self.server_host = server_host
        self.port = port
        self.bind_host = bind_host
        self.admin_port = admin_port
        self._lock = threading.Lock()
        root.mkdir(parents=True, exist_ok=True, mode=0o700)

    @property
    def state_dir(self) -> Path:
        return self.root / "workspace" / self.project / "state"

    @property
    def server_dir(self) -> Path:
        return self.root / "server"

    @property
    def admin_dir(self) -> Path:
        return self.root / "admin"

    def _build(self, site: tuple[str, x509.CertificateSigningRequest] | None) -> Path:
        """Provisions the server, the admin and `site` into a scratch prod folder, returned (caller removes)."""
        project = Project(self.project, "privmesh fl-coordinator federations")
        # host_names: the admin kit dials a loopback admin listener (admin_port) by that name.
        project.set_server(self.server_host, ORG, {"fed_learn_port": self.port,
                                                   "admin_port": self.admin_port or self.port,
                                                   "default_host": self.server_host, "host_names": [ADMIN_HOST]})
        project.add_admin(ADMIN, ORG, {"role": "project_admin"})
        certs = CertBuilder()
        builders: list[Builder] = [WorkspaceBuilder(), StaticFileBuilder(config_folder="config", scheme="grpc"),
                                   certs]
        if site is not None:
            project.add_client(site[0], ORG, {})
            builders.append(_SiteCertificate(certs, *site))
        builders.append(SignatureBuilder())
        context = Provisioner(str(self.root / "workspace"), builders).provision(project, logger=_Quiet())
        prod = context.get_result_location()
        if not prod or not Path(prod).is_dir():
            raise RuntimeError("FLARE provisioning failed")
        return Path(prod)

    def ensure_server(self) -> None:
        """The server's and the admin's kits, made once (their certificates stay in the state); where the server
        listens, the admin kit dials and the server's components follow the settings at every start."""
        with self._lock:
            if not (self.server_dir / "startup" / "fed_server.json").exists():
                prod = self._build(None)
                try:
                    for name, target in ((self.server_host, self.server_dir), (ADMIN, self.admin_dir)):
                        shutil.rmtree(target, ignore_errors=True)
                        shutil.copytree(prod / name, target)
                finally:
                    shutil.rmtree(prod, ignore_errors=True)
            cc = _cc_components(self.evidence) if self.evidence else None
            _allow(self.server_dir / "local", SERVER_COMPONENTS, self.server_dir / "storage", cc)
            self._listen()

    def site_audit_offset(self, site: str) -> int:
        """Where the next shipped segment of `site`'s audit log starts (what was folded ends there)."""
        path = self.root / "site-audit" / site
        return int(path.read_text()) if path.exists() else 0

    def mark_site_audit(self, site: str, end: int) -> None:
        (self.root / "site-audit").mkdir(exist_ok=True, mode=0o700)
        (self.root / "site-audit" / site).write_text(str(end))

    def _listen(self) -> None:
        """Where the server listens: `bind_host` instead of its name, and the admin listener on loopback."""
        server_file = self.server_dir / "startup" / "fed_server.json"
        config = json.loads(server_file.read_text())
        server = config["servers"][0]
        server["service"]["target"] = f"{self.bind_host or self.server_host}:{self.port}"
        server["admin_port"] = self.admin_port or self.port
        admin_file = self.admin_dir / "startup" / "fed_admin.json"
        admin = json.loads(admin_file.read_text())
        admin["admin"]["port"] = self.admin_port or self.port
        if self.admin_port:
            server["admin_host"] = "127.0.0.1"
            admin["admin"]["host"] = ADMIN_HOST
        else:
            server.pop("admin_host", None)
            admin["admin"]["host"] = self.server_host
        server_file.write_text(json.dumps(config, indent=2))
        admin_file.write_text(json.dumps(admin, indent=2))

    def root_certificate(self) -> str:
        return (self.server_dir / "startup" / "rootCA.pem").read_text()

    def startup_kit(self, site: str, csr: x509.CertificateSigningRequest) -> bytes:
        """A zip of the site's kit: startup/ with a certificate for the key of `csr` (and no key), local/ with
        privmesh's components allowed."""
        with self._lock:
            prod = self._build((site, csr))
            try:
                _allow(prod / site / "local", CLIENT_COMPONENTS, None,
                       _cc_components(None) if self.evidence else None)
                buffer = io.BytesIO()
                with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
                    for path in sorted((prod / site).rglob("*")):
                        if path.is_file():
                            archive.write(path, path.relative_to(prod / site).as_posix())
                return buffer.getvalue()
            finally:
                shutil.rmtree(prod, ignore_errors=True)
