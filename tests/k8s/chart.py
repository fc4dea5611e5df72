"""Rendering charts/privmesh with the helm that scripts/dev/k8s-tools.sh installs, for the chart tests."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "privmesh"
EXAMPLES = CHART / "examples"
TOOLS = ROOT / ".tools"
BIN = TOOLS / "bin"
NAMESPACE = "privmesh"


def tool(name: str) -> Path:
    """A tool from .tools/bin; a clear failure (not a skip) when scripts/dev/k8s-tools.sh has not run."""
    path = BIN / name
    if not path.exists():
        raise AssertionError(f"{path} is missing: run scripts/dev/k8s-tools.sh (scripts/dev/test.sh does)")
    return path


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses duplicate keys (the API server silently keeps the last one)."""


def _mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
    duplicates = {k for k in keys if keys.count(k) > 1}
    if duplicates:
        raise yaml.constructor.ConstructorError(None, None, f"duplicate keys {sorted(duplicates)}", node.start_mark)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(tool("helm")), *args], capture_output=True, text=True, timeout=120)


def render_text(*values: Path, sets: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    args = ["template", "privmesh", str(CHART), "--namespace", NAMESPACE]
    for path in values:
        args += ["-f", str(path)]
    for item in sets:
        args += ["--set", item]
    return helm(*args)


def render(*values: Path, sets: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The chart's objects for these values files; fails on a rendering error or a duplicate YAML key."""
    result = render_text(*values, sets=sets)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.load_all(result.stdout, Loader=_UniqueKeyLoader) if doc]


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def executor_template(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """dp-gateway's Spark executor pod template, as Spark reads it (spark.kubernetes.executor.podTemplateFile)."""
    data = by_kind(objects, "ConfigMap")["dp-gateway-spark"]["data"]
    return dict(yaml.safe_load(data["executor-pod-template.yaml"]))
