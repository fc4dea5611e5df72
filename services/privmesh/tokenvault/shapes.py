"""The shapes a token keeps: which characters of a card number, SSN, phone number or email are replaced,
and how a token is put back together around them. Parsing never raises: a value that does not have the
shape gives None."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from privmesh.tokenvault.ff1 import Alphabet

_SSN = re.compile(r"^(\d{3}-\d{2}-\d{4}|\d{9})$")
_CARD = re.compile(r"^\d(?:[ -]?\d){11,18}$")
_PHONE = re.compile(r"^\+?[0-9][0-9 ().\-]*[0-9]$")
_EMAIL_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.\-]{1,64}$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
                     r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)+$")
# ITU-T E.164 country calling codes of two digits; 1 and 7 are one digit, every other code three.
_TWO_DIGIT_CODES = frozenset({"20", "27", "30", "31", "32", "33", "34", "36", "39", "40", "41", "43", "44", "45",
                              "46", "47", "48", "49", "51", "52", "53", "54", "55", "56", "57", "58", "60", "61",
                              "62", "63", "64", "65", "66", "81", "82", "84", "86", "90", "91", "92", "93", "94",
                              "95", "98"})


@dataclass(frozen=True)
class Shape:
    """A value taken apart: `free` holds the characters to replace, `render` rebuilds a token from new ones."""

    free: str
    render: Callable[[str], str]
    # Card numbers: the token of `render` with its fix digit made to fail the Luhn check on purpose (the
    # token of a value whose free digits FF1 leaves in place; docs/token-vault.md, "Security").
    flagged: Callable[[str], str] | None = None


ShapeParser = Callable[[str], "Shape | None"]


def luhn_digit(digits: str) -> str:
    """The check digit that makes `digits` + it Luhn-valid."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 0:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return str((10 - total % 10) % 10)


def luhn_valid(digits: str) -> bool:
    return len(digits) >= 2 and luhn_digit(digits[:-1]) == digits[-1]


def _splice(value: str, positions: list[int], replacement: str) -> str:
    chars = list(value)
    for position, char in zip(positions, replacement, strict=True):
        chars[position] = char
    return "".join(chars)


def card_number(value: str, keep_first_six: bool, keep_last_four: bool) -> Shape | None:
    """Free digits exclude the kept ones and one "fix" digit, recomputed so that the token is Luhn-valid
    (the check digit, or the last free digit when the last four are kept)."""
    if not _CARD.match(value):
        return None
    digits = [i for i, c in enumerate(value) if c.isdigit()]
    if not luhn_valid("".join(value[i] for i in digits)):
        return None
    kept_head = 6 if keep_first_six else 0
    kept_tail = 4 if keep_last_four else 0
    replaceable = digits[kept_head:len(digits) - kept_tail]
    free_positions, fix = replaceable[:-1], replaceable[-1]
    fix_index = digits.index(fix)

    def render(new: str, luhn_ok: bool = True) -> str:
        token = list(_splice(value, free_positions, new))
        body = [token[i] for i in digits]
        if fix_index == len(digits) - 1:  # the check digit itself
            valid = luhn_digit("".join(body[:-1]))
        else:  # solve for an inner fix digit: try the ten candidates (cheap, and exact for any position)
            valid = next(c for c in "0123456789"
                         if luhn_valid("".join(body[:fix_index]) + c + "".join(body[fix_index + 1:])))
        # Luhn detects every single-digit change: any other digit at the fix position fails the check.
        token[fix] = valid if luhn_ok else str((int(valid) + 1) % 10)
        return "".join(token)

    return Shape("".join(value[i] for i in free_positions), render, lambda new: render(new, luhn_ok=False))


def ssn(value: str, keep_last_four: bool) -> Shape | None:
    if not _SSN.match(value):
        return None
    digits = [i for i, c in enumerate(value) if c.isdigit()]
    free_positions = digits[:5] if keep_last_four else digits
    return Shape("".join(value[i] for i in free_positions), lambda new: _splice(value, free_positions, new))


def phone_number(value: str, keep_country_code: bool, keep_last_digits: int) -> Shape | None:
    if not _PHONE.match(value) or value.count("+") > 1:
        return None
    digits = [i for i, c in enumerate(value) if c.isdigit()]
    if not 7 <= len(digits) <= 15:
        return None
    head = 0
    if keep_country_code and value.startswith("+"):
        leading = "".join(value[i] for i in digits[:2])
        head = 1 if leading[0] in "17" else 2 if leading in _TWO_DIGIT_CODES else 3
    free_positions = digits[head:len(digits) - keep_last_digits]
    return Shape("".join(value[i] for i in free_positions), lambda new: _splice(value, free_positions, new))


def email(value: str, alphabet: Alphabet, keep_domain: bool, replacement_domain: str,
          whole_local_part: bool) -> tuple[Shape, str] | None:
    """The local part's characters in `alphabet` are free (all of it when `whole_local_part`: the token's
    local part is then made anew). Also returns the domain, which FF1 binds into its tweak."""
    local, at, domain = value.rpartition("@")
    if not at or not _EMAIL_LOCAL.match(local) or not _DOMAIN.match(domain):
        return None
    out_domain = domain if keep_domain else replacement_domain
    if whole_local_part:
        return Shape("", lambda new: f"{new}@{out_domain}"), domain
    positions = [i for i, c in enumerate(local) if c in alphabet]
    return Shape("".join(local[i] for i in positions),
                 lambda new: f"{_splice(local, positions, new)}@{out_domain}"), domain


def domain_valid(domain: str) -> bool:
    return bool(_DOMAIN.match(domain))
