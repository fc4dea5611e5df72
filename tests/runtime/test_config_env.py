"""The PRIVMESH_* overlay is hand-written (runtime/config.py says why): on the same file and variables it gives
the configuration pydantic-settings gives, and it refuses what pydantic-settings silently drops."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from privmesh.runtime import echo
from privmesh.runtime.config import ENV_PREFIX, ConfigError, ServerConfig, load_config
from privmesh.runtime.pki import DevPki
from tests.conftest import server_config


class _Reference(BaseSettings):
    """The same two sections read by pydantic-settings: the file as init values, the variables over them."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__")

    server: ServerConfig
    service: echo.EchoSettings

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        return env_settings, init_settings  # the environment wins over the file, as in load_config


def _use_environment(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """pydantic-settings reads os.environ only: give it exactly `env` among PRIVMESH_* variables."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


RATE_LIMITS = [{"name": "reads", "methods": ["*/Get*"], "per_second": 5.0, "burst": 10}]


@pytest.mark.parametrize("env", [
    {},
    {"PRIVMESH_SERVER__LISTEN": "127.0.0.1:7000", "PRIVMESH_SERVER__METRICS__ENABLED": "false",
     "PRIVMESH_SERVICE__DATABASE": "sqlite:///other.db"},
    {"PRIVMESH_SERVER__RATE_LIMITS": json.dumps(RATE_LIMITS), "PRIVMESH_SERVER__LOG__LEVEL": "DEBUG",
     "PRIVMESH_SERVER__AUDIT__CHECKPOINT_EVERY": "7", "PRIVMESH_SERVER__TRACING__SAMPLE_RATIO": "0.25"},
    {"PRIVMESH_SERVER__METRICS": json.dumps({"enabled": False, "port": 9100})},
], ids=["file-only", "scalars", "json-list-and-nested", "json-object"])
def test_overlay_matches_pydantic_settings(tmp_path: Path, pki: DevPki, monkeypatch: pytest.MonkeyPatch,
                                          env: dict[str, str]) -> None:
    path = server_config(tmp_path, pki, [])
    server, service = load_config(path, echo.EchoSettings, environ=env)
    _use_environment(monkeypatch, env)
    file_values: dict[str, Any] = yaml.safe_load(path.read_text())
    reference = _Reference(**file_values)
    assert server == reference.server
    assert service == reference.service
    if env:  # the variables did change something, so the comparison is not of two copies of the file
        assert (server, service) != load_config(path, echo.EchoSettings, environ={})


def test_a_misspelt_section_is_refused_where_pydantic_settings_drops_it(
        tmp_path: Path, pki: DevPki, monkeypatch: pytest.MonkeyPatch) -> None:
    path = server_config(tmp_path, pki, [])
    env = {"PRIVMESH_SERVRE__LISTEN": "0.0.0.0:7000"}
    with pytest.raises(ConfigError, match="servre: unknown section"):
        load_config(path, echo.EchoSettings, environ=env)
    _use_environment(monkeypatch, env)
    reference = _Reference(**yaml.safe_load(path.read_text()))
    assert reference.server.listen == "127.0.0.1:0"  # the typo was ignored: the operator's intent is lost
