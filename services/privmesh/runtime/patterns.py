"""Resource patterns of the authorization policy, matched by path segment.

    datasets/patients                    that dataset only
    tenants/acme/fields/*                any field of tenant acme ("*" stays inside one segment)
    tenants/acme/fields/ssn-*            "*" also matches part of a segment, never a "/" or a ":"
    federations/f1/**                    the federation and everything under it ("**": zero or more segments)
    federations/*/runs/*/model:decrypted a stronger view, granted only by a pattern that names it

A resource is "path[:view]". A pattern's view part is literal: no wildcard, and no pattern without it (the
default "**" included) matches a resource with a view. Written by hand: fnmatch's "*" crosses "/" and ":".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SUBTREE = "**"
_SEGMENT = re.compile(r"^[^/:]*$")
_VIEW = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


class PatternError(ValueError):
    """A resource pattern outside the grammar."""


def split_view(resource: str) -> tuple[str, str]:
    """("path", "view") of "path:view"; the view is "" when there is none."""
    path, _, view = resource.partition(":")
    return path, view


def _segment_regex(segment: str) -> re.Pattern[str]:
    return re.compile("[^/:]*".join(re.escape(part) for part in segment.split("*")) + r"\Z")


@dataclass(frozen=True)
class ResourcePattern:
    """One compiled pattern; `matches` is by segment, and the view must be equal."""

    text: str
    segments: tuple[re.Pattern[str] | None, ...]  # None: "**"
    view: str

    @classmethod
    def parse(cls, text: str) -> ResourcePattern:
        if not text or len(text) > 512:
            raise PatternError(f"{text!r}: a resource pattern is 1..512 characters")
        if text.count(":") > 1:
            raise PatternError(f"{text!r}: at most one ':' (before the view)")
        path, view = split_view(text)
        if ":" in text and not _VIEW.match(view):
            raise PatternError(f"{text!r}: the view after ':' is a literal name (lower-case letters, digits, '-')")
        segments: list[re.Pattern[str] | None] = []
        for segment in path.split("/"):
            if segment == SUBTREE:
                segments.append(None)
            elif SUBTREE in segment or not _SEGMENT.match(segment):
                raise PatternError(f"{text!r}: '**' must be a whole segment")
            else:
                segments.append(_segment_regex(segment))
        return cls(text, tuple(segments), view)

    def matches(self, resource: str) -> bool:
        path, view = split_view(resource)
        if view != self.view:
            return False
        return _match(self.segments, tuple(path.split("/")))


def _match(patterns: tuple[re.Pattern[str] | None, ...], segments: tuple[str, ...]) -> bool:
    """Whether the segment patterns cover the segments; "**" (None) takes zero or more segments."""
    # reachable[j]: the patterns so far can consume exactly the first j segments.
    reachable = [True] + [False] * len(segments)
    for pattern in patterns:
        if pattern is None:
            for j in range(1, len(segments) + 1):
                reachable[j] = reachable[j] or reachable[j - 1]
        else:
            reachable = [False] + [reachable[j] and bool(pattern.match(segments[j]))
                                   for j in range(len(segments))]
    return reachable[-1]
