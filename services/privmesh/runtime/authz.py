"""Declarative authorization: principal -> allowed methods and resources, deny by default.

    rules:
      - name: analysts-query
        principals: ["spiffe://privmesh.local/ns/analytics/sa/*"]
        methods: ["privmesh.dpgateway.v1.DPGateway/Query", "privmesh.dpgateway.v1.DPGateway/Get*"]
        resources: ["datasets/patients"]          # optional, default ["*"]

Patterns are shell-style globs. A method is "<package>.<Service>/<Method>". The interceptor checks the
method; a servicer that acts on a named resource checks (method, resource) too. Health checks and
reflection are open to every authenticated mesh peer; nothing else is.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from privmesh.runtime.context import current_method, current_principal
from privmesh.runtime.errors import PermissionDenied

T = TypeVar("T")

ALWAYS_ALLOWED_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                           "grpc.reflection.v1.ServerReflection")


class PolicyError(Exception):
    """The policy file is invalid."""


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=128)
    principals: tuple[str, ...] = Field(min_length=1)
    methods: tuple[str, ...] = Field(min_length=1)
    resources: tuple[str, ...] = ("*",)

    @field_validator("principals")
    @classmethod
    def _principals(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        for value in values:
            if value != "*" and not value.startswith("spiffe://"):
                raise ValueError(f"{value!r} is neither '*' nor a spiffe:// identity pattern")
        return values

    @field_validator("methods")
    @classmethod
    def _methods(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        for value in values:
            if value != "*" and "/" not in value:
                raise ValueError(f"{value!r} must look like '<package>.<Service>/<Method>' (globs allowed)")
        return values


class PolicyDocument(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: tuple[Rule, ...] = ()


def _compile(patterns: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


@dataclass(frozen=True)
class _CompiledRule:
    name: str
    principals: re.Pattern[str]
    methods: re.Pattern[str]
    resources: re.Pattern[str]


class Authorizer:
    """Evaluates a policy. Decisions for (principal, method) are cached; the policy is immutable."""

    def __init__(self, document: PolicyDocument) -> None:
        self._rules = tuple(
            _CompiledRule(r.name, _compile(r.principals), _compile(r.methods), _compile(r.resources))
            for r in document.rules
        )
        self.allows_method = lru_cache(maxsize=8192)(self._allows_method)

    @classmethod
    def from_file(cls, path: Path) -> Authorizer:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
            return cls(PolicyDocument.model_validate(raw))
        except (OSError, yaml.YAMLError) as exc:
            raise PolicyError(f"authorization policy {path}: {exc}") from exc
        except ValidationError as exc:
            problems = "; ".join(".".join(map(str, e["loc"])) + ": " + e["msg"] for e in exc.errors())
            raise PolicyError(f"authorization policy {path}: {problems}") from exc

    def _allows_method(self, principal: str, method: str) -> bool:
        if method.split("/", 1)[0] in ALWAYS_ALLOWED_SERVICES:
            return True
        return any(r.principals.match(principal) and r.methods.match(method) for r in self._rules)

    def allows_resource(self, resource: str) -> bool:
        """Whether the current caller may call the current method on `resource`."""
        return self.allows(current_principal.get(), current_method.get(), resource)

    def visible(self, items: Iterable[T], resource_of: Callable[[T], str]) -> list[T]:
        """The items whose resource the current caller may see with the current method (List filters a page)."""
        return [item for item in items if self.allows_resource(resource_of(item))]

    def require(self, resource: str) -> None:
        """Raises PERMISSION_DENIED unless the current caller may call the current method on `resource`."""
        if not self.allows_resource(resource):
            raise PermissionDenied("PERMISSION_DENIED_BY_POLICY",
                                   f"{current_principal.get()} may not call {current_method.get()} on {resource}")

    def allows(self, principal: str, method: str, resource: str) -> bool:
        """Whether some rule allows `principal` to call `method` on `resource`."""
        return any(
            r.principals.match(principal) and r.methods.match(method) and r.resources.match(resource)
            for r in self._rules
        )
