"""Where the coordinator's FLARE server listens behind a load balancer (the Helm chart's FLARE settings): its name
(certificate, every kit's target) is the load balancer's, it binds `bind_host` instead, and FLARE's admin API has a
listener of its own on 127.0.0.1 that the coordinator's admin session reaches. A real FLARE server process."""

from __future__ import annotations

import json
import socket
import ssl
import zipfile
from io import BytesIO
from pathlib import Path

import pytest
from cryptography import x509
from pydantic import ValidationError

from privmesh.fl.flare.provision import FlareProvisioner
from privmesh.fl.flare.server import FlareServer, FlareServerConfig
from privmesh.fl.participant.sdk import ParticipantKeys
from privmesh.fl.settings import FlareSettings
from privmesh.runtime.ports import free_loopback_port

NAME = "flare.hospitals.example.invalid"  # resolves nowhere: the server must not try to bind it


def _listening(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp{,6} write them) listening on `port`."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in (line.split() for line in Path(table).read_text().splitlines()[1:]):
            if row[3] == "0A" and int(row[1].rsplit(":", 1)[1], 16) == port:
                found.add(row[1].rsplit(":", 1)[0])
    return found


LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F"}  # 127.0.0.1, ::ffff:127.0.0.1


def test_admin_port_must_be_its_own() -> None:
    with pytest.raises(ValidationError, match="admin_port must differ"):
        FlareSettings(address=f"{NAME}:8002", admin_port=8002)
    with pytest.raises(ValidationError, match="bind_host"):
        FlareSettings(address=f"{NAME}:8002", bind_host="0.0.0.0:8002")
    assert FlareSettings(address=f"{NAME}:8002", bind_host="0.0.0.0", admin_port=8003).admin_port == 8003


@pytest.mark.slow
async def test_server_named_for_the_load_balancer_binds_the_bind_host_and_admin_on_loopback(tmp_path: Path) -> None:
    port, admin_port = free_loopback_port(), free_loopback_port()
    provisioner = FlareProvisioner(tmp_path / "flare", "privmesh", NAME, port, bind_host="127.0.0.1",
                                   admin_port=admin_port)
    server = FlareServer(FlareServerConfig(provisioner))
    try:
        await server.start(timeout=180)  # returns once the admin session answers (over the loopback admin port)
        assert server.address == f"{NAME}:{port}"  # what FlareEndpoint.server_address tells the sites
        assert _listening(port) and _listening(port) <= LOOPBACK
        assert _listening(admin_port) and _listening(admin_port) <= LOOPBACK
        assert await server.connected_sites() == {}
        # The FL port is FLARE's mutual-TLS listener under the load balancer's name.
        context = ssl.create_default_context(cadata=provisioner.root_certificate())
        context.check_hostname = False
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname=NAME) as tls:
            certificate = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True) or b"")
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert NAME in names.get_values_for_type(x509.DNSName)
    finally:
        await server.stop()
    # A site's kit dials the load balancer's name on the FL port, never the bind host or the admin port.
    request = ParticipantKeys.load_or_create(tmp_path / "site").flare_kit_request("federations/risk/participants/a")
    csr = x509.load_pem_x509_csr(request.certificate_signing_request)
    with zipfile.ZipFile(BytesIO(provisioner.startup_kit("risk_hospital-a", csr))) as kit:
        client = json.loads(kit.read("startup/fed_client.json"))
        assert client["servers"][0]["service"]["target"] == f"{NAME}:{port}"
        assert not [n for n in kit.namelist() if n.endswith("fed_admin.json")]
