"""Configuration and policy files are validated at start, with messages that name each bad field."""

from __future__ import annotations

from pathlib import Path

import pytest

from privmesh.runtime import echo
from privmesh.runtime.authz import Authorizer, PolicyError
from privmesh.runtime.config import ConfigError, load_config
from privmesh.runtime.pki import DevPki
from privmesh.runtime.server import run_service
from tests.conftest import server_config


def test_valid_file_and_environment_override(tmp_path: Path, pki: DevPki) -> None:
    path = server_config(tmp_path, pki, [])
    env = {"PRIVMESH_SERVER__LISTEN": "127.0.0.1:7000", "PRIVMESH_SERVER__METRICS__ENABLED": "false",
           "PRIVMESH_SERVICE__DATABASE": "sqlite:///other.db"}
    server, service = load_config(path, echo.EchoSettings, environ=env)
    assert server.listen == "127.0.0.1:7000"
    assert server.metrics.enabled is False
    assert service.database == "sqlite:///other.db"


def test_every_problem_is_named_by_field(tmp_path: Path, pki: DevPki) -> None:
    path = server_config(tmp_path, pki, [], {"colour": "blue"})
    env = {"PRIVMESH_SERVER__LISTEN": "nowhere", "PRIVMESH_SERVER__TLS__CA_FILE": str(tmp_path / "missing.pem"),
           "PRIVMESH_SERVER__AUDIT__CHECKPOINT_EVERY": "0"}
    with pytest.raises(ConfigError) as err:
        load_config(path, echo.EchoSettings, environ=env)
    text = str(err.value)
    for expected in ("server.listen: Value error, must be host:port",
                     "server.tls.ca_file: Path does not point to a file",
                     "server.audit.checkpoint_every: Input should be greater than or equal to 1",
                     "service.colour: Extra inputs are not permitted"):
        assert expected in text


def test_missing_sections_and_bad_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("server: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad, echo.EchoSettings, environ={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.yaml", echo.EchoSettings, environ={})
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match=r"server\.tls: Field required"):
        load_config(empty, echo.EchoSettings, environ={})
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(empty, echo.EchoSettings, environ={"PRIVMESH_SERVER__TLS": "{oops"})


def test_policy_file_errors_are_explicit(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("rules:\n  - name: r\n    principals: [alice]\n    methods: [Foo]\n")
    with pytest.raises(PolicyError) as err:
        Authorizer.from_file(path)
    assert "neither '*' nor a spiffe:// identity" in str(err.value)
    assert "must look like '<package>.<Service>/<Method>'" in str(err.value)


def test_service_exits_2_with_the_message_on_bad_config(tmp_path: Path, pki: DevPki,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = server_config(tmp_path, pki, [], {"colour": "blue"})
    assert run_service(echo.DEFINITION, ["--config", str(path)]) == 2
    assert "service.colour: Extra inputs are not permitted" in capsys.readouterr().err


def test_policy_globs_and_deny_by_default() -> None:
    from privmesh.runtime.authz import PolicyDocument, Rule

    authorizer = Authorizer(PolicyDocument(rules=(
        Rule(name="r", principals=("spiffe://privmesh.local/ns/analytics/sa/*",),
             methods=("privmesh.dpgateway.v1.DPGateway/Get*",), resources=("datasets/patients",)),)))
    analyst = "spiffe://privmesh.local/ns/analytics/sa/ann"
    assert authorizer.allows_method(analyst, "privmesh.dpgateway.v1.DPGateway/GetDataset")
    assert not authorizer.allows_method(analyst, "privmesh.dpgateway.v1.DPGateway/DeleteDataset")
    assert not authorizer.allows_method("spiffe://privmesh.local/ns/other/sa/ann",
                                        "privmesh.dpgateway.v1.DPGateway/GetDataset")
    assert authorizer.allows(analyst, "privmesh.dpgateway.v1.DPGateway/GetDataset", "datasets/patients")
    assert not authorizer.allows(analyst, "privmesh.dpgateway.v1.DPGateway/GetDataset", "datasets/salaries")
    assert not Authorizer(PolicyDocument()).allows_method(analyst, "privmesh.dpgateway.v1.DPGateway/GetDataset")
    assert Authorizer(PolicyDocument()).allows_method(analyst, "grpc.health.v1.Health/Check")
