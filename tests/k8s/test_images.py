"""The images: what can be checked without a Docker engine. The services image's install step (the same
images/install.sh the Dockerfile runs) in a clean virtualenv, then every service starts from it; the
Dockerfiles' shape (multi-stage, slim Python 3.10 base, non-root user)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from privmesh.mesh.catalog import CATALOG

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "images"
SERVICE_EXTRAS = {"attestation", "keybroker", "tokenvault", "dpgateway", "fhe", "fl", "kubernetes"}


def _stages(dockerfile: Path) -> list[list[str]]:
    stages: list[list[str]] = []
    for line in dockerfile.read_text().replace("\\\n", " ").splitlines():
        line = line.strip()
        if line.startswith("FROM "):
            stages.append([])
        if stages and line and not line.startswith("#"):
            stages[-1].append(line)
    return stages


@pytest.mark.parametrize("name", ["services.Dockerfile", "gpu.Dockerfile"])
def test_dockerfiles_are_multi_stage_non_root_and_use_the_install_script(name: str) -> None:
    text = (IMAGES / name).read_text()
    build, final = _stages(IMAGES / name)
    installs = [line for line in build if line.startswith("RUN images/install.sh /opt/privmesh /src ")]
    assert len(installs) == 1
    extras = set(installs[0].rsplit(" ", 1)[1].split(","))
    assert extras >= SERVICE_EXTRAS and ("gpu" in extras) == (name == "gpu.Dockerfile")
    assert any(line.startswith("COPY --from=build /opt/privmesh /opt/privmesh") for line in final)
    assert final[-1].startswith("CMD") and "USER 10001:10001" in final
    assert not any("install.sh" in line or "pip install" in line for line in final)  # nothing built in the final stage
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.10-slim-bookworm$", text, re.M)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_install_steps_in_a_clean_virtualenv(tmp_path: Path) -> None:
    venv = tmp_path / "opt-privmesh"
    extras = ",".join(sorted(SERVICE_EXTRAS))  # the services image's; the GPU image adds torch
    subprocess.run(["sh", str(IMAGES / "install.sh"), str(venv), str(ROOT), extras], check=True, timeout=1100,
                   env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "HOME": str(tmp_path)})
    python = venv / "bin" / "python"
    # Installed, not linked to the working tree: the package comes from the virtualenv's site-packages.
    where = subprocess.run([str(python), "-c", "import privmesh; print(privmesh.__file__)"], check=True,
                           capture_output=True, text=True, cwd=tmp_path).stdout
    assert where.startswith(str(venv)), where
    dev_tool = subprocess.run([str(python), "-c", "import pytest"], capture_output=True, cwd=tmp_path)
    assert dev_tool.returncode != 0  # the image has no development tools
    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    pins = {norm(n): v for n, _, v in (line.partition("==") for line in
                                        (ROOT / "requirements" / "constraints.txt").read_text().splitlines())
            if v and not n.startswith("#")}
    frozen = subprocess.run([str(venv / "bin" / "pip"), "freeze", "--exclude", "privmesh"], check=True,
                            capture_output=True, text=True).stdout.splitlines()
    for line in frozen:
        name, _, version = line.partition("==")
        assert pins.get(norm(name)) == version, line
    for spec in CATALOG:  # each service's entry point loads (every import resolved) and reads its arguments
        result = subprocess.run([str(python), "-m", spec.module, "--help"], capture_output=True, text=True,
                                cwd=tmp_path, timeout=120)
        assert result.returncode == 0 and "--config" in result.stdout, spec.module + result.stderr
