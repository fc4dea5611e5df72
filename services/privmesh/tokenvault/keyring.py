"""The vault's keys in use: field secrets and data keys obtained from key-broker (through a DataKeySource),
recorded wrapped in the store, and reused from memory only within key-broker's limits; in shredding fields,
the subject KEKs that wrap each subject's data keys, created on first use and shredded by ForgetSubject."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

from privmesh.runtime.errors import FailedPrecondition, ServiceError, Unavailable
from privmesh.tokenvault.keys import DataKeySource, GeneratedKey, KeyCache, KeySourceError, Limits, field_keys
from privmesh.tokenvault.profiles import FieldKeys
from privmesh.tokenvault.store import DataKeyRow, StoredField, VaultStore, new_id

T = TypeVar("T")
log = logging.getLogger("privmesh.tokenvault.keyring")
MAX_KNOWN_KEKS = 100_000  # subject KEK names remembered (not secret: a miss costs one database read)


def context(tenant: str, field: str, purpose: str) -> dict[str, str]:
    """The encryption context every wrap of the vault binds (not secret; audited by key-broker)."""
    return {"service": "token-vault", "tenant": tenant, "field": field, "purpose": purpose}


def key_broker_error(exc: KeySourceError) -> ServiceError:
    if exc.unavailable:
        return Unavailable("KEY_BROKER_UNAVAILABLE", "the key broker could not be reached; nothing was written")
    return FailedPrecondition("KEY_BROKER_REFUSED", f"the key broker refused the field's key: {exc.detail}")


async def call(operation: Callable[[], Awaitable[T]]) -> T:
    try:
        return await operation()
    except KeySourceError as exc:
        raise key_broker_error(exc) from None


class Keyring:
    def __init__(self, source: DataKeySource, store: VaultStore, kek_deletion_waiting_seconds: int = 7 * 86400) -> None:
        self.source = source
        self.store = store
        self.kek_deletion_waiting_seconds = kek_deletion_waiting_seconds
        self._secrets = KeyCache()
        self._encrypting = KeyCache()
        self._decrypting = KeyCache()
        self._limits: dict[tuple[str, str], Limits] = {}  # each field key's caching limits, as last returned
        self._keks: OrderedDict[tuple[str, str, bytes], str] = OrderedDict()

    async def new_field_secret(self, tenant: str, field: str, key: str) -> GeneratedKey:
        return await call(lambda: self.source.generate(key, context(tenant, field, "field-secret")))

    async def field_keys(self, stored: StoredField) -> FieldKeys:
        ident = (stored.tenant, stored.field, stored.secret_wrapped)
        cached = self._secrets.take(ident)
        if cached is not None:
            return cached.meta["keys"]  # type: ignore[return-value]
        unwrapped = await call(lambda: self.source.decrypt(
            stored.secret_wrapped, context(stored.tenant, stored.field, "field-secret"), stored.secret_key))
        keys = field_keys(unwrapped.plaintext)
        self._limits[(stored.tenant, stored.field)] = unwrapped.limits
        self._secrets.put(ident, unwrapped.plaintext, unwrapped.limits, keys=keys)
        return keys

    async def encryption_keys(self, tenant: str, field: str, key: str, subject_hash: bytes | None,
                              sizes: Sequence[int]) -> list[tuple[str, bytes, int]]:
        """Runs of (data key id, plaintext, how many values) covering `sizes` in order: the current data key
        while its limits allow, then new ones generated (and recorded) from key-broker."""
        ident = (tenant, field, subject_hash)
        out: list[tuple[str, bytes, int]] = []
        start = 0
        while start < len(sizes):
            remaining = sizes[start:]
            cached = self._encrypting.take(ident, len(remaining), sum(remaining))
            if cached is not None:
                out.append((str(cached.meta["id"]), cached.plaintext, len(remaining)))
                break
            generated = await self._generate(tenant, field, key, subject_hash)
            row = DataKeyRow(new_id(), tenant, field, subject_hash, generated.key_name, generated.key_version,
                             generated.wrapped)
            await asyncio.to_thread(self.store.insert_data_key, row)
            limits = generated.limits
            count, total = 0, 0
            cap = limits.max_messages if limits.reusable else 1
            while count < min(len(remaining), cap) and (count == 0 or total + remaining[count] <= limits.max_bytes):
                total += remaining[count]
                count += 1
            self._encrypting.put(ident, generated.plaintext, limits, count, total, id=row.id)
            out.append((row.id, generated.plaintext, count))
            start += count
        return out

    async def _generate(self, tenant: str, field: str, key: str, subject_hash: bytes | None) -> GeneratedKey:
        """A new data key under the field's key, or under the subject's KEK when there is a subject (only
        shredding fields encrypt per subject)."""
        if subject_hash is None:
            return await call(lambda: self.source.generate(key, context(tenant, field, "data")))
        ident = (tenant, field, subject_hash)
        remembered = ident in self._keks
        kek = await self.subject_kek(tenant, field, subject_hash)
        try:
            return await self.source.generate(kek, context(tenant, field, "data"))
        except KeySourceError as exc:
            if exc.unavailable or not remembered:
                raise key_broker_error(exc) from None
        # Another process may have shredded the remembered KEK (ForgetSubject): ask the store again.
        self._keks.pop(ident, None)
        kek = await self.subject_kek(tenant, field, subject_hash)
        return await call(lambda: self.source.generate(kek, context(tenant, field, "data")))

    async def subject_kek(self, tenant: str, field: str, subject_hash: bytes) -> str:
        """The subject's KEK in this field, created on first use. Concurrent first uses (any process) end with
        one KEK recorded; a loser schedules the deletion of the key it created (it protects nothing)."""
        ident = (tenant, field, subject_hash)
        name = self._keks.get(ident)
        if name is not None:
            self._keks.move_to_end(ident)
            return name
        name = await asyncio.to_thread(self.store.subject_kek, tenant, field, subject_hash)
        if name is None:
            limits = self._limits.get((tenant, field), Limits())
            created = await call(lambda: self.source.create_subject_key(limits))
            name = await asyncio.to_thread(self.store.record_subject_kek, tenant, field, subject_hash, created)
            if name != created:
                try:
                    await self.source.schedule_deletion(created, self.kek_deletion_waiting_seconds)
                except KeySourceError as exc:
                    log.warning("could not schedule the deletion of an unused subject key: %s", exc.detail)
        self._keks[ident] = name
        if len(self._keks) > MAX_KNOWN_KEKS:
            self._keks.popitem(last=False)
        return name

    async def shred(self, kek: str) -> int | None:
        """Schedules a subject KEK's destruction (UNAVAILABLE / FAILED_PRECONDITION when key-broker cannot);
        returns its deletion time (microseconds), None when it is destroyed already."""
        return await call(lambda: self.source.schedule_deletion(kek, self.kek_deletion_waiting_seconds))

    async def shred_buried(self) -> int:
        """Schedules the deletion of deleted fields' subject KEKs; how many key-broker accepted. Stops at the
        first refusal (key-broker down): maintenance retries the rest later."""
        done = 0
        for kek in await asyncio.to_thread(self.store.buried_keks):
            try:
                await self.shred(kek)
            except ServiceError as exc:
                log.warning("could not schedule a deleted field's subject key for deletion (%s); retrying later",
                            exc.reason)
                break
            await asyncio.to_thread(self.store.unbury_kek, kek)
            done += 1
        return done

    def forget_subject(self, tenant: str, field: str, subject_hash: bytes, data_key_ids: Sequence[str]) -> None:
        """Drops every key of a forgotten subject this process holds: its KEK's name and plaintext data keys."""
        self._encrypting.drop((tenant, field, subject_hash))
        self._keks.pop((tenant, field, subject_hash), None)
        for key_id in data_key_ids:
            self._decrypting.drop(key_id)

    def forget_all_encryption_keys(self) -> None:
        self._encrypting.clear()
        self._keks.clear()

    async def decryption_keys(self, tenant: str, wanted: Mapping[str, tuple[str, str, bytes, int]]) -> dict[str, bytes]:
        """Plaintext data keys by id; `wanted` maps id -> (field, key name, wrapped, values to decrypt)."""
        found: dict[str, bytes] = {}
        missing = []
        for key_id, (_, _, _, uses) in wanted.items():
            cached = self._decrypting.take(key_id, uses)
            if cached is not None:
                found[key_id] = cached.plaintext
            else:
                missing.append(key_id)

        async def unwrap(key_id: str) -> None:
            field, key_name, wrapped, uses = wanted[key_id]
            unwrapped = await call(lambda: self.source.decrypt(wrapped, context(tenant, field, "data"), key_name))
            self._decrypting.put(key_id, unwrapped.plaintext, unwrapped.limits, uses)
            found[key_id] = unwrapped.plaintext

        await asyncio.gather(*(unwrap(k) for k in missing))
        return found
