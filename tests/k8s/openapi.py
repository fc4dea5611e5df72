"""Strict validation of rendered objects against a Kubernetes release's own OpenAPI v3 documents
(api/openapi-spec/v3 of k8s.io/kubernetes, put in .tools/k8s-openapi/<version> by scripts/dev/k8s-tools.sh).

Strict as the API server's field validation is: every object schema that lists its properties gets
`additionalProperties: false`, so an unknown or misspelt field fails, as do wrong types, missing required
fields and values outside an enum. Written here (rather than kubeconform) because kubeconform needs JSON schemas
converted by a Python tool from the internet; this is that conversion, on the release's own files, with the
`jsonschema` library doing the validation.
"""

from __future__ import annotations

import json
from functools import cache, cached_property
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

REF_PREFIX = "#/components/schemas/"


def _strict(schema: Any) -> Any:
    """One schema node with every nested schema made strict (walked by keyword, not by key name: some
    Kubernetes types have properties called `properties` or `$ref`)."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if isinstance(out.get("$ref"), str):
        out["$ref"] = "#/$defs/" + out["$ref"].removeprefix(REF_PREFIX)
    if isinstance(out.get("properties"), dict):
        out["properties"] = {name: _strict(sub) for name, sub in out["properties"].items()}
        if "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    for keyword in ("items", "additionalProperties", "not"):
        if isinstance(out.get(keyword), dict):
            out[keyword] = _strict(out[keyword])
    for keyword in ("allOf", "anyOf", "oneOf"):
        if isinstance(out.get(keyword), list):
            out[keyword] = [_strict(sub) for sub in out[keyword]]
    return out


class KubernetesSchemas:
    """The object schemas of one Kubernetes release, by (apiVersion, kind). Use `for_release` (loaded once)."""

    @classmethod
    @cache
    def for_release(cls, spec_dir: Path) -> KubernetesSchemas:
        return cls(spec_dir)

    def __init__(self, spec_dir: Path) -> None:
        self.spec_dir = spec_dir
        self.version = spec_dir.name

    @cached_property
    def _defs(self) -> dict[str, Any]:
        defs: dict[str, Any] = {}
        for path in sorted(self.spec_dir.glob("*.json")):
            defs.update(json.loads(path.read_text()).get("components", {}).get("schemas", {}))
        return {name: _strict(schema) for name, schema in defs.items()}

    @cached_property
    def _by_kind(self) -> dict[tuple[str, str], str]:
        index = {}
        for name, schema in self._defs.items():
            for gvk in schema.get("x-kubernetes-group-version-kind", ()):
                api_version = f"{gvk['group']}/{gvk['version']}" if gvk["group"] else gvk["version"]
                index[(api_version, gvk["kind"])] = name
        return index

    def knows(self, api_version: str, kind: str) -> bool:
        return (api_version, kind) in self._by_kind

    def errors(self, obj: dict[str, Any]) -> list[str]:
        """Every violation of `obj` against its kind's schema, as 'path: message' lines."""
        name = self._by_kind[(obj["apiVersion"], obj["kind"])]
        validator = Draft202012Validator({"$defs": self._defs, "$ref": f"#/$defs/{name}"})
        return [f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
                for e in validator.iter_errors(obj)]
