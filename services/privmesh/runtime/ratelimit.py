"""Per-principal rate limits: a token bucket per (caller identity, method group), from the configuration.

An authenticated and authorized caller can still flood a verifier or a broker; a bucket per identity keeps
one noisy caller from starving the others. A call over its bucket is refused with RESOURCE_EXHAUSTED and a
RetryInfo saying when a token will be there. Methods in no group, and health checks, are not limited.
Hand-written: a bucket is three lines of arithmetic; what matters is the bounded map keyed by identity and
group, which the limiter libraries (one limiter object per resource) leave to the caller anyway.
"""

from __future__ import annotations

import fnmatch
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2

from privmesh.runtime.config import RateLimitGroup
from privmesh.runtime.errors import ResourceExhausted

UNLIMITED_PREFIXES = ("grpc.health.v1.Health/",)  # probes must never be refused for someone else's traffic


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets keyed by (principal, group); at most `max_buckets` kept (least recently used dropped)."""

    def __init__(self, groups: Sequence[RateLimitGroup], max_buckets: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._groups = tuple(groups)
        self._max_buckets = max_buckets
        self._clock = clock
        self._buckets: OrderedDict[tuple[str, str], _Bucket] = OrderedDict()
        self._group_of: dict[str, RateLimitGroup | None] = {}

    def group(self, method: str) -> RateLimitGroup | None:
        """The first group whose method patterns match `method` (cached), or None."""
        if method not in self._group_of:
            found = None
            if not method.startswith(UNLIMITED_PREFIXES):
                found = next((g for g in self._groups if any(fnmatch.fnmatchcase(method, p) for p in g.methods)),
                             None)
            self._group_of[method] = found
        return self._group_of[method]

    def acquire(self, principal: str, method: str) -> None:
        """Takes one token from the caller's bucket for `method`; raises ResourceExhausted when there is none."""
        group = self.group(method)
        if group is None:
            return
        now, key = self._clock(), (principal, group.name)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(group.burst), now)
            if len(self._buckets) > self._max_buckets:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(float(group.burst), bucket.tokens + (now - bucket.updated) * group.per_second)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return
        wait = Duration()
        wait.FromTimedelta(timedelta(seconds=(1.0 - bucket.tokens) / group.per_second))
        raise ResourceExhausted(
            "RATE_LIMITED", f"too many calls to the {group.name} methods; retry later",
            {"group": group.name},
            extra_details=[error_details_pb2.RetryInfo(retry_delay=wait),
                           error_details_pb2.QuotaFailure(violations=[error_details_pb2.QuotaFailure.Violation(
                               subject=principal, description=f"{group.per_second:g} calls/s to {group.name}, "
                                                              f"bursts of {group.burst}")])])
