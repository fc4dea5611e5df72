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
IMAGE_EXTRAS = {"services.Dockerfile": SERVICE_EXTRAS | {"flare"}, "gpu.Dockerfile": SERVICE_EXTRAS | {"gpu"}}


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
    assert extras == IMAGE_EXTRAS[name]  # the services image runs fl-coordinator's FLARE server too
    assert any(line.startswith("COPY --from=build /opt/privmesh /opt/privmesh") for line in final)
    assert final[-1].startswith("CMD") and "USER 10001:10001" in final
    assert not any("install.sh" in line or "pip install" in line for line in final)  # nothing built in the final stage
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.10-slim-bookworm$", text, re.M)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_install_steps_in_a_clean_virtualenv(tmp_path: Path) -> None:
    venv = tmp_path / "opt-privmesh"
    extras = ",".join(sorted(IMAGE_EXTRAS["services.Dockerfile"]))  # the services image's; the GPU image adds torch
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
    flare = subprocess.run([str(python), "-c", "import privmesh.fl.flare.server, privmesh.fl.flare.server_main"],
                           capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert flare.returncode == 0, flare.stderr  # fl-coordinator's FLARE server (services.flCoordinator.flare)


SPARK_ENV = ROOT / ".tools" / "spark-env"  # scripts/dev/spark-env.sh (scripts/dev/test.sh runs it)
EXECUTOR_ENV = {
    "SPARK_DRIVER_URL": "spark://CoarseGrainedScheduler@10.0.1.5:7078", "SPARK_EXECUTOR_ID": "3",
    "SPARK_EXECUTOR_CORES": "2", "SPARK_APPLICATION_ID": "spark-0123", "SPARK_EXECUTOR_POD_IP": "10.0.2.7",
    "SPARK_RESOURCE_PROFILE_ID": "0", "SPARK_EXECUTOR_POD_NAME": "privmesh-dp-engine-exec-3",
    "SPARK_EXECUTOR_MEMORY": "4g", "SPARK_HOME": "/opt/spark-home",
    "SPARK_JAVA_OPT_10": "-Dlast=1", "SPARK_JAVA_OPT_2": "-Dspark.authenticate=true",
    "SPARK_JAVA_OPT_0": "-Dwith space=a b",
}


def test_dp_gateway_spark_dockerfile_adds_java_and_tumults_venv_to_the_services_image() -> None:
    text = (IMAGES / "dp-gateway-spark.Dockerfile").read_text()
    build, final = _stages(IMAGES / "dp-gateway-spark.Dockerfile")
    assert build[0] == "FROM ${PYTHON_IMAGE} AS build" and final[0] == "FROM ${SERVICES_IMAGE}"
    assert any("pip install --quiet --no-deps -r /src/spark-engine.txt" in line for line in build)
    assert "COPY requirements/spark-engine.txt /src/spark-engine.txt" in build
    assert any("openjdk-17-jre-headless" in line for line in final)
    assert "COPY --from=build /opt/spark-engine /opt/spark-engine" in final
    fetch = next(line for line in build if "fetch-jars.py /opt/spark-engine" in line)
    pins = dict(item.split("=") for item in fetch.split()[4:])
    assert set(pins) == {"org/apache/hadoop/hadoop-aws/3.3.4/hadoop-aws-3.3.4.jar",
                         "com/amazonaws/aws-java-sdk-bundle/1.12.262/aws-java-sdk-bundle-1.12.262.jar"}
    assert all(re.fullmatch("[0-9a-f]{64}", sha) for sha in pins.values())
    jars = SPARK_ENV / "lib" / "python3.10" / "site-packages" / "pyspark" / "jars"
    assert (jars / "hadoop-client-api-3.3.4.jar").exists()  # hadoop-aws must match pyspark's Hadoop
    assert any('ln -s /opt/privmesh-engine/privmesh "$site/privmesh"' in line for line in final)
    assert final[-3:] == ["USER 10001:10001", 'ENTRYPOINT ["/usr/local/bin/privmesh-spark-entrypoint"]',
                          'CMD ["privmesh", "--help"]']
    assert not any("pip install" in line for line in final)
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.10-slim-bookworm$", text, re.M)
    values = (ROOT / "charts" / "privmesh" / "values.yaml").read_text()
    assert "python: /opt/spark-engine/bin/python" in values  # the chart's service.spark_python: this venv


def test_spark_entrypoint_starts_the_executor_backend_from_sparks_variables(tmp_path: Path) -> None:
    java = tmp_path / "java"
    java.write_text('#!/bin/sh\nprintf "%s\\0" "$@" > "$ARGS_FILE"\n')
    java.chmod(0o755)
    args_file = tmp_path / "args"
    env = {"PATH": "/usr/bin:/bin", "JAVA": str(java), "ARGS_FILE": str(args_file), **EXECUTOR_ENV}
    subprocess.run([str(IMAGES / "spark-entrypoint.sh"), "executor"], env=env, check=True, timeout=30)
    args = args_file.read_text().split("\0")[:-1]
    assert args == [
        "-Dwith space=a b", "-Dspark.authenticate=true", "-Dlast=1", "-Xms4g", "-Xmx4g",
        "-cp", "/opt/spark-home/jars/*", "org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend",
        "--driver-url", "spark://CoarseGrainedScheduler@10.0.1.5:7078", "--executor-id", "3", "--cores", "2",
        "--app-id", "spark-0123", "--hostname", "10.0.2.7", "--resourceProfileId", "0",
        "--podName", "privmesh-dp-engine-exec-3"]
    missing = {k: v for k, v in env.items() if k != "SPARK_DRIVER_URL"}  # a variable Spark always sets
    refused = subprocess.run([str(IMAGES / "spark-entrypoint.sh"), "executor"], env=missing, capture_output=True,
                             text=True, timeout=30)
    assert refused.returncode != 0 and "SPARK_DRIVER_URL" in refused.stderr
    passthrough = subprocess.run([str(IMAGES / "spark-entrypoint.sh"), "echo", "gateway"], env=env,
                                 capture_output=True, text=True, check=True, timeout=30)
    assert passthrough.stdout == "gateway\n"  # the gateway's own command runs as given


def test_spark_entrypoint_options_are_the_executor_backends() -> None:
    """The class and each option exist in the pinned pyspark's jars (the backend prints its usage)."""
    jars = SPARK_ENV / "lib" / "python3.10" / "site-packages" / "pyspark" / "jars"
    assert jars.is_dir(), f"{jars} is missing: run scripts/dev/spark-env.sh (scripts/dev/test.sh does)"
    usage = subprocess.run(["java", "-cp", f"{jars}/*", "org.apache.spark.scheduler.cluster.k8s."
                            "KubernetesExecutorBackend", "--unknown"], capture_output=True, text=True, timeout=120)
    assert "Usage: org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend" in usage.stdout + usage.stderr
    script = (IMAGES / "spark-entrypoint.sh").read_text()
    passed = set(re.findall(r"^\s+(--[A-Za-z-]+) ", script, re.M))
    assert passed == {"--driver-url", "--executor-id", "--cores", "--app-id", "--hostname", "--resourceProfileId",
                      "--podName"}
    known = set(re.findall(r"^\s+(--[A-Za-z-]+) <", usage.stdout + usage.stderr, re.M))
    assert passed <= known, passed - known
