"""AIP-158 pagination helpers: clamped page sizes and opaque page tokens that are validated, not trusted."""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

from privmesh.runtime.errors import InvalidArgument

T = TypeVar("T")
P = TypeVar("P", str, int)


def page_size(requested: int, default: int, maximum: int, field: str = "page_size") -> int:
    if requested < 0:
        raise InvalidArgument.single(field, "must not be negative")
    return default if requested == 0 else min(requested, maximum)


class ListRequest(Protocol):
    page_size: int
    page_token: str


def name_page(request: ListRequest, default: int = 50, maximum: int = 500) -> tuple[int, str]:
    """A List request's page size and the name after which its page starts ("" for the first page)."""
    return page_size(request.page_size, default, maximum), str(decode_token(request.page_token, str) or "")


def encode_token(after: str | int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": after}).encode()).decode()


def decode_token(token: str, kind: type[str] | type[int], field: str = "page_token") -> str | int | None:
    """The position after which the next page starts, or None for the first page."""
    if not token:
        return None
    try:
        if len(token) > 1024:
            raise ValueError
        after: object = json.loads(base64.urlsafe_b64decode(token.encode()))["after"]
        if not isinstance(after, (str, int)) or not isinstance(after, kind) or isinstance(after, bool):
            raise ValueError
        return after
    except (ValueError, KeyError, TypeError):
        raise InvalidArgument.single(field, "not a page token issued by this server", "INVALID_PAGE_TOKEN") from None


def paginate(fetched: Sequence[T], limit: int, position: Callable[[T], str | int]) -> tuple[list[T], str]:
    """Splits what a store returned for `limit + 1` rows into this page and the next page's token."""
    page = list(fetched[:limit])
    return page, encode_token(position(page[-1])) if len(fetched) > limit else ""


async def visible_page(fetch: Callable[[P | None, int], Awaitable[Sequence[T]]], start: P | None, limit: int,
                       position: Callable[[T], P], visible: Callable[[Sequence[T]], list[T]],
                       max_batches: int = 20) -> tuple[list[T], str]:
    """A page of `limit` items the caller may see, filtered before paging: batches are fetched after `start`
    until the page is full or the store is exhausted. A scan that hits `max_batches` returns a shorter page whose
    token continues after the last item scanned (AIP-158 allows short pages), so no call scans without bound."""
    found: list[T] = []
    after = start
    for _ in range(max_batches):
        fetched = await fetch(after, limit + 1)
        found.extend(visible(fetched))
        if len(found) > limit:
            page = found[:limit]
            return page, encode_token(position(page[-1]))
        if len(fetched) <= limit:
            return found, ""
        after = position(fetched[-1])
    return found, encode_token(after) if after is not None else ""
