"""Key policies: validation, the default policy, and the decision for one call (deny by default).

A policy is the contract's KeyPolicy message (a plain data structure; stored as its JSON form). An operation
is allowed when an ALLOW statement matches and no DENY statement does. Statements with an attestation
condition match only requests that carry a recipient, and a request with a recipient is allowed only
through such statements: key material then leaves the broker only encrypted to the attested enclave.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from privmesh.keybroker.v1 import keybroker_pb2 as pb
from privmesh.runtime.errors import FailedPrecondition, PermissionDenied, Violations

MAX_STATEMENTS = 100
MAX_PRINCIPALS = 100
MAX_POLICY_BYTES = 64 * 1024
PCR_SIZE = 48
ADMIN_OPERATIONS = (
    pb.KEY_OPERATION_DESCRIBE, pb.KEY_OPERATION_UPDATE, pb.KEY_OPERATION_ROTATE, pb.KEY_OPERATION_ENABLE,
    pb.KEY_OPERATION_DISABLE, pb.KEY_OPERATION_SCHEDULE_DELETION, pb.KEY_OPERATION_CANCEL_DELETION,
    pb.KEY_OPERATION_IMPORT_KEY_MATERIAL, pb.KEY_OPERATION_GET_KEY_POLICY, pb.KEY_OPERATION_PUT_KEY_POLICY,
)
# What an auditor needs to see a key and its policy (and nothing it could use): the console's key page.
AUDIT_OPERATIONS = (pb.KEY_OPERATION_DESCRIBE, pb.KEY_OPERATION_GET_KEY_POLICY)


def default_policy(creator: str) -> pb.KeyPolicy:
    """The creator administers the key; nobody may use it for cryptography until a policy says so."""
    return pb.KeyPolicy(statements=[pb.PolicyStatement(sid="creator-administers", effect=pb.POLICY_EFFECT_ALLOW,
                                                       principals=[creator], operations=ADMIN_OPERATIONS)])


def _principal_pattern_ok(pattern: str) -> bool:
    return pattern == "*" or (pattern.startswith("spiffe://") and len(pattern) <= 2048 and " " not in pattern)


def validate(policy: pb.KeyPolicy, field: str = "policy") -> None:
    """INVALID_ARGUMENT (KEY_POLICY_INVALID) naming every bad field."""
    bad = Violations()
    bad.check(len(policy.statements) <= MAX_STATEMENTS, f"{field}.statements", f"at most {MAX_STATEMENTS}")
    bad.check(policy.ByteSize() <= MAX_POLICY_BYTES, field, f"encodes to more than {MAX_POLICY_BYTES} bytes")
    sids: set[str] = set()
    for i, st in enumerate(policy.statements[:MAX_STATEMENTS]):
        at = f"{field}.statements[{i}]"
        bad.check(len(st.sid) <= 64, f"{at}.sid", "at most 64 characters")
        bad.check(not st.sid or st.sid not in sids, f"{at}.sid", "must be unique within the policy")
        sids.add(st.sid)
        bad.check(st.effect in (pb.POLICY_EFFECT_ALLOW, pb.POLICY_EFFECT_DENY), f"{at}.effect", "ALLOW or DENY")
        bad.check(0 < len(st.principals) <= MAX_PRINCIPALS, f"{at}.principals", f"1..{MAX_PRINCIPALS} required")
        for j, principal in enumerate(st.principals[:MAX_PRINCIPALS]):
            bad.check(_principal_pattern_ok(principal), f"{at}.principals[{j}]",
                      "'*', a spiffe:// ID, or a spiffe:// prefix ending in '/*'")
        bad.check(len(st.operations) > 0, f"{at}.operations", "at least one")
        for j, op in enumerate(st.operations):
            bad.check(op in pb.KeyOperation.values() and op != pb.KEY_OPERATION_UNSPECIFIED,
                      f"{at}.operations[{j}]", "not a KeyOperation")
        cond = st.conditions
        for name in (*cond.encryption_context_equals, *cond.encryption_context_keys_required,
                     *cond.encryption_context_keys_allowed):
            bad.check(bool(name), f"{at}.conditions", "encryption context keys must not be empty")
        if cond.HasField("attestation"):
            att = cond.attestation
            bad.check(st.effect == pb.POLICY_EFFECT_ALLOW, f"{at}.conditions.attestation",
                      "only ALLOW statements may carry an attestation condition")
            bad.check(bool(att.verifier_policy), f"{at}.conditions.attestation.verifier_policy", "required")
            for k, pcr_set in enumerate(att.allowed_pcr_sets):
                bad.check(len(pcr_set.pcrs) > 0, f"{at}.conditions.attestation.allowed_pcr_sets[{k}]", "empty")
                for index, value in pcr_set.pcrs.items():
                    bad.check(index <= 31 and len(value) == PCR_SIZE,
                              f"{at}.conditions.attestation.allowed_pcr_sets[{k}].pcrs[{index}]",
                              f"index 0..31 with a {PCR_SIZE}-byte value")
    bad.raise_if_any("KEY_POLICY_INVALID")


def principal_matches(pattern: str, principal: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith("/*"):
        return principal.startswith(pattern[:-1])
    return pattern == principal


@dataclass(frozen=True)
class _Statement:
    """A statement in the form the per-call decision reads (plain tuples and sets, not protobuf fields)."""

    sid: str
    deny: bool
    principals: tuple[str, ...]
    operations: frozenset[int]
    context_equals: tuple[tuple[str, str], ...]
    context_required: tuple[str, ...]
    context_allowed: frozenset[str]
    attestation: pb.AttestationCondition | None

    def matches(self, principal: str, operation: int, context: Mapping[str, str]) -> bool:
        return operation in self.operations and any(principal_matches(p, principal) for p in self.principals) \
            and all(context.get(k) == v for k, v in self.context_equals) \
            and all(k in context for k in self.context_required) \
            and (not self.context_allowed or self.context_allowed.issuperset(context))


class CompiledPolicy:
    """A key policy converted once (when read) for the decision made on every call."""

    def __init__(self, policy: pb.KeyPolicy) -> None:
        self.statements = tuple(_Statement(
            st.sid, st.effect == pb.POLICY_EFFECT_DENY, tuple(st.principals), frozenset(st.operations),
            tuple(st.conditions.encryption_context_equals.items()),
            tuple(st.conditions.encryption_context_keys_required),
            frozenset(st.conditions.encryption_context_keys_allowed),
            st.conditions.attestation if st.conditions.HasField("attestation") else None)
            for st in policy.statements)


@dataclass(frozen=True)
class Decision:
    """An allowed call; `attestation` lists the conditions a recipient must meet (empty without one)."""

    sids: tuple[str, ...]
    attestation: tuple[pb.AttestationCondition, ...] = ()


def _denied(operation: int, message: str, reason: str = "KEY_POLICY_DENIED") -> PermissionDenied:
    return PermissionDenied(reason, message, {"operation": pb.KeyOperation.Name(operation).removeprefix(
        "KEY_OPERATION_")})


def decide(policy: pb.KeyPolicy | CompiledPolicy, principal: str, operation: int, context: Mapping[str, str],
           has_recipient: bool = False) -> Decision:
    """The decision for one call, or PERMISSION_DENIED (KEY_POLICY_DENIED / ATTESTATION_REQUIRED)."""
    if isinstance(policy, pb.KeyPolicy):
        policy = CompiledPolicy(policy)
    matching = [st for st in policy.statements if st.matches(principal, operation, context)]
    if any(st.deny for st in matching):
        raise _denied(operation, "a DENY statement of the key policy matches")
    allows = [st for st in matching if not st.deny]
    attested = [st for st in allows if st.attestation is not None]
    plain = [st for st in allows if st.attestation is None]
    if has_recipient:
        if not attested:
            raise _denied(operation, "no statement of the key policy releases this key to attested recipients")
        return Decision(tuple(st.sid for st in attested), tuple(st.attestation for st in attested
                                                                if st.attestation is not None))
    if plain:
        return Decision(tuple(st.sid for st in plain))
    if attested:
        raise _denied(operation, "the key policy releases this key only to an attested recipient",
                      "ATTESTATION_REQUIRED")
    raise _denied(operation, "the key policy allows this principal no such operation on this key")


def check_lockout(policy: pb.KeyPolicy, principal: str, bypass: bool) -> None:
    """FAILED_PRECONDITION (KEY_POLICY_LOCKOUT) when the policy would take PUT_KEY_POLICY from the caller."""
    if bypass:
        return
    try:
        decide(policy, principal, pb.KEY_OPERATION_PUT_KEY_POLICY, {})
    except PermissionDenied:
        raise FailedPrecondition("KEY_POLICY_LOCKOUT", "the new policy would take PUT_KEY_POLICY away from the "
                                 "caller; set bypass_policy_lockout_safety_check to do it anyway") from None


def pcrs_allowed(pcr_sets: Sequence[pb.PcrSet], pcrs: Mapping[int, bytes]) -> bool:
    """Whether the attested PCRs match one of the sets (every listed index exactly); no sets: any PCRs."""
    import hmac

    if not pcr_sets:
        return True
    return any(all(hmac.compare_digest(pcrs.get(i, b""), v) for i, v in s.pcrs.items()) for s in pcr_sets)
