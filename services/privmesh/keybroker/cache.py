"""Recently read key records and policies, so the hot path (every data-key call) needs no database round
trip. Entries this process changes are dropped at once; changes made by other replicas (PostgreSQL
deployments) are seen within `ttl` seconds. The key policy is still evaluated on every call."""

from __future__ import annotations

import time
from typing import Any

MAX_ENTRIES = 10_000


class RecordCache:
    def __init__(self, ttl: float = 1.0) -> None:
        self._ttl = ttl
        self._entries: dict[tuple[str, str], tuple[float, str, Any]] = {}

    def get(self, kind: str, ident: str) -> Any | None:
        entry = self._entries.get((kind, ident))
        if entry is None or time.monotonic() - entry[0] > self._ttl:
            return None
        return entry[2]

    def put(self, kind: str, ident: str, key_id: str, value: Any) -> None:
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        self._entries[(kind, ident)] = (time.monotonic(), key_id, value)

    def drop(self, key_id: str) -> None:
        """Forgets everything about one key (after this process changed it)."""
        self._entries = {k: v for k, v in self._entries.items() if v[1] != key_id}
