"""The import contracts of pyproject.toml hold on the tree and break on a new cross-import.

Each case copies services/privmesh to a temporary directory, adds one forbidden import and runs `lint-imports`
against the copy, so a contract that was deleted, renamed or loosened to let the import through fails here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import tomli

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
SERVICES = {"attestation", "keybroker", "tokenvault", "dpgateway", "fhe", "fl", "enclave"}


def _contracts() -> list[dict[str, Any]]:
    contracts: list[dict[str, Any]] = tomli.loads(PYPROJECT.read_text())["tool"]["importlinter"]["contracts"]
    return contracts


def _lint(tmp_path: Path, module: str | None, line: str) -> subprocess.CompletedProcess[str]:
    tree = tmp_path / "src"
    shutil.copytree(ROOT / "services" / "privmesh", tree / "privmesh", ignore=shutil.ignore_patterns("__pycache__"))
    if module is not None:
        path = tree / "privmesh" / Path(*module.split(".")[1:]).with_suffix(".py")
        path.write_text(path.read_text() + f"\n{line}\n")
    shutil.copy(PYPROJECT, tmp_path / "pyproject.toml")
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(tmp_path / "pyproject.toml")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )


def test_the_independence_contract_lists_every_service() -> None:
    independence = [c for c in _contracts() if c["type"] == "independence"]
    assert len(independence) == 1
    assert {m.removeprefix("privmesh.") for m in independence[0]["modules"]} == SERVICES


def test_the_tree_keeps_the_contracts(tmp_path: Path) -> None:
    result = _lint(tmp_path, None, "")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line"),
    [
        # one service reaching into another's internals
        ("privmesh.keybroker.release", "import privmesh.attestation.policy"),
        ("privmesh.fl.server", "from privmesh.keybroker import store"),
        ("privmesh.tokenvault.vault", "import privmesh.enclave.app"),
        # the shared package importing a service, the runtime importing the shared package
        ("privmesh.sdk.keybroker.client", "import privmesh.keybroker.servicer"),
        ("privmesh.runtime.errors", "import privmesh.sdk.keybroker.client"),
        # a service importing the mesh or the demo
        ("privmesh.dpgateway.servicer", "import privmesh.mesh.local"),
    ],
)
def test_a_forbidden_import_breaks_a_contract(tmp_path: Path, module: str, line: str) -> None:
    result = _lint(tmp_path, module, line)
    assert result.returncode != 0, result.stdout
    assert "BROKEN" in result.stdout
    assert module in result.stdout
