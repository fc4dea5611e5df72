"""Irreversible masks for display: the masking profile, and the MASKED view of Detokenize.

A mask never equals the value: at least half of the maskable characters (rounded up, so at least one) are always
hidden, whatever keep_first and keep_last ask for; the kept characters shrink to fit (the last ones first). A
value with no letter or digit is masked whole, and one the mask cannot change (made of the mask character only)
is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from privmesh.tokenvault.v1 import tokenvault_pb2 as pb

MIN_HIDDEN_SHARE = 0.5


class Unmaskable(ValueError):
    """The mask would equal the value."""


def kept_count(maskable: int, keep_first: int, keep_last: int) -> tuple[int, int]:
    """How many leading and trailing characters stay visible once the minimum hidden share is taken out."""
    budget = max(maskable - max(1, math.ceil(maskable * MIN_HIDDEN_SHARE)), 0)
    last = min(keep_last, budget)
    return min(keep_first, budget - last), last


@dataclass(frozen=True)
class Mask:
    keep_first: int = 0
    keep_last: int = 4
    character: str = "*"
    preserve_separators: bool = True
    keep_email_domain: bool = False

    def apply(self, value: str) -> str:
        suffix = ""
        if self.keep_email_domain and "@" in value:
            at = value.rindex("@")
            value, suffix = value[:at], value[at:]
        maskable = [i for i, c in enumerate(value) if c.isalnum() or not self.preserve_separators]
        first, last = kept_count(len(maskable), self.keep_first, self.keep_last)
        if not maskable:
            maskable, first, last = list(range(len(value))), 0, 0
        hidden = set(maskable[first:len(maskable) - last])
        masked = "".join(self.character if i in hidden else c for i, c in enumerate(value))
        if masked == value:
            raise Unmaskable("the mask would equal the value")
        return masked + suffix


DEFAULT_DETOKENIZE_MASK = Mask()


def mask_from_proto(msg: pb.MaskingProfile) -> Mask:
    return Mask(msg.keep_first, msg.keep_last, msg.mask_character or "*", msg.preserve_separators,
                msg.keep_email_domain)
