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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

import psycopg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf.timestamp_pb2 import Timestamp

from privmesh.runtime.audit.log import AuditLog
from privmesh.runtime.context import current_principal
from privmesh.runtime.db import Cursor
from privmesh.runtime.errors import (
    FieldViolation,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from privmesh.tokenvault.fields import FIELD_RE, LoadedField
from privmesh.tokenvault.keyring import Keyring
from privmesh.tokenvault.masking import Unmaskable
from privmesh.tokenvault.profiles import FieldKeys, Problem, RandomProfile
from privmesh.tokenvault.store import NewEntries, NewEntry, VaultStore, WriteConflict, new_entry_ids, now_us
from privmesh.tokenvault.v1 import tokenvault_pb2 as pb

MAX_TOKEN_LENGTH = 256
MAX_SUBJECT_BYTES = 256
MAX_PURPOSE_LENGTH = 256
WRITE_ATTEMPTS = 4
# Redraws of one colliding shaped token: with a fraction p of its shape's tokens issued, all fail with p^32.
MAX_DRAWS = 32
T = TypeVar("T")


class TokenizeBatch(NamedTuple):
    """A Tokenize request column by column, so that checks, crypto and inserts run over whole columns (map,
    zip, slices: loops in C) rather than a Python loop per item, where most of a batch's CPU used to go."""

    fields: Sequence[str]
    values: Sequence[str]
    subject_ids: Sequence[str]
    ttls_us: Sequence[int | None] | None = None  # None: no item sets a ttl (each field's default applies)


@dataclass(frozen=True)
class Detokenized:
    value: str
    view: int


class _Retry(Exception):
    """A data key was retired by a rotation, or another writer won a race: prepare and write again."""


def aad(tenant: str, field: str, entry_id: str) -> bytes:
    """Binds a ciphertext to its entry, so that rows cannot be swapped."""
    return aad_prefix(tenant, field) + entry_id.encode()


def aad_prefix(tenant: str, field: str) -> bytes:
    """The part of the AAD that every entry of a field shares."""
    return f"{tenant}\x00{field}\x00".encode()


def not_found(reason: str, what: str, indices: Sequence[int]) -> NotFound:
    return NotFound(reason, f"{what} in items {', '.join(map(str, indices))}",
                    {"indices": ",".join(map(str, indices))})


class Vault:
    def __init__(self, store: VaultStore, keyring: Keyring, audit: AuditLog, max_batch_items: int = 1000) -> None:
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

    async def tokenize(self, tenant: str, batch: TokenizeBatch,
                       request_id: str = "") -> tuple[list[str], list[int | None]]:
        """The token and expiry time (µs, None: never) of each item, in item order."""
        count = len(batch.values)
        self.check_batch_size(count)
        fields = await self.load_fields(tenant, batch.fields)
        groups = _by_field(batch.fields)
        unknown = sorted(i for name, indices in groups.items() if name not in fields for i in indices)
        if unknown or not all(self._plainly_valid(fields[name], batch, indices) for name, indices in groups.items()):
            self.raise_item_errors(self._item_problems(fields, batch), unknown, "unknown field")
        now = now_us()
        expiries: list[int | None] = [None] * count
        for name, indices in groups.items():
            _put(expiries, indices, self._expiries(fields[name], batch.ttls_us, indices, now))
        keys = {name: await self.keyring.field_keys(f.stored) for name, f in fields.items()
                if f.profile.reversible}
        for attempt in range(WRITE_ATTEMPTS):
            try:
                return await self._tokenize_once(tenant, batch, groups, fields, keys, list(expiries), request_id)
            except _Retry:
                if attempt == WRITE_ATTEMPTS - 1:
                    raise Internal("WRITE_CONFLICT", "could not settle concurrent writes; retry") from None
                self.keyring.forget_all_encryption_keys()
        raise AssertionError("unreachable")

    @classmethod
    def _plainly_valid(cls, loaded: LoadedField, batch: TokenizeBatch, indices: Sequence[int]) -> bool:
        """Whether no item of this field's part of the batch can have a problem, checked a column at a time.
        False only sends the batch through `_item_problems`, which decides and names each problem."""
        values, subjects = _take(batch.values, indices), _take(batch.subject_ids, indices)
        limit = loaded.max_value_length
        if not all(values) or (max(map(len, values)) * 4 > limit  # UTF-8 needs at most 4 bytes a character
                               and max(len(v.encode()) for v in values) > limit):
            return False
        if not loaded.profile.accepts(values):
            return False
        if any(subjects) and max(len(s.encode()) for s in subjects) > MAX_SUBJECT_BYTES:
            return False
        if loaded.config.require_subject_id and not all(subjects):
            return False
        if not loaded.profile.reversible:
            return True
        if batch.ttls_us is None:
            return cls._ttl_problem(loaded, None) is None
        return not any(cls._ttl_problem(loaded, ttl) for ttl in _take(batch.ttls_us, indices))

    @classmethod
    def _item_problems(cls, fields: dict[str, LoadedField], batch: TokenizeBatch) -> list[tuple[int, str, str, str]]:
        """Every problem of every item of a known field, in item order: (index, field, reason, description)."""
        problems: list[tuple[int, str, str, str]] = []
        ttls = batch.ttls_us
        for index, (name, value, subject) in enumerate(zip(batch.fields, batch.values, batch.subject_ids,
                                                           strict=True)):
            loaded = fields.get(name)
            if loaded is None:
                continue
            problem = cls._item_problem(loaded, value, subject)
            if problem is not None:
                problems.append((index, *problem))
            if loaded.profile.reversible:
                problem = cls._ttl_problem(loaded, None if ttls is None else ttls[index])
                if problem is not None:
                    problems.append((index, *problem))
        return problems

    @staticmethod
    def _item_problem(loaded: LoadedField, value: str, subject_id: str) -> tuple[str, str, str] | None:
        if not value:
            return "value", "VALUE_EMPTY", "must not be empty"
        if len(value.encode()) > loaded.max_value_length:
            return "value", "VALUE_TOO_LONG", f"longer than {loaded.max_value_length} bytes"
        try:
            loaded.profile.check(value)
        except Problem as problem:
            return "value", problem.reason, problem.description
        if len(subject_id.encode()) > MAX_SUBJECT_BYTES:
            return "subject_id", "VALUE_TOO_LONG", f"longer than {MAX_SUBJECT_BYTES} bytes"
        if loaded.config.require_subject_id and not subject_id:
            return "subject_id", "SUBJECT_ID_REQUIRED", "the field requires a subject_id"
        return None

    @staticmethod
    def _ttl_problem(loaded: LoadedField, ttl: int | None) -> tuple[str, str, str] | None:
        """What is wrong with an item's ttl (None: the field's default), for a reversible field."""
        if ttl is not None and ttl <= 0:
            return "ttl", "TTL_INVALID", "must be positive"
        ttl = ttl if ttl is not None else loaded.default_ttl_us or None
        if ttl is not None and loaded.max_ttl_us and ttl > loaded.max_ttl_us:
            return "ttl", "TTL_TOO_LONG", "exceeds the field's max_ttl"
        return None

    @staticmethod
    def _expiries(loaded: LoadedField, ttls: Sequence[int | None] | None, indices: Sequence[int],
                  now: int) -> list[int | None]:
        """Expiry time (µs) of each of the field's items' tokens, or None when it does not expire."""
        default = loaded.default_ttl_us or None
        if not loaded.profile.reversible or (ttls is None and default is None):
            return [None] * len(indices)
        if ttls is None:
            return [None if default is None else now + default] * len(indices)
        return [now + ttl if ttl is not None else None if default is None else now + default
                for ttl in _take(ttls, indices)]

    @staticmethod
    def _fingerprint(batch: TokenizeBatch, keys: dict[str, FieldKeys], fields: dict[str, LoadedField]) -> bytes:
        """Identifies a request without a plaintext-derived unkeyed hash: values enter through keyed hashes
        (masking fields, which have no keys, through their masks)."""
        digest = hashlib.sha256()
        ttls = batch.ttls_us or [None] * len(batch.values)
        for name, value, subject_id, ttl in zip(batch.fields, batch.values, batch.subject_ids, ttls, strict=True):
            k = keys.get(name)
            hashed = k.value_hash(value) if k else fields[name].profile.draw(value).encode()
            subject = k.subject_hash(subject_id) if k else b""
            digest.update(f"{name}\x00{ttl}\x00".encode() + hashed + subject)
        return digest.digest()

    async def _tokenize_once(self, tenant: str, batch: TokenizeBatch, groups: Mapping[str, Sequence[int]],
                             fields: dict[str, LoadedField], keys: dict[str, FieldKeys], expiries: list[int | None],
                             request_id: str) -> tuple[list[str], list[int | None]]:
        fingerprint = self._fingerprint(batch, keys, fields) if request_id else b""
        if request_id:
            replayed = await asyncio.to_thread(self._replay, tenant, "Tokenize", request_id, fingerprint)
            if replayed is not None:
                return _decode_tokens(replayed)
        tokens = [""] * len(batch.values)
        plans: list[_FieldPlan] = []
        for name, indices in groups.items():
            profile = fields[name].profile
            values = _take(batch.values, indices)
            if profile.reversible:
                plans.append(await self._plan(tenant, name, fields[name], keys[name], indices, values,
                                              _take(batch.subject_ids, indices)))
            else:
                _put(tokens, indices, profile.draw_many(values))
        try:
            return await asyncio.to_thread(self._write, tenant, plans, tokens, expiries, request_id, fingerprint)
        except (sqlite3.IntegrityError, psycopg.errors.UniqueViolation, WriteConflict):
            raise _Retry from None

    async def _plan(self, tenant: str, name: str, loaded: LoadedField, keys: FieldKeys, indices: Sequence[int],
                    values: Sequence[str], subject_ids: Sequence[str]) -> _FieldPlan:
        """A field's entries, prepared and encrypted outside the write transaction."""
        profile = loaded.profile
        entry_ids = new_entry_ids(len(values))
        if isinstance(profile, RandomProfile):
            tokens = profile.tokens_for(entry_ids, keys)
        elif profile.derived:
            tokens = profile.derive(values, keys)
        else:
            tokens = profile.draw_many(values)
        value_hashes = [keys.value_hash(v) for v in values] if profile.deterministic else []
        subject_hashes = ([keys.subject_hash(s) if s else b"" for s in subject_ids] if any(subject_ids)
                          else [b""] * len(values))
        key_ids, nonces, ciphertexts = await self._encrypt(tenant, name, loaded, entry_ids, values, subject_hashes)
        return _FieldPlan(name, loaded, indices, values, entry_ids, tokens, value_hashes, subject_hashes, key_ids,
                          nonces, ciphertexts)

    async def _encrypt(self, tenant: str, name: str, loaded: LoadedField, entry_ids: Sequence[str],
                       values: Sequence[str], subject_hashes: Sequence[bytes]) -> tuple[list[str], list[bytes],
                                                                                        list[bytes]]:
        """(data key id, nonce, ciphertext) lists: AES-256-GCM per value under a fresh random nonce, bound to
        its entry by the AAD; the Python loop per value is `map` over AESGCM.encrypt."""
        count = len(values)
        groups: dict[bytes | None, Sequence[int]] = {None: range(count)}
        if loaded.config.subject_key_shredding and any(subject_hashes):  # one data key per subject
            by_subject: dict[bytes | None, list[int]] = {}
            for position, hashed in enumerate(subject_hashes):
                by_subject.setdefault(hashed or None, []).append(position)
            groups = dict(by_subject)
        pool = secrets.token_bytes(12 * count)
        nonces = [pool[n:n + 12] for n in range(0, 12 * count, 12)]
        prefix = aad_prefix(tenant, name)
        aads = [prefix + entry_id for entry_id in map(str.encode, entry_ids)]
        raws = list(map(str.encode, values))
        key_ids: list[str] = [""] * count
        ciphertexts: list[bytes] = [b""] * count
        for subject_hash, positions in groups.items():
            part_raws, part_nonces, part_aads = _take(raws, positions), _take(nonces, positions), _take(aads, positions)
            runs = await self.keyring.encryption_keys(tenant, name, loaded.config.key, subject_hash,
                                                      list(map(len, part_raws)))
            part_ids: list[str] = []
            part_ciphertexts: list[bytes] = []
            start = 0
            for key_id, key, size in runs:
                end = start + size
                part_ciphertexts += map(AESGCM(key).encrypt, part_nonces[start:end], part_raws[start:end],
                                        part_aads[start:end])
                part_ids += [key_id] * size
                start = end
            _put(key_ids, positions, part_ids)
            _put(ciphertexts, positions, part_ciphertexts)
        return key_ids, nonces, ciphertexts

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
               request_id: str, fingerprint: bytes) -> tuple[list[str], list[int | None]]:
        now = now_us()
        with self.store.db.transaction() as cur:
            if request_id:
                replayed = self._replay_in(cur, tenant, "Tokenize", request_id, fingerprint)
                if replayed is not None:
                    return _decode_tokens(replayed)
            if self.store.retired(cur, sorted(set().union(*(plan.key_ids for plan in plans)))):
                raise _Retry
            for plan in plans:  # a subject forgotten meanwhile: its new data keys' KEK is being shredded
                if plan.field.config.subject_key_shredding and any(plan.subject_hashes) and \
                        self.store.stale_subject_keys(cur, tenant, plan.name, sorted(set(plan.key_ids))):
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
            if request_id:
                self.store.remember(cur, tenant, "Tokenize", request_id, fingerprint,
                                    _encode_tokens(tokens, expiries))
        return tokens, expiries

    def _settle(self, cur: Cursor, tenant: str, plan: _FieldPlan, tokens: list[str], expiries: list[int | None],
                now: int) -> tuple[NewEntries, list[tuple[int | None, str]]]:
        """Decides each item's token and whether it needs a new entry, against the stored entries."""
        profile = plan.field.profile
        items = range(len(plan.indices))
        new_entries: list[NewEntry] = []
        extend: list[tuple[int | None, str]] = []
        if isinstance(profile, RandomProfile):  # the token names the entry: nothing to settle, nothing to store
            _put(tokens, plan.indices, plan.tokens)
            count = len(plan.entry_ids)
            return NewEntries(plan.entry_ids, [plan.name] * count, [""] * count, [None] * count, plan.subject_hashes,
                              plan.key_ids, plan.nonces, plan.ciphertexts, _take(expiries, plan.indices)), extend
        if not profile.deterministic:
            chosen = list(plan.tokens)
            taken = self.store.tokens_taken(cur, tenant, plan.name, chosen)  # short shaped tokens can collide
            for position in items:
                if chosen[position] in taken:
                    chosen[position] = self._redraw(cur, tenant, plan, position, taken)
                taken.add(chosen[position])
            for position in items:
                index = plan.indices[position]
                tokens[index] = chosen[position]
                new_entries.append(plan.entry(position, chosen[position], None, expiries[index]))
            return NewEntries.of(new_entries), extend
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
                    if token in taken:
                        token = self._redraw(cur, tenant, plan, position, taken)
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
            asked = expiries[index]
            later = None if stored_expiry is None or asked is None else max(stored_expiry, asked)
            expiries[index] = later
            if later != stored_expiry:
                extend.append((later, entry_id))
                entry_of[(value_hash, subject)] = (entry_id, token, later)
        return NewEntries.of(new_entries), extend

    def _redraw(self, cur: Cursor, tenant: str, plan: _FieldPlan, position: int, taken: set[str]) -> str:
        """A drawn token for the item that is neither stored nor `taken`, found in bounded time: from the whole
        list of a small token space (TOKEN_SPACE_EXHAUSTED when none is left), else in at most MAX_DRAWS draws.
        An unbounded redraw would never return once a shape with few free digits has run out."""
        profile, value = plan.field.profile, plan.values[position]
        every = profile.alternatives(value)
        if every is not None:
            stored = self.store.tokens_taken(cur, tenant, plan.name, every)
            free = [token for token in every if token not in taken and token not in stored]
            if free:
                return secrets.choice(free)
        else:
            for _ in range(MAX_DRAWS):
                token = profile.draw(value)
                if token not in taken and not self.store.tokens_taken(cur, tenant, plan.name, [token]):
                    return token
        raise ResourceExhausted("TOKEN_SPACE_EXHAUSTED", f"item {plan.indices[position]}: no unused token of its "
                                "shape was found; nothing was written")

    # --- Detokenize -----------------------------------------------------------------------------------

    async def detokenize(self, tenant: str, refs: Sequence[tuple[str, str]], view: int, purpose: str,
                         plaintext_granted: Callable[[str], bool], request_id: str = "") -> list[Detokenized]:
        """`plaintext_granted(field)`: whether the service policy grants the caller the field's plaintext view; the
        field's own detokenize policy must grant it too, else the value is masked (or refused when asked for)."""
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
            if allowed == pb.DETOKENIZE_VIEW_VALUE and not plaintext_granted(name):
                allowed = pb.DETOKENIZE_VIEW_MASKED
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
            tokens = sorted({refs[i][1] for i in indices})
            ids = await self._entry_ids(fields[name], tokens)
            entries = await asyncio.to_thread(self.store.find_tokens, tenant, name, tokens, now, ids)
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
                try:
                    value = fields[entry.field].detokenize_mask.apply(value)
                except Unmaskable:
                    raise PermissionDenied("VALUE_UNMASKABLE", f"the mask of item {index} would equal its value",
                                           {"items": str(index)}) from None
            results.append(Detokenized(value, field_view))
        # Every disclosure is audited, a repeat of an earlier request too (marked as such): it shows the values again.
        await self.audit.append("Detokenize", resource=resource, details={**details, "replay": "true"} if replayed
                                else details)
        if request_id and not replayed:
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

    async def forget_subject(self, tenant: str, subject_id: str, request_id: str = "") -> Erasure:
        """What the erasure did: entries deleted per field, subject keys scheduled for destruction (and when)."""
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
                return _decode_erasure(replayed)
        await self.audit.append("ForgetSubject", resource=f"tenants/{tenant}",
                                details={"fields": ",".join(sorted(hashes))})
        shredding = {f.stored.field for f in fields if f.config.subject_key_shredding and f.stored.field in hashes}

        def keks(cur: Cursor | None = None) -> dict[str, str]:
            found = {name: self.store.subject_kek(tenant, name, hashes[name], cur) for name in sorted(shredding)}
            return {name: kek for name, kek in found.items() if kek is not None}

        def write(shredded: dict[str, str], deletions: dict[str, int]) -> Erasure | None:
            """Deletes the subject's rows; None (nothing deleted) if a KEK appeared since it was shredded."""
            counts: dict[str, int] = {}
            key_ids: dict[str, list[str]] = {}
            with self.store.db.transaction() as cur:
                if keks(cur) != shredded:
                    return None
                for name, subject_hash in hashes.items():
                    entries, key_ids[name] = self.store.forget_subject(cur, tenant, name, subject_hash)
                    if entries:
                        counts[name] = entries
                # Destroyed only when data keys went and no subject key is still waiting for its destruction.
                pending = any(when > now_us() for when in deletions.values())
                erasure = Erasure(counts, (bool(shredded) or any(key_ids.values())) and not pending, deletions,
                                  key_ids)
                if request_id:
                    self.store.remember(cur, tenant, "ForgetSubject", request_id, fingerprint,
                                        _encode_erasure(erasure))
            return erasure

        for _ in range(WRITE_ATTEMPTS):
            # The KEKs are shredded first: if key-broker cannot, nothing is deleted (the call is retried whole).
            shredded = await asyncio.to_thread(keks)
            deletions = {}
            for name, kek in shredded.items():
                when = await self.keyring.shred(kek)
                if when is not None:
                    deletions[name] = when
            written = await asyncio.to_thread(write, shredded, deletions)
            if written is not None:
                break
        else:
            raise Internal("WRITE_CONFLICT", "the subject kept being tokenized meanwhile; retry")
        for name in hashes:
            self.keyring.forget_subject(tenant, name, hashes[name], written.data_key_ids.get(name, []))
        await self.audit.append("SubjectForgotten", resource=f"tenants/{tenant}", details={
            "count": str(sum(written.counts.values())), "subject_key_destroyed": str(written.destroyed),
            "subject_keys_shredded": str(len(shredded)),
            "subject_key_deletions": ",".join(f"{k}@{v}" for k, v in sorted(written.deletions.items())),
            "fields": ",".join(f"{k}={v}" for k, v in sorted(written.counts.items()))})
        return written


@dataclass
class _FieldPlan:
    """One field's part of a Tokenize batch, prepared outside the write transaction; lists by position."""

    name: str
    field: LoadedField
    indices: Sequence[int]  # the items' indices in the batch
    values: Sequence[str]
    entry_ids: list[str]
    tokens: list[str]
    value_hashes: list[bytes]  # deterministic profiles only
    subject_hashes: list[bytes]
    key_ids: list[str]
    nonces: list[bytes]
    ciphertexts: list[bytes]

    def entry(self, position: int, token: str, value_hash: bytes | None, expire_us: int | None) -> NewEntry:
        return NewEntry(self.entry_ids[position], self.name, token, value_hash, self.subject_hashes[position],
                        self.key_ids[position], self.nonces[position], self.ciphertexts[position], expire_us)


def _by_field(fields: Sequence[str]) -> Mapping[str, Sequence[int]]:
    """Item indices per field name: one range when all items name one field (the usual batch)."""
    if fields.count(fields[0]) == len(fields):
        return {fields[0]: range(len(fields))}
    groups: dict[str, list[int]] = {}
    for index, name in enumerate(fields):
        groups.setdefault(name, []).append(index)
    return groups


def _take(items: Sequence[T], indices: Sequence[int]) -> Sequence[T]:
    """items[i] for each index (items itself when the indices are all of it)."""
    if isinstance(indices, range) and len(indices) == len(items):
        return items
    return [items[i] for i in indices]


def _put(target: list[T], indices: Sequence[int], values: Sequence[T]) -> None:
    """target[i] = value for each index and value."""
    if isinstance(indices, range) and len(indices) == len(target):
        target[:] = values
        return
    for index, value in zip(indices, values, strict=True):
        target[index] = value


def _encode_tokens(tokens: Sequence[str], expiries: Sequence[int | None]) -> bytes:
    return pb.TokenizeResponse(results=[
        pb.TokenizedValue(token=t, expire_time=None if e is None else _ts(e))
        for t, e in zip(tokens, expiries, strict=True)
    ]).SerializeToString()


def _decode_tokens(raw: bytes) -> tuple[list[str], list[int | None]]:
    reply = pb.TokenizeResponse.FromString(raw)
    return ([r.token for r in reply.results],
            [r.expire_time.ToMicroseconds() if r.HasField("expire_time") else None for r in reply.results])


@dataclass(frozen=True)
class Erasure:
    """What ForgetSubject did: entries deleted per field; whether the subject's keys are gone now; the subject
    keys only scheduled for destruction (field -> deletion time, microseconds)."""

    counts: dict[str, int]
    destroyed: bool
    deletions: dict[str, int]
    data_key_ids: dict[str, list[str]]  # the deleted data keys per field (empty for a replayed answer)


def _encode_erasure(erasure: Erasure) -> bytes:
    return pb.ForgetSubjectResponse(
        deleted_by_field=erasure.counts, subject_key_destroyed=erasure.destroyed,
        subject_key_deletions=[pb.SubjectKeyDeletion(field=name, deletion_time=_ts(when))
                               for name, when in sorted(erasure.deletions.items())]).SerializeToString()


def _decode_erasure(raw: bytes) -> Erasure:
    reply = pb.ForgetSubjectResponse.FromString(raw)
    return Erasure(dict(reply.deleted_by_field), reply.subject_key_destroyed,
                   {d.field: d.deletion_time.ToMicroseconds() for d in reply.subject_key_deletions}, {})


def _ts(micros: int) -> Timestamp:
    return Timestamp(seconds=micros // 1_000_000, nanos=(micros % 1_000_000) * 1000)
