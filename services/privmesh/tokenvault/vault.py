"""The vault's domain logic (no gRPC): tokenize, detokenize, delete and forget, in all-or-nothing batches.

A batch is checked whole before anything is written: every invalid item is reported (INVALID_ARGUMENT,
BadRequest "items[i].<field>"), then unknown fields or tokens (NOT_FOUND with the items' indices). Values
are encrypted before the write transaction; the transaction then settles deterministic tokens against what
is stored (so concurrent writers of one value end with one token), writes the entries and records the
request_id, or nothing at all.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import psycopg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf.timestamp_pb2 import Timestamp

from privmesh.runtime.audit.log import AuditLog
from privmesh.runtime.context import current_principal
from privmesh.runtime.errors import (
    FieldViolation,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from privmesh.tokenvault.fields import FIELD_RE, LoadedField
from privmesh.tokenvault.keyring import Keyring
from privmesh.tokenvault.profiles import FieldKeys, Problem, RandomProfile
from privmesh.tokenvault.store import Cursor, NewEntry, Store, new_entry_ids, now_us
from privmesh.tokenvault.v1 import tokenvault_pb2 as pb

MAX_TOKEN_LENGTH = 256
MAX_SUBJECT_BYTES = 256
MAX_PURPOSE_LENGTH = 256
WRITE_ATTEMPTS = 4


class TokenizeItem(NamedTuple):  # a tuple: cheap to build a thousand times per request
    field: str
    value: str
    subject_id: str = ""
    ttl_us: int | None = None  # None: the field's default


@dataclass(frozen=True)
class Detokenized:
    value: str
    view: int


class _Retry(Exception):
    """A data key was retired by a rotation, or another writer won a race: prepare and write again."""


def aad(tenant: str, field: str, entry_id: str) -> bytes:
    """Binds a ciphertext to its entry, so that rows cannot be swapped."""
    return f"{tenant}\x00{field}\x00{entry_id}".encode()


def not_found(reason: str, what: str, indices: Sequence[int]) -> NotFound:
    return NotFound(reason, f"{what} in items {', '.join(map(str, indices))}",
                    {"indices": ",".join(map(str, indices))})


class Vault:
    def __init__(self, store: Store, keyring: Keyring, audit: AuditLog, max_batch_items: int = 1000) -> None:
        self.store = store
        self.keyring = keyring
        self.audit = audit
        self.max_batch_items = max_batch_items

    # --- shared checks --------------------------------------------------------------------------------

    def check_batch_size(self, count: int) -> None:
        if count == 0:
            raise InvalidArgument.single("items", "at least one item is required")
        if count > self.max_batch_items:
            error = InvalidArgument([FieldViolation("items", f"at most {self.max_batch_items} items",
                                                    "BATCH_TOO_LARGE")], "BATCH_TOO_LARGE")
            error.metadata["max_items"] = str(self.max_batch_items)
            raise error

    async def load_fields(self, tenant: str, names: Sequence[str]) -> dict[str, LoadedField]:
        valid = {n for n in set(names) if FIELD_RE.match(n)}
        stored = await asyncio.to_thread(self.store.get_fields, tenant, valid)
        return {name: LoadedField(row) for name, row in stored.items()}

    @staticmethod
    def raise_item_errors(problems: list[tuple[int, str, str, str]], unknown: list[int], what: str) -> None:
        """Problems are (index, field of the item, reason, description): INVALID_ARGUMENT before NOT_FOUND."""
        if problems:
            violations = [FieldViolation(f"items[{i}].{name}", description, reason)
                          for i, name, reason, description in problems]
            raise InvalidArgument(violations, problems[0][2])
        if unknown:
            raise not_found("FIELD_NOT_FOUND", what, unknown)

    # --- Tokenize -------------------------------------------------------------------------------------

    async def tokenize(self, tenant: str, items: Sequence[TokenizeItem],
                       request_id: str = "") -> list[tuple[str, int | None]]:
        """(token, expire_us) per item."""
        self.check_batch_size(len(items))
        fields = await self.load_fields(tenant, [i.field for i in items])
        problems: list[tuple[int, str, str, str]] = []
        unknown: list[int] = []
        ttls: list[int | None] = []
        now = now_us()
        for index, item in enumerate(items):
            loaded = fields.get(item.field)
            if loaded is None:
                unknown.append(index)
                ttls.append(None)
                continue
            problem = self._item_problem(loaded, item)
            if problem is not None:
                problems.append((index, *problem))
            ttls.append(self._expiry(loaded, item, now, problems, index))
        self.raise_item_errors(problems, unknown, "unknown field")
        keys = {name: await self.keyring.field_keys(f.stored) for name, f in fields.items()
                if f.profile.reversible}
        for attempt in range(WRITE_ATTEMPTS):
            try:
                return await self._tokenize_once(tenant, items, fields, keys, ttls, request_id)
            except _Retry:
                if attempt == WRITE_ATTEMPTS - 1:
                    raise Internal("WRITE_CONFLICT", "could not settle concurrent writes; retry") from None
                self.keyring.forget_all_encryption_keys()
        raise AssertionError("unreachable")

    @staticmethod
    def _item_problem(loaded: LoadedField, item: TokenizeItem) -> tuple[str, str, str] | None:
        if not item.value:
            return "value", "VALUE_EMPTY", "must not be empty"
        if len(item.value.encode()) > loaded.max_value_length:
            return "value", "VALUE_TOO_LONG", f"longer than {loaded.max_value_length} bytes"
        try:
            loaded.profile.check(item.value)
        except Problem as problem:
            return "value", problem.reason, problem.description
        if len(item.subject_id.encode()) > MAX_SUBJECT_BYTES:
            return "subject_id", "VALUE_TOO_LONG", f"longer than {MAX_SUBJECT_BYTES} bytes"
        if loaded.config.require_subject_id and not item.subject_id:
            return "subject_id", "SUBJECT_ID_REQUIRED", "the field requires a subject_id"
        return None

    @staticmethod
    def _expiry(loaded: LoadedField, item: TokenizeItem, now: int, problems: list[tuple[int, str, str, str]],
                index: int) -> int | None:
        """Expiry time (µs) of the item's token, or None when it does not expire."""
        if not loaded.profile.reversible:
            return None
        ttl = item.ttl_us
        if ttl is not None and ttl <= 0:
            problems.append((index, "ttl", "TTL_INVALID", "must be positive"))
            return None
        if ttl is None:
            ttl = loaded.default_ttl_us or None
        max_ttl = loaded.max_ttl_us
        if ttl is not None and max_ttl and ttl > max_ttl:
            problems.append((index, "ttl", "TTL_TOO_LONG", "exceeds the field's max_ttl"))
            return None
        return None if ttl is None else now + ttl

    @staticmethod
    def _fingerprint(items: Sequence[TokenizeItem], keys: dict[str, FieldKeys],
                     fields: dict[str, LoadedField]) -> bytes:
        """Identifies a request without a plaintext-derived unkeyed hash: values enter through keyed hashes
        (masking fields, which have no keys, through their masks)."""
        digest = hashlib.sha256()
        for item in items:
            k = keys.get(item.field)
            value = k.value_hash(item.value) if k else fields[item.field].profile.draw(item.value).encode()
            subject = k.subject_hash(item.subject_id) if k else b""
            digest.update(f"{item.field}\x00{item.ttl_us}\x00".encode() + value + subject)
        return digest.digest()

    async def _tokenize_once(self, tenant: str, items: Sequence[TokenizeItem], fields: dict[str, LoadedField],
                             keys: dict[str, FieldKeys], ttls: list[int | None],
                             request_id: str) -> list[tuple[str, int | None]]:
        fingerprint = self._fingerprint(items, keys, fields) if request_id else b""
        if request_id:
            replayed = await asyncio.to_thread(self._replay, tenant, "Tokenize", request_id, fingerprint)
            if replayed is not None:
                return _decode_tokens(replayed)
        count = len(items)
        tokens: list[str] = [""] * count
        by_field: dict[str, list[int]] = {}
        for index, item in enumerate(items):
            by_field.setdefault(item.field, []).append(index)
        plans: list[_FieldPlan] = []
        for name, indices in by_field.items():
            loaded = fields[name]
            profile = loaded.profile
            if not profile.reversible:
                for index in indices:
                    tokens[index] = profile.draw(items[index].value)
                continue
            plan = _FieldPlan(name, loaded, keys[name], indices)
            values = [items[i].value for i in indices]
            plan.values = values
            plan.entry_ids = new_entry_ids(len(indices))
            if isinstance(profile, RandomProfile):
                plan.tokens = profile.tokens_for(plan.entry_ids, plan.keys)
            elif profile.derived:
                plan.tokens = profile.derive(values, plan.keys)
            else:
                plan.tokens = profile.draw_many(values)
            if profile.deterministic:
                plan.value_hashes = [plan.keys.value_hash(v) for v in values]
            plan.subject_hashes = [plan.keys.subject_hash(items[i].subject_id) if items[i].subject_id else b""
                                   for i in indices]
            await self._encrypt(tenant, plan, items)
            plans.append(plan)
        expiries = list(ttls)
        try:
            return await asyncio.to_thread(self._write, tenant, plans, tokens, expiries, request_id, fingerprint)
        except (sqlite3.IntegrityError, psycopg.errors.UniqueViolation):
            raise _Retry from None

    async def _encrypt(self, tenant: str, plan: _FieldPlan, items: Sequence[TokenizeItem]) -> None:
        loaded = plan.field
        shredding = loaded.config.subject_key_shredding
        groups: dict[bytes | None, list[int]] = {}
        for position, subject_hash in enumerate(plan.subject_hashes):
            groups.setdefault(subject_hash if shredding and subject_hash else None, []).append(position)
        plan.key_ids = [""] * len(plan.indices)
        plan.nonces = [b""] * len(plan.indices)
        plan.ciphertexts = [b""] * len(plan.indices)
        for subject_hash, positions in groups.items():
            raw = [plan.values_of(p).encode() for p in positions]
            assigned = await self.keyring.encryption_keys(tenant, plan.name, loaded.config.key, subject_hash,
                                                          [len(r) for r in raw])
            ciphers: dict[str, AESGCM] = {}
            nonces = secrets.token_bytes(12 * len(positions))
            for n, (position, data, (key_id, key)) in enumerate(zip(positions, raw, assigned, strict=True)):
                cipher = ciphers.get(key_id) or ciphers.setdefault(key_id, AESGCM(key))
                nonce = nonces[12 * n:12 * n + 12]
                plan.key_ids[position] = key_id
                plan.nonces[position] = nonce
                plan.ciphertexts[position] = cipher.encrypt(nonce, data, aad(tenant, plan.name,
                                                                               plan.entry_ids[position]))

    def _replay(self, tenant: str, method: str, request_id: str, fingerprint: bytes) -> bytes | None:
        with self.store.db.transaction() as cur:
            return self._replay_in(cur, tenant, method, request_id, fingerprint)

    def _replay_in(self, cur: Cursor, tenant: str, method: str, request_id: str, fingerprint: bytes) -> bytes | None:
        found = self.store.replay(cur, tenant, method, request_id)
        if found is None:
            return None
        if not secrets.compare_digest(found[0], fingerprint):
            raise InvalidArgument([FieldViolation("request_id", "used before with a different request",
                                                  "REQUEST_ID_CONFLICT")], "REQUEST_ID_CONFLICT")
        return found[1]

    def _write(self, tenant: str, plans: list[_FieldPlan], tokens: list[str], expiries: list[int | None],
               request_id: str, fingerprint: bytes) -> list[tuple[str, int | None]]:
        now = now_us()
        with self.store.db.transaction() as cur:
            if request_id:
                replayed = self._replay_in(cur, tenant, "Tokenize", request_id, fingerprint)
                if replayed is not None:
                    return _decode_tokens(replayed)
            used_keys = sorted({k for plan in plans for k in plan.key_ids})
            if self.store.retired(cur, used_keys):
                raise _Retry
            for plan in plans:
                profile = plan.field.profile
                if self.store.db.dialect == "postgres" and not (profile.derived or isinstance(profile, RandomProfile)):
                    # Drawn tokens are settled against stored ones: one drawing writer per field at a time.
                    cur.execute("SELECT 1 FROM tv_fields WHERE tenant = ? AND field = ? FOR UPDATE",
                                (tenant, plan.name))
                new_entries, extend = self._settle(cur, tenant, plan, tokens, expiries, now)
                self.store.insert_entries(cur, tenant, new_entries, now)
                self.store.extend_expiry(cur, extend)
            results = [(t, e) for t, e in zip(tokens, expiries, strict=True)]
            if request_id:
                self.store.remember(cur, tenant, "Tokenize", request_id, fingerprint, _encode_tokens(results))
        return results

    def _settle(self, cur: Cursor, tenant: str, plan: _FieldPlan, tokens: list[str], expiries: list[int | None],
                now: int) -> tuple[list[NewEntry], list[tuple[int | None, str]]]:
        """Decides each item's token and whether it needs a new entry, against the stored entries."""
        profile = plan.field.profile
        items = range(len(plan.indices))
        new_entries: list[NewEntry] = []
        extend: list[tuple[int | None, str]] = []
        if isinstance(profile, RandomProfile):  # the token names the entry: nothing to settle, nothing to store
            for position in items:
                index = plan.indices[position]
                tokens[index] = plan.tokens[position]
                new_entries.append(plan.entry(position, "", None, expiries[index]))
            return new_entries, extend
        if not profile.deterministic:
            chosen = list(plan.tokens)
            taken = self.store.tokens_taken(cur, tenant, plan.name, chosen)  # short shaped tokens can collide
            seen: set[str] = set()
            for position in items:
                while chosen[position] in taken or chosen[position] in seen:
                    chosen[position] = profile.draw(plan.values_of(position))
                seen.add(chosen[position])
            for position in items:
                index = plan.indices[position]
                tokens[index] = chosen[position]
                new_entries.append(plan.entry(position, chosen[position], None, expiries[index]))
            return new_entries, extend
        hashes = plan.value_hashes
        stored = self.store.existing_by_value(cur, tenant, plan.name, sorted(set(hashes)), now)
        token_of_value = {value_hash: token for _, token, value_hash, _, _ in stored}
        entry_of = {(value_hash, subject): (entry_id, token, expire)
                    for entry_id, token, value_hash, subject, expire in stored}
        if not profile.derived:
            taken = self.store.tokens_taken(cur, tenant, plan.name, plan.tokens)
            for position in items:
                value_hash = hashes[position]
                if value_hash not in token_of_value:
                    token = plan.tokens[position]
                    while token in taken:
                        token = profile.draw(plan.values_of(position))
                    taken.add(token)
                    token_of_value[value_hash] = token
        for position in items:
            index = plan.indices[position]
            value_hash, subject = hashes[position], plan.subject_hashes[position]
            token = token_of_value.get(value_hash, plan.tokens[position])
            token_of_value[value_hash] = token
            tokens[index] = token
            existing = entry_of.get((value_hash, subject))
            if existing is None:
                entry = plan.entry(position, token, value_hash, expiries[index])
                new_entries.append(entry)
                entry_of[(value_hash, subject)] = (entry.id, token, expiries[index])
                continue
            entry_id, _, stored_expiry = existing
            later = None if stored_expiry is None or expiries[index] is None else max(stored_expiry, expiries[index])
            expiries[index] = later
            if later != stored_expiry:
                extend.append((later, entry_id))
                entry_of[(value_hash, subject)] = (entry_id, token, later)
        return new_entries, extend

    # --- Detokenize -----------------------------------------------------------------------------------

    async def detokenize(self, tenant: str, refs: Sequence[tuple[str, str]], view: int, purpose: str,
                         request_id: str = "") -> list[Detokenized]:
        self.check_batch_size(len(refs))
        if len(purpose) > MAX_PURPOSE_LENGTH:
            raise InvalidArgument.single("purpose", f"at most {MAX_PURPOSE_LENGTH} characters")
        fields = await self.load_fields(tenant, [f for f, _ in refs])
        problems, unknown = self._ref_problems(refs, fields, detokenizing=True)
        self.raise_item_errors(problems, unknown, "unknown field")
        principal = current_principal.get()
        views: dict[str, int] = {}
        refused = []
        for name in sorted({f for f, _ in refs}):
            allowed = fields[name].view_for(principal)
            wanted = allowed if view == pb.DETOKENIZE_VIEW_UNSPECIFIED else view
            if allowed == pb.DETOKENIZE_VIEW_UNSPECIFIED or (wanted == pb.DETOKENIZE_VIEW_VALUE
                                                            and allowed != pb.DETOKENIZE_VIEW_VALUE):
                refused.append(name)
            views[name] = wanted
        resource = f"tenants/{tenant}"
        details = {"fields": ",".join(sorted(views)), "count": str(len(refs)), "purpose": purpose}
        if refused:
            await self.audit.append("Detokenize", resource=resource, outcome="DENIED",
                                    details={**details, "refused_fields": ",".join(refused)})
            raise PermissionDenied("DETOKENIZE_DENIED", "the detokenize policy refuses this caller these fields",
                                   {"fields": ",".join(refused)})
        fingerprint = hashlib.sha256(repr((tenant, list(refs), view, purpose)).encode()).digest()
        replayed = bool(request_id) and await asyncio.to_thread(
            self._replay, tenant, "Detokenize", request_id, fingerprint) is not None
        now = now_us()
        found: dict[int, Any] = {}
        missing: list[int] = []
        by_field: dict[str, list[int]] = {}
        for index, (name, _) in enumerate(refs):
            by_field.setdefault(name, []).append(index)
        for name, indices in by_field.items():
            wanted = sorted({refs[i][1] for i in indices})
            ids = await self._entry_ids(fields[name], wanted)
            entries = await asyncio.to_thread(self.store.find_tokens, tenant, name, wanted, now, ids)
            for index in indices:
                entry = entries.get(refs[index][1])
                if entry is None:
                    missing.append(index)
                else:
                    found[index] = entry
        if missing:
            raise not_found("TOKEN_NOT_FOUND", "unknown, expired or deleted token", sorted(missing))
        wanted_keys: dict[str, tuple[str, str, bytes, int]] = {}
        for entry in found.values():
            field_, name_, wrapped, uses = wanted_keys.get(entry.data_key_id, (entry.field, entry.key_name,
                                                                                entry.wrapped, 0))
            wanted_keys[entry.data_key_id] = (field_, name_, wrapped, uses + 1)
        plain_keys = await self.keyring.decryption_keys(tenant, wanted_keys)
        results = []
        for index in range(len(refs)):
            entry = found[index]
            try:
                value = AESGCM(plain_keys[entry.data_key_id]).decrypt(entry.nonce, entry.ciphertext,
                                                                       aad(tenant, entry.field, entry.id)).decode()
            except InvalidTag:
                raise Internal("ENTRY_CORRUPT", f"an entry of item {index} does not decrypt") from None
            field_view = views[entry.field]
            if field_view == pb.DETOKENIZE_VIEW_MASKED:
                value = fields[entry.field].detokenize_mask.apply(value)
            results.append(Detokenized(value, field_view))
        if not replayed:
            await self.audit.append("Detokenize", resource=resource, details=details)
            if request_id:
                await asyncio.to_thread(self._remember, tenant, "Detokenize", request_id, fingerprint, b"")
        return results

    async def _entry_ids(self, loaded: LoadedField, tokens: Sequence[str]) -> dict[str, str]:
        """The entry ids that a random field's tokens name (none for other profiles)."""
        if not isinstance(loaded.profile, RandomProfile):
            return {}
        return loaded.profile.entry_ids(tokens, await self.keyring.field_keys(loaded.stored))

    def _remember(self, tenant: str, method: str, request_id: str, fingerprint: bytes, response: bytes) -> None:
        with self.store.db.transaction() as cur:
            self.store.remember(cur, tenant, method, request_id, fingerprint, response)

    @staticmethod
    def _ref_problems(refs: Sequence[tuple[str, str]], fields: dict[str, LoadedField],
                      detokenizing: bool) -> tuple[list[tuple[int, str, str, str]], list[int]]:
        problems: list[tuple[int, str, str, str]] = []
        unknown: list[int] = []
        for index, (name, token) in enumerate(refs):
            loaded = fields.get(name)
            if not token:
                problems.append((index, "token", "VALUE_EMPTY", "must not be empty"))
            elif len(token) > MAX_TOKEN_LENGTH:
                problems.append((index, "token", "VALUE_TOO_LONG", f"longer than {MAX_TOKEN_LENGTH} characters"))
            elif loaded is None:
                unknown.append(index)
            elif detokenizing and not loaded.profile.reversible:
                problems.append((index, "field", "FIELD_NOT_REVERSIBLE", "a masking field has no tokens"))
        return problems, unknown

    # --- DeleteTokens and ForgetSubject ---------------------------------------------------------------

    async def delete_tokens(self, tenant: str, refs: Sequence[tuple[str, str]], request_id: str = "") -> int:
        self.check_batch_size(len(refs))
        fields = await self.load_fields(tenant, [f for f, _ in refs])
        problems, unknown = self._ref_problems(refs, fields, detokenizing=False)
        self.raise_item_errors(problems, unknown, "unknown field")
        fingerprint = hashlib.sha256(repr((tenant, list(refs))).encode()).digest()
        if request_id:
            replayed = await asyncio.to_thread(self._replay, tenant, "DeleteTokens", request_id, fingerprint)
            if replayed is not None:
                return int.from_bytes(replayed, "big")
        by_field: dict[str, set[str]] = {}
        for name, token in refs:
            by_field.setdefault(name, set()).add(token)
        ids = {name: await self._entry_ids(fields[name], sorted(tokens)) for name, tokens in by_field.items()}
        await self.audit.append("DeleteTokens", resource=f"tenants/{tenant}",
                                details={"fields": ",".join(sorted(by_field)), "count": str(len(refs))})

        def write() -> int:
            with self.store.db.transaction() as cur:
                deleted = sum(self.store.delete_tokens(cur, tenant, name, sorted(tokens),
                                                       sorted(ids[name].values()))
                              for name, tokens in by_field.items())
                if request_id:
                    self.store.remember(cur, tenant, "DeleteTokens", request_id, fingerprint,
                                        deleted.to_bytes(8, "big"))
                return deleted

        return await asyncio.to_thread(write)

    async def forget_subject(self, tenant: str, subject_id: str, request_id: str = "") -> tuple[dict[str, int], bool]:
        """Entries deleted per field, and whether a subject key was destroyed."""
        if not subject_id:
            raise InvalidArgument.single("subject_id", "required")
        if len(subject_id.encode()) > MAX_SUBJECT_BYTES:
            raise InvalidArgument.single("subject_id", f"at most {MAX_SUBJECT_BYTES} bytes")
        fields = [LoadedField(s) for s in await asyncio.to_thread(self.store.tenant_fields, tenant)]
        hashes = {f.stored.field: (await self.keyring.field_keys(f.stored)).subject_hash(subject_id)
                  for f in fields if f.profile.reversible}
        fingerprint = hashlib.sha256(b"".join(hashes[k] for k in sorted(hashes))).digest()
        if request_id:
            replayed = await asyncio.to_thread(self._replay, tenant, "ForgetSubject", request_id, fingerprint)
            if replayed is not None:
                return _decode_counts(replayed)
        await self.audit.append("ForgetSubject", resource=f"tenants/{tenant}",
                                details={"fields": ",".join(sorted(hashes))})

        def write() -> tuple[dict[str, int], bool]:
            counts: dict[str, int] = {}
            destroyed = False
            with self.store.db.transaction() as cur:
                for name, subject_hash in hashes.items():
                    entries, keys = self.store.forget_subject(cur, tenant, name, subject_hash)
                    if entries:
                        counts[name] = entries
                    destroyed = destroyed or keys > 0
                if request_id:
                    self.store.remember(cur, tenant, "ForgetSubject", request_id, fingerprint,
                                        _encode_counts(counts, destroyed))
            return counts, destroyed

        counts, destroyed = await asyncio.to_thread(write)
        for name in hashes:
            self.keyring.forget_encryption_key(tenant, name, hashes[name])
        await self.audit.append("SubjectForgotten", resource=f"tenants/{tenant}",
                                details={"count": str(sum(counts.values())), "subject_key_destroyed": str(destroyed),
                                         "fields": ",".join(f"{k}={v}" for k, v in sorted(counts.items()))})
        return counts, destroyed


@dataclass
class _FieldPlan:
    """One field's part of a Tokenize batch, prepared outside the write transaction."""

    name: str
    field: LoadedField
    keys: FieldKeys
    indices: list[int]
    tokens: list[str] = None  # type: ignore[assignment]
    value_hashes: list[bytes] = None  # type: ignore[assignment]
    subject_hashes: list[bytes] = None  # type: ignore[assignment]
    entry_ids: list[str] = None  # type: ignore[assignment]
    key_ids: list[str] = None  # type: ignore[assignment]
    nonces: list[bytes] = None  # type: ignore[assignment]
    ciphertexts: list[bytes] = None  # type: ignore[assignment]
    values: list[str] | None = None

    def values_of(self, position: int) -> str:
        assert self.values is not None
        return self.values[position]

    def entry(self, position: int, token: str, value_hash: bytes | None, expire_us: int | None) -> NewEntry:
        return NewEntry(self.entry_ids[position], self.name, token, value_hash, self.subject_hashes[position],
                        self.key_ids[position], self.nonces[position], self.ciphertexts[position], expire_us)


def _encode_tokens(results: Sequence[tuple[str, int | None]]) -> bytes:
    return pb.TokenizeResponse(results=[
        pb.TokenizedValue(token=t, expire_time=None if e is None else _ts(e)) for t, e in results
    ]).SerializeToString()


def _decode_tokens(raw: bytes) -> list[tuple[str, int | None]]:
    reply = pb.TokenizeResponse.FromString(raw)
    return [(r.token, r.expire_time.ToMicroseconds() if r.HasField("expire_time") else None) for r in reply.results]


def _encode_counts(counts: dict[str, int], destroyed: bool) -> bytes:
    return pb.ForgetSubjectResponse(deleted_by_field=counts, subject_key_destroyed=destroyed).SerializeToString()


def _decode_counts(raw: bytes) -> tuple[dict[str, int], bool]:
    reply = pb.ForgetSubjectResponse.FromString(raw)
    return dict(reply.deleted_by_field), reply.subject_key_destroyed


def _ts(micros: int) -> Timestamp:
    return Timestamp(seconds=micros // 1_000_000, nanos=(micros % 1_000_000) * 1000)
