"""The coordinator's FLARE provisioning: one FLARE project (the server, the coordinator's admin user, one site per
admitted participant) built with FLARE's own provisioner, its certificates signed by a FLARE root CA that the
coordinator creates once and keeps in the provisioning state (mode 0700).

Every kit is generated into a private scratch directory and moved out at once, so FLARE's prod_NN numbering never
grows; FLARE's CertBuilder reuses a subject's certificate and key from the state, so a site's kit is the same each
time it is produced. The server binds the configured host only (server_main) and FLARE's internal listener and
job-storage paths are written into the server's local/ folder, so nothing listens on other interfaces or writes
under /tmp/nvflare. Behind a load balancer the server's name (its certificate, every kit's target) differs from the
interface it binds (`bind_host`), and with `admin_port` FLARE's admin API gets a listener of its own on 127.0.0.1
that only the coordinator's admin kit dials (as localhost, a name of the server's certificate).
"""

from __future__ import annotations

import io
import json
import shutil
import threading
import zipfile
from pathlib import Path

from nvflare.lighter.entity import Project
from nvflare.lighter.impl.cert import CertBuilder
from nvflare.lighter.impl.signature import SignatureBuilder
from nvflare.lighter.impl.static_file import StaticFileBuilder
from nvflare.lighter.impl.workspace import WorkspaceBuilder
from nvflare.lighter.provisioner import Provisioner

from privmesh.fl.flare.kit import ADMIN, ORG

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


def _allow(local: Path, extra: tuple[str, ...], storage: Path | None) -> None:
    """Adds privmesh's FLARE components to the kit's class allow-list (FLARE enforces it) and, on the server,
    keeps job and snapshot storage inside the server's workspace."""
    resources = json.loads((local / "resources.json.default").read_text())
    resources["class_allow_list"] = sorted({*resources.get("class_allow_list", []), *extra})
    if storage is not None:
        resources["snapshot_persistor"]["args"]["storage"]["args"]["root_dir"] = str(storage / "snapshots")
        for component in resources["components"]:
            if component["id"] == "job_manager":
                component["args"]["uri_root"] = str(storage / "jobs")
    (local / "resources.json").write_text(json.dumps(resources, indent=2))
    (local / "comm_config.json").write_text(json.dumps(_comm_config(), indent=2))


class FlareProvisioner:
    """Builds startup kits for one FLARE project under `root` (its state holds the FLARE root CA's key)."""

    def __init__(self, root: Path, project: str, server_host: str, port: int, bind_host: str | None = None,
                 admin_port: int | None = None) -> None:
        self.root = root
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

    def _build(self, sites: list[str]) -> Path:
        """Provisions the server, the admin and `sites` into a scratch prod folder, returned (caller removes)."""
        project = Project(self.project, "privmesh fl-coordinator federations")
        # host_names: the admin kit dials a loopback admin listener (admin_port) by that name.
        project.set_server(self.server_host, ORG, {"fed_learn_port": self.port,
                                                   "admin_port": self.admin_port or self.port,
                                                   "default_host": self.server_host, "host_names": [ADMIN_HOST]})
        project.add_admin(ADMIN, ORG, {"role": "project_admin"})
        for site in sites:
            project.add_client(site, ORG, {})
        builders = [WorkspaceBuilder(), StaticFileBuilder(config_folder="config", scheme="grpc"), CertBuilder(),
                    SignatureBuilder()]
        context = Provisioner(str(self.root / "workspace"), builders).provision(project, logger=_Quiet())
        prod = context.get_result_location()
        if not prod or not Path(prod).is_dir():
            raise RuntimeError("FLARE provisioning failed")
        return Path(prod)

    def ensure_server(self) -> None:
        """The server's and the admin's kits, made once (their certificates stay in the state); where the server
        listens and the admin kit dials follows the settings at every start."""
        with self._lock:
            if (self.server_dir / "startup" / "fed_server.json").exists():
                self._listen()
                return
            prod = self._build([])
            try:
                for name, target in ((self.server_host, self.server_dir), (ADMIN, self.admin_dir)):
                    shutil.rmtree(target, ignore_errors=True)
                    shutil.copytree(prod / name, target)
                _allow(self.server_dir / "local", SERVER_COMPONENTS, self.server_dir / "storage")
                self._listen()
            finally:
                shutil.rmtree(prod, ignore_errors=True)

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

    def startup_kit(self, site: str) -> bytes:
        """A zip of the site's kit (startup/ with its key, local/ with privmesh's components allowed)."""
        with self._lock:
            prod = self._build([site])
            try:
                _allow(prod / site / "local", CLIENT_COMPONENTS, None)
                buffer = io.BytesIO()
                with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
                    for path in sorted((prod / site).rglob("*")):
                        if path.is_file():
                            archive.write(path, path.relative_to(prod / site).as_posix())
                return buffer.getvalue()
            finally:
                shutil.rmtree(prod, ignore_errors=True)
