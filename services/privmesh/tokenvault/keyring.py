"""The vault's keys in use: field secrets and data keys obtained from key-broker (through a DataKeySource),
recorded wrapped in the store, and reused from memory only within key-broker's limits."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

from privmesh.runtime.errors import FailedPrecondition, ServiceError, Unavailable
from privmesh.tokenvault.keys import DataKeySource, GeneratedKey, KeyCache, KeySourceError, field_keys
from privmesh.tokenvault.profiles import FieldKeys
from privmesh.tokenvault.store import DataKeyRow, Store, StoredField, new_id

T = TypeVar("T")


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
    def __init__(self, source: DataKeySource, store: Store) -> None:
        self.source = source
        self.store = store
        self._secrets = KeyCache()
        self._encrypting = KeyCache()
        self._decrypting = KeyCache()
        self._lock = asyncio.Lock()

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
        self._secrets.put(ident, unwrapped.plaintext, unwrapped.limits, keys=keys)
        return keys

    async def encryption_keys(self, tenant: str, field: str, key: str, subject_hash: bytes | None,
                              sizes: Sequence[int]) -> list[tuple[str, bytes]]:
        """(data key id, plaintext) for each of `sizes` values, reusing the current data key while its limits
        allow and generating (and recording) new ones from key-broker otherwise."""
        ident = (tenant, field, subject_hash)
        out: list[tuple[str, bytes]] = []
        start = 0
        while start < len(sizes):
            remaining = sizes[start:]
            cached = self._encrypting.take(ident, len(remaining), sum(remaining))
            if cached is not None:
                out.extend([(str(cached.meta["id"]), cached.plaintext)] * len(remaining))
                break
            generated = await call(lambda: self.source.generate(key, context(tenant, field, "data")))
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
            out.extend([(row.id, generated.plaintext)] * count)
            start += count
        return out

    def forget_encryption_key(self, tenant: str, field: str, subject_hash: bytes | None) -> None:
        self._encrypting.drop((tenant, field, subject_hash))

    def forget_all_encryption_keys(self) -> None:
        self._encrypting.clear()

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
