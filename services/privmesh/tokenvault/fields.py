"""Field configurations: validation of a Field from the contract, its detokenize policy, and the loaded form
(profile object + stored row) the vault works with."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

from privmesh.runtime.errors import FieldViolation
from privmesh.tokenvault import profiles
from privmesh.tokenvault.masking import DEFAULT_DETOKENIZE_MASK, Mask, mask_from_proto
from privmesh.tokenvault.store import StoredField
from privmesh.tokenvault.v1 import tokenvault_pb2 as pb

TENANT_RE = re.compile(r"^[a-z0-9-]{1,63}$")
FIELD_RE = re.compile(r"^[a-z0-9_-]{1,63}$")
KEY_RE = re.compile(r"^(keys|aliases)/[A-Za-z0-9_-]{1,128}$")
DEFAULT_MAX_VALUE_LENGTH = 256
MUTABLE = ("description", "key", "detokenize_policy", "default_ttl", "max_ttl", "require_subject_id",
           "max_value_length")


def field_name(tenant: str, field: str) -> str:
    return f"tenants/{tenant}/fields/{field}"


def parse_tenant(parent: str) -> str | None:
    tenant = parent.removeprefix("tenants/") if parent.startswith("tenants/") else ""
    return tenant if TENANT_RE.match(tenant) else None


def parse_field_name(name: str) -> tuple[str, str] | None:
    parts = name.split("/")
    if len(parts) != 4 or parts[0] != "tenants" or parts[2] != "fields":
        return None
    if not TENANT_RE.match(parts[1]) or not FIELD_RE.match(parts[3]):
        return None
    return parts[1], parts[3]


def validate_mutable(field: pb.Field, path: str = "field") -> list[FieldViolation]:
    """Problems in the parts of a Field that CreateField and UpdateField both accept."""
    found: list[FieldViolation] = []

    def need(ok: bool, where: str, message: str) -> None:
        if not ok:
            found.append(FieldViolation(f"{path}.{where}", message))

    need(len(field.description) <= 1024, "description", "at most 1024 characters")
    masking = field.profile.WhichOneof("kind") == "masking"
    need(masking or bool(KEY_RE.match(field.key)), "key",
         "a key-broker key, 'keys/{key_id}' or 'aliases/{alias}', is required unless the profile is masking")
    need(field.max_value_length <= 1024, "max_value_length", "must be 1..1024 (0: the default 256)")
    for name in ("default_ttl", "max_ttl"):
        ttl = getattr(field, name)
        need(ttl.seconds >= 0 and ttl.nanos >= 0, name, "must not be negative")
    if field.HasField("max_ttl") and field.HasField("default_ttl") and field.max_ttl.ToNanoseconds() > 0:
        need(field.default_ttl.ToNanoseconds() <= field.max_ttl.ToNanoseconds(), "default_ttl",
             "must not exceed max_ttl")
    policy = field.detokenize_policy
    need(len(policy.rules) <= 100, "detokenize_policy.rules", "at most 100 rules")
    for index, rule in enumerate(policy.rules):
        where = f"detokenize_policy.rules[{index}]"
        need(1 <= len(rule.principals) <= 100, f"{where}.principals", "1..100 principals")
        for principal in rule.principals:
            need(principal == "*" or (principal.startswith("spiffe://") and "*" not in principal[:-2]),
                 f"{where}.principals", "'*', a spiffe:// ID, or a spiffe:// prefix ending in '/*'")
        need(rule.view in (pb.DETOKENIZE_VIEW_VALUE, pb.DETOKENIZE_VIEW_MASKED), f"{where}.view", "VALUE or MASKED")
    if policy.HasField("mask"):
        found.extend(profiles.validate(pb.TokenProfile(masking=policy.mask), f"{path}.detokenize_policy.mask"))
    return found


@dataclass
class LoadedField:
    """A stored field ready to use: its configuration and profile."""

    stored: StoredField

    @cached_property
    def config(self) -> pb.Field:
        return pb.Field.FromString(self.stored.config)

    @property
    def name(self) -> str:
        return field_name(self.stored.tenant, self.stored.field)

    @cached_property
    def profile(self) -> profiles.Profile:
        return profiles.build(self.config.profile, self.name)

    @cached_property
    def max_value_length(self) -> int:
        return self.config.max_value_length or DEFAULT_MAX_VALUE_LENGTH

    @cached_property
    def default_ttl_us(self) -> int:
        """0: tokens do not expire unless the item asks."""
        return int(self.config.default_ttl.ToMicroseconds())

    @cached_property
    def max_ttl_us(self) -> int:
        """0: no limit."""
        return int(self.config.max_ttl.ToMicroseconds())

    def view_for(self, principal: str) -> int:
        """The most this principal may see: VALUE, MASKED, or UNSPECIFIED (refused)."""
        best = pb.DETOKENIZE_VIEW_UNSPECIFIED
        for rule in self.config.detokenize_policy.rules:
            if any(_principal_matches(p, principal) for p in rule.principals):
                if rule.view == pb.DETOKENIZE_VIEW_VALUE:
                    return pb.DETOKENIZE_VIEW_VALUE
                best = pb.DETOKENIZE_VIEW_MASKED
        return best

    @property
    def detokenize_mask(self) -> Mask:
        policy = self.config.detokenize_policy
        return mask_from_proto(policy.mask) if policy.HasField("mask") else DEFAULT_DETOKENIZE_MASK


def _principal_matches(pattern: str, principal: str) -> bool:
    if pattern == "*" or pattern == principal:
        return True
    return pattern.endswith("/*") and principal.startswith(pattern[:-1])
