"""Irreversible masks for display: the masking profile, and the MASKED view of Detokenize."""

from __future__ import annotations

from dataclasses import dataclass

from privmesh.tokenvault.v1 import tokenvault_pb2 as pb


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
        visible = set(maskable[:self.keep_first]) | set(maskable[max(len(maskable) - self.keep_last, 0):])
        hidden = set(maskable) - visible
        return "".join(self.character if i in hidden else c for i, c in enumerate(value)) + suffix


DEFAULT_DETOKENIZE_MASK = Mask()


def mask_from_proto(msg: pb.MaskingProfile) -> Mask:
    return Mask(msg.keep_first, msg.keep_last, msg.mask_character or "*", msg.preserve_separators,
                msg.keep_email_domain)
