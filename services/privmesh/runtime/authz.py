"""Declarative authorization: principal -> allowed methods and resources, deny by default.

    rules:
      - name: analysts-query
        principals: ["spiffe://privmesh.local/ns/analytics/sa/*"]
        methods: ["privmesh.dpgateway.v1.DPGateway/Query", "privmesh.dpgateway.v1.DPGateway/Get*"]
        resources: ["datasets/patients"]          # optional, default ["**"]: every resource, no view

Principals and methods are shell-style globs; resources are segment patterns (runtime/patterns.py), where a
stronger view ("...:decrypted") is granted only by a pattern naming it. A method is "<package>.<Service>/<Method>".
Every method declares the resources it touches in its contract (runtime/access.py); the interceptor checks the
method, then the request's resources, and after the handler the reply's items, so a handler cannot forget them.
Health checks and reflection are open to every authenticated mesh peer; nothing else is.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import NoReturn, TypeVar

import yaml
from google.protobuf.message import Message
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from privmesh.runtime.access import Declaration
from privmesh.runtime.context import current_method, current_principal
from privmesh.runtime.errors import Internal, PermissionDenied
from privmesh.runtime.patterns import SUBTREE, PatternError, ResourcePattern

M = TypeVar("M", bound=Message)
log = logging.getLogger("privmesh.authz")

ALWAYS_ALLOWED_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                           "grpc.reflection.v1.ServerReflection")
DENIED = "PERMISSION_DENIED_BY_POLICY"


class PolicyError(Exception):
    """The policy file is invalid."""


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=128)
    principals: tuple[str, ...] = Field(min_length=1)
    methods: tuple[str, ...] = Field(min_length=1)
    resources: tuple[str, ...] = (SUBTREE,)

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

    @field_validator("resources")
    @classmethod
    def _resources(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        for value in values:
            try:
                ResourcePattern.parse(value)
            except PatternError as exc:
                raise ValueError(str(exc)) from None
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
    resources: tuple[ResourcePattern, ...]


@dataclass
class _Call:
    """What the current call declared, and whether its handler authorized a resource it resolved."""

    declaration: Declaration
    resolved_checks: int = 0


_current_call: ContextVar[_Call | None] = ContextVar("privmesh_authz_call", default=None)


def refuse(principal: str, method: str, resource: str) -> NoReturn:
    """Every refusal of a resource goes through here; the interceptor audits the PERMISSION_DENIED it raises."""
    raise PermissionDenied(DENIED, f"{principal} may not call {method} on {resource}")


class Authorizer:
    """Evaluates a policy. Decisions for (principal, method) are cached; the policy is immutable."""

    def __init__(self, document: PolicyDocument) -> None:
        self._rules = tuple(
            _CompiledRule(r.name, _compile(r.principals), _compile(r.methods),
                          tuple(ResourcePattern.parse(p) for p in r.resources))
            for r in document.rules
        )
        self.allows_method = lru_cache(maxsize=8192)(self._allows_method)
        self._patterns = lru_cache(maxsize=8192)(self._patterns_for)

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

    def _patterns_for(self, principal: str, method: str) -> tuple[ResourcePattern, ...]:
        """The resource patterns of the rules that allow `principal` the method (cached: one look-up per call)."""
        return tuple(p for r in self._rules if r.principals.match(principal) and r.methods.match(method)
                     for p in r.resources)

    def allows(self, principal: str, method: str, resource: str) -> bool:
        """Whether some rule allows `principal` to call `method` on `resource`."""
        return any(p.matches(resource) for p in self._patterns(principal, method))

    def allows_resource(self, resource: str) -> bool:
        """Whether the current caller may call the current method on `resource`."""
        return self.allows(current_principal.get(), current_method.get(), resource)

    def require(self, resource: str) -> None:
        """Refuses unless the current caller may call the current method on `resource` (a resource the handler
        resolved from stored state); the runtime counts the check."""
        principal, method = current_principal.get(), current_method.get()
        if not self.allows(principal, method, resource):
            refuse(principal, method, resource)
        call = _current_call.get()
        if call is not None:
            call.resolved_checks += 1

    # --- enforcement of the declarations (called by the interceptor) -----------------------------------------

    def begin(self, declaration: Declaration) -> object:
        """Starts a call under its declaration; returns the token for `end`."""
        return _current_call.set(_Call(declaration))

    def end(self, token: object) -> None:
        _current_call.reset(token)  # type: ignore[arg-type]

    def authorize_request(self, request: Message) -> None:
        """Refuses unless the caller may call the method on every resource the request names."""
        call = self._call()
        principal, method = current_principal.get(), current_method.get()
        for resource in call.declaration.request_resources(request, principal):
            if not self.allows(principal, method, resource):
                refuse(principal, method, resource)

    def visible(self, items: Iterable[M]) -> list[M]:
        """The reply items (of the declared items field) whose every resource the caller may see."""
        call = _current_call.get()
        if call is None:
            return []
        principal, method = current_principal.get(), current_method.get()
        return [item for item in items
                if all(self.allows(principal, method, r) for r in call.declaration.item_resources(item, principal))]

    def authorize_reply(self, reply: Message | None) -> None:
        """After the handler: a resolved resource must have been checked, and invisible items are dropped."""
        call = self._call()
        declaration = call.declaration
        if declaration.resolved and call.resolved_checks == 0:
            log.error("%s answered without authorizing the resource it resolved", declaration.method)
            raise Internal("AUTHORIZATION_NOT_APPLIED", "internal error")
        if reply is None or not declaration.items_field:
            return
        items: Sequence[Message] = getattr(reply, declaration.items_field)
        kept = self.visible(items)
        if len(kept) != len(items):
            log.error("%s returned %d items the caller may not see; dropped", declaration.method,
                      len(items) - len(kept))
            del items[:]  # type: ignore[attr-defined]
            items.extend(kept)  # type: ignore[attr-defined]

    @staticmethod
    def _call() -> _Call:
        call = _current_call.get()
        if call is None:
            raise Internal("AUTHORIZATION_NOT_APPLIED", "internal error")
        return call
