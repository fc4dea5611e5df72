"""Token profiles: how a field's values become tokens.

A profile is built from the contract's TokenProfile once per field and then works on whole batches:
`check` finds what is wrong with one value (a reason from the contract, never the value), `derive`
computes tokens from values and the field key alone (HMAC, FF1: deterministic without a look-up), `draw`
makes a fresh random token (random profiles, and the RANDOM / DETERMINISTIC shape methods, whose first
draw for a value is then found again through the keyed value hash).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from privmesh.runtime.errors import FieldViolation
from privmesh.tokenvault import shapes
from privmesh.tokenvault.ff1 import FF1, RADIX_10, RADIX_36, RADIX_62, Alphabet, domain_ok, encrypt_strings
from privmesh.tokenvault.masking import Mask, Unmaskable, mask_from_proto
from privmesh.tokenvault.v1 import tokenvault_pb2 as pb

ALPHABETS = {pb.ALPHABET_UNSPECIFIED: RADIX_10, pb.ALPHABET_RADIX_10: RADIX_10, pb.ALPHABET_RADIX_36: RADIX_36,
             pb.ALPHABET_RADIX_62: RADIX_62}
_PREFIX_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
EMAIL_LOCAL_LENGTH = 16
DEFAULT_REPLACEMENT_DOMAIN = "tokenized.invalid"
SMALL_SPACE = 1000  # token spaces this small are listed whole when drawn tokens collide
FIXED_POINT_TWEAK = b"\x00fixed-point"  # appended to a card field's tweak for its FF1 fixed points


class Problem(Exception):
    """What is wrong with one value: an ErrorReason name without prefix, and a description without the value."""

    def __init__(self, reason: str, description: str) -> None:
        super().__init__(description)
        self.reason = reason
        self.description = description


@dataclass(frozen=True)
class FieldKeys:
    """A field's token-derivation keys, derived from its one wrapped secret (never stored in clear)."""

    token_key: bytes  # HMAC-SHA-256 key (deterministic) or AES-256 key (FF1)
    lookup_key: bytes  # keys the value and subject hashes used for look-ups
    locator_keys: bytes  # random tokens: an AES-256 key (first 32 bytes) and a BLAKE2b key (last 32)

    def value_hash(self, value: str) -> bytes:
        return hmac.digest(self.lookup_key, b"value\x00" + value.encode(), "sha256")

    def subject_hash(self, subject_id: str) -> bytes:
        return hmac.digest(self.lookup_key, b"subject\x00" + subject_id.encode(), "sha256")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class Profile:
    reversible = True  # has entries that Detokenize can return
    derived = False  # tokens come from `derive` (value + key); otherwise from `draw`
    deterministic = False  # the same value keeps its token (derived, or found again by value hash)
    never_equal_input = False  # a token never equals its value (card numbers)

    def check(self, value: str) -> None:
        """Raises Problem when this profile cannot tokenize `value`."""

    def accepts(self, values: Sequence[str]) -> bool:
        """Whether `check` passes for every value (without a loop where `check` checks nothing)."""
        if type(self).check is Profile.check:
            return True
        try:
            for value in values:
                self.check(value)
        except Problem:
            return False
        return True

    def derive(self, values: Sequence[str], keys: FieldKeys) -> list[str]:
        """Tokens computed from values and the field's keys: what every `derived` profile provides."""
        raise NotImplementedError

    def draw(self, value: str) -> str:
        """A fresh token for `value`: what every other profile provides, except RandomProfile, whose tokens
        name their entry (`tokens_for`)."""
        raise NotImplementedError

    def draw_many(self, values: Sequence[str]) -> list[str]:
        return [self.draw(v) for v in values]

    def alternatives(self, value: str) -> list[str] | None:
        """Every token `draw` can give for `value` when there are at most SMALL_SPACE (None otherwise), so
        that a collision in a small space is settled by one look-up instead of by redrawing."""
        return None


class RandomProfile(Profile):
    """Opaque tokens that name their entry, so that no index of random tokens is written (a random page per
    entry made inserts ~1.5x slower): token = prefix + base64url(AES-256(locator key, entry id)), followed, for
    lengths over 16 bytes, by a keyed BLAKE2b tag of the id. Entry ids are unique 16-byte values with 72
    random bits, and AES on one block is a pseudorandom permutation keyed by the field's secret: tokens are
    distinct, look random, are not derived from the value, and cannot be made without the key — a guessed or
    altered token decrypts to an id that names no entry (NOT_FOUND). Entries stored before migration 4 keep
    their drawn token, found through the token index."""

    def __init__(self, length: int, prefix: str) -> None:
        self.length, self.prefix = length, prefix
        self._body_length = len(_b64(bytes(length)))

    @staticmethod
    def _block_cipher(keys: FieldKeys) -> Cipher[modes.ECB]:
        return Cipher(algorithms.AES(keys.locator_keys[:32]), modes.ECB())  # noqa: S305 - one block each: a PRP

    def _tag(self, keys: FieldKeys, entry_id: bytes) -> bytes:
        return hashlib.blake2b(entry_id, digest_size=self.length - 16, key=keys.locator_keys[32:]).digest()

    def tokens_for(self, entry_ids: Sequence[str], keys: FieldKeys) -> list[str]:
        """The token of each entry id (32 hex digits), with one AES call and one base64 call per batch."""
        ids = bytes.fromhex("".join(entry_ids))
        blocks = self._block_cipher(keys).encryptor().update(ids)
        # Each token's bytes go into a run of whole base64 groups, the rest of the run zero: the run then
        # spells the token's body exactly as _b64 would spell it alone, followed by 'A's.
        width = self.length + -self.length % 3
        runs = bytearray(width * len(entry_ids))
        for column in range(16):
            runs[column::width] = blocks[column::16]
        if self.length > 16:
            size = self.length - 16
            tags = b"".join(self._tag(keys, ids[n:n + 16]) for n in range(0, len(ids), 16))
            for column in range(size):
                runs[16 + column::width] = tags[column::size]
        spelled = base64.urlsafe_b64encode(runs).decode()
        step, body, prefix = width // 3 * 4, self._body_length, self.prefix
        return [prefix + spelled[n:n + body] for n in range(0, len(spelled), step)]

    def entry_ids(self, tokens: Sequence[str], keys: FieldKeys) -> dict[str, str]:
        """The entry id each token names, for tokens in this format (others, e.g. drawn before migration 4,
        are left out: the caller looks them up by token)."""
        bodies: dict[str, bytes] = {}
        start = len(self.prefix)
        for token in tokens:
            body = token[start:]
            if not token.startswith(self.prefix) or len(body) != self._body_length:
                continue
            try:
                raw = base64.b64decode(body + "==", altchars=b"-_", validate=True)
            except ValueError:
                continue
            if _b64(raw) == body:  # canonical only: otherwise several spellings would name one entry
                bodies[token] = raw
        if not bodies:
            return {}
        blocks = self._block_cipher(keys).decryptor().update(b"".join(raw[:16] for raw in bodies.values()))
        found = {}
        for n, (token, raw) in enumerate(bodies.items()):
            entry_id = blocks[16 * n:16 * n + 16]
            if self.length == 16 or hmac.compare_digest(raw[16:], self._tag(keys, entry_id)):
                found[token] = entry_id.hex()
        return found


class DeterministicProfile(Profile):
    derived = deterministic = True

    def __init__(self, length: int, prefix: str) -> None:
        self.length, self.prefix = length, prefix

    def derive(self, values: Sequence[str], keys: FieldKeys) -> list[str]:
        return [self.prefix + _b64(hmac.digest(keys.token_key, v.encode(), "sha256")[:self.length])
                for v in values]


class FormatPreservingProfile(Profile):
    """FF1 over the characters in the alphabet; others stay in place when preserve_other_characters."""

    derived = deterministic = True

    def __init__(self, alphabet: Alphabet, tweak: bytes, preserve_other: bool) -> None:
        self.alphabet, self.tweak, self.preserve_other = alphabet, tweak, preserve_other
        self._characters = frozenset(alphabet.characters)

    def _free(self, value: str) -> str:
        if self._characters.issuperset(value):  # the usual case, checked in C instead of per character
            return value
        return "".join(c for c in value if c in self.alphabet)

    def check(self, value: str) -> None:
        free = self._free(value)
        if len(free) != len(value) and not self.preserve_other:
            raise Problem("VALUE_ALPHABET_MISMATCH", "has a character outside the profile's alphabet")
        if not domain_ok(self.alphabet.radix, len(free)):
            raise Problem("DOMAIN_TOO_SMALL", "fewer than 10^6 possible values to encipher (NIST SP 800-38G)")

    def derive(self, values: Sequence[str], keys: FieldKeys) -> list[str]:
        cipher = FF1(keys.token_key, self.alphabet.radix)
        enciphered = iter(encrypt_strings(cipher, self.alphabet, [self._free(v) for v in values], self.tweak))
        out = []
        for value, new in zip(values, enciphered, strict=True):
            if len(new) == len(value):  # nothing to put back in place
                out.append(new)
                continue
            replaced = iter(new)
            out.append("".join(next(replaced) if c in self.alphabet else c for c in value))
        return out


class ShapedProfile(Profile):
    """Card numbers, SSNs, phone numbers: the free digits are replaced by random draw or FF1."""

    def __init__(self, method: int, tweak: bytes, parse: shapes.ShapeParser, min_free_digits: int = 1) -> None:
        self.method = pb.SHAPE_METHOD_RANDOM if method == pb.SHAPE_METHOD_UNSPECIFIED else method
        self.derived = self.method == pb.SHAPE_METHOD_FF1
        self.deterministic = self.method != pb.SHAPE_METHOD_RANDOM
        self.tweak, self.parse, self.min_free_digits = tweak, parse, min_free_digits

    def _shape(self, value: str) -> shapes.Shape:
        shape = self.parse(value)
        if shape is None:
            raise Problem("VALUE_SHAPE_MISMATCH", "does not have the profile's shape")
        return shape

    def check(self, value: str) -> None:
        free = self._shape(value).free
        if self.derived and not domain_ok(10, len(free)):
            raise Problem("DOMAIN_TOO_SMALL", "fewer than 6 digits to encipher with FF1 (NIST SP 800-38G)")
        if len(free) < self.min_free_digits:
            raise Problem("DOMAIN_TOO_SMALL", "no digit left to replace")

    def draw(self, value: str) -> str:
        shape = self._shape(value)
        return shape.render(_digits(secrets.randbelow(10 ** len(shape.free)), len(shape.free)))

    def derive(self, values: Sequence[str], keys: FieldKeys) -> list[str]:
        parsed = [self._shape(v) for v in values]
        free = encrypt_strings(FF1(keys.token_key, 10), RADIX_10, [s.free for s in parsed], self.tweak)
        return [s.render(f) for s, f in zip(parsed, free, strict=True)]

    def alternatives(self, value: str) -> list[str] | None:
        shape = self._shape(value)
        size = len(shape.free)
        if 10 ** size > SMALL_SPACE:
            return None
        return [token for token in (shape.render(_digits(n, size)) for n in range(10 ** size))
                if not (self.never_equal_input and token == value)]


class CardNumberProfile(ShapedProfile):
    """A card token never equals its card number, with no loop that a value can steer (docs/token-vault.md,
    "Security"). Drawn: uniform over the other 10^n - 1 free-digit strings. FF1: when the free digits x are a
    fixed point (FF1(x) = x; a random permutation of 10^n strings has one on average), cycle-walking would
    repeat x forever, and no other Luhn-valid token is left (FF1 is a bijection onto them all). Such a value's
    token is FF1 under a second tweak, rendered with a deliberately failing Luhn check: Luhn-invalid tokens
    come only from fixed points and differ among themselves, so tokens stay distinct and never the input."""

    never_equal_input = True

    def draw(self, value: str) -> str:
        shape = self._shape(value)
        size = len(shape.free)
        drawn = secrets.randbelow(10 ** size - 1)  # check() leaves at least one free digit
        return shape.render(_digits(drawn + (drawn >= int(shape.free)), size))

    def derive(self, values: Sequence[str], keys: FieldKeys) -> list[str]:
        cipher = FF1(keys.token_key, 10)
        parsed = [self._shape(v) for v in values]
        free = [s.free for s in parsed]
        enciphered = encrypt_strings(cipher, RADIX_10, free, self.tweak)
        tokens = [s.render(f) for s, f in zip(parsed, enciphered, strict=True)]
        fixed = [i for i, (old, new) in enumerate(zip(free, enciphered, strict=True)) if old == new]
        if fixed:
            flagged = encrypt_strings(cipher, RADIX_10, [free[i] for i in fixed], self.tweak + FIXED_POINT_TWEAK)
            for index, digits in zip(fixed, flagged, strict=True):
                tokens[index] = _flagged(parsed[index], digits)
        return tokens


def _digits(number: int, size: int) -> str:
    return f"{number:0{size}d}" if size else ""


def _flagged(shape: shapes.Shape, free: str) -> str:
    if shape.flagged is None:
        raise AssertionError("card shapes render flagged tokens")
    return shape.flagged(free)


class EmailProfile(Profile):
    def __init__(self, msg: pb.EmailProfile, tweak: bytes) -> None:
        self.method = pb.SHAPE_METHOD_RANDOM if msg.method == pb.SHAPE_METHOD_UNSPECIFIED else msg.method
        self.derived = self.method == pb.SHAPE_METHOD_FF1
        self.deterministic = self.method != pb.SHAPE_METHOD_RANDOM
        self.alphabet = RADIX_36 if msg.alphabet == pb.ALPHABET_UNSPECIFIED else ALPHABETS[msg.alphabet]
        self.keep_domain = msg.keep_domain
        self.domain = msg.replacement_domain or DEFAULT_REPLACEMENT_DOMAIN
        self.tweak = tweak

    def _shape(self, value: str) -> tuple[shapes.Shape, str]:
        parsed = shapes.email(value, self.alphabet, self.keep_domain, self.domain, whole_local_part=not self.derived)
        if parsed is None:
            raise Problem("VALUE_SHAPE_MISMATCH", "is not an email address")
        return parsed

    def check(self, value: str) -> None:
        shape, _ = self._shape(value)
        if self.derived and not domain_ok(self.alphabet.radix, len(shape.free)):
            raise Problem("DOMAIN_TOO_SMALL", "the local part has fewer than 10^6 possible values")

    def draw(self, value: str) -> str:
        shape, _ = self._shape(value)
        chars = self.alphabet.characters
        return shape.render("".join(secrets.choice(chars) for _ in range(EMAIL_LOCAL_LENGTH)))

    def derive(self, values: Sequence[str], keys: FieldKeys) -> list[str]:
        cipher = FF1(keys.token_key, self.alphabet.radix)
        parsed = [self._shape(v) for v in values]
        groups: dict[bytes, list[int]] = {}
        for index, (_, domain) in enumerate(parsed):
            # A replaced domain goes into the tweak, so equal local parts at two domains differ.
            tweak = self.tweak if self.keep_domain else self.tweak + b"@" + domain.lower().encode()
            groups.setdefault(tweak, []).append(index)
        out = [""] * len(values)
        for tweak, indices in groups.items():
            new = encrypt_strings(cipher, self.alphabet, [parsed[i][0].free for i in indices], tweak)
            for index, free in zip(indices, new, strict=True):
                out[index] = parsed[index][0].render(free)
        return out


class MaskingProfile(Profile):
    reversible = False

    def __init__(self, mask: Mask) -> None:
        self.mask = mask

    def check(self, value: str) -> None:
        try:
            self.mask.apply(value)
        except Unmaskable:
            raise Problem("VALUE_UNMASKABLE", "the mask would equal the value") from None

    def draw(self, value: str) -> str:
        return self.mask.apply(value)


def build(profile: pb.TokenProfile, field_name: str) -> Profile:
    """The profile object of a validated TokenProfile; `field_name` gives the default FF1 tweak."""
    kind = profile.WhichOneof("kind")
    default_tweak = field_name.encode()
    if kind == "random":
        return RandomProfile(profile.random.length or 16, profile.random.prefix)
    if kind == "deterministic":
        return DeterministicProfile(profile.deterministic.length or 16, profile.deterministic.prefix)
    if kind == "format_preserving":
        fp = profile.format_preserving
        return FormatPreservingProfile(ALPHABETS[fp.alphabet], fp.tweak or default_tweak, fp.preserve_other_characters)
    if kind == "card_number":
        c = profile.card_number
        return CardNumberProfile(c.method, default_tweak,
                                 lambda v: shapes.card_number(v, c.keep_first_six, c.keep_last_four))
    if kind == "ssn":
        s = profile.ssn
        return ShapedProfile(s.method, default_tweak, lambda v: shapes.ssn(v, s.keep_last_four))
    if kind == "phone_number":
        p = profile.phone_number
        return ShapedProfile(p.method, default_tweak,
                             lambda v: shapes.phone_number(v, p.keep_country_code, p.keep_last_digits))
    if kind == "email":
        return EmailProfile(profile.email, default_tweak)
    if kind == "masking":
        return MaskingProfile(mask_from_proto(profile.masking))
    raise ValueError("profile has no kind")


def validate(profile: pb.TokenProfile, path: str = "field.profile") -> list[FieldViolation]:
    """Every problem of a TokenProfile (field paths into the request), for CreateField's PROFILE_INVALID."""
    found = _Found()
    kind = profile.WhichOneof("kind")
    if kind is None:
        found.add(path, "exactly one kind of profile is required")
        return found.items
    sub = f"{path}.{kind}"
    if kind in ("random", "deterministic"):
        msg = getattr(profile, kind)
        low, high = (16, 64) if kind == "random" else (16, 32)
        found.check(msg.length == 0 or low <= msg.length <= high, f"{sub}.length", f"must be {low}..{high}")
        found.check(len(msg.prefix) <= 16 and set(msg.prefix) <= _PREFIX_CHARS, f"{sub}.prefix",
                    "at most 16 characters from [A-Za-z0-9_-]")
    elif kind == "format_preserving":
        fp = profile.format_preserving
        found.check(fp.alphabet in ALPHABETS, f"{sub}.alphabet", "unknown alphabet")
        found.check(len(fp.tweak) <= 64, f"{sub}.tweak", "at most 64 bytes")
    elif kind == "card_number":
        c = profile.card_number
        _check_method(found, c.method, f"{sub}.method")
        if c.method == pb.SHAPE_METHOD_FF1 and c.keep_first_six and c.keep_last_four:
            found.add(f"{sub}.method", "FF1 needs 6 free digits: keeping the first six and the last four leaves 5 "
                                        "in a 16-digit number (DOMAIN_TOO_SMALL); use RANDOM or DETERMINISTIC")
    elif kind == "ssn":
        _check_method(found, profile.ssn.method, f"{sub}.method")
        if profile.ssn.method == pb.SHAPE_METHOD_FF1 and profile.ssn.keep_last_four:
            found.add(f"{sub}.method", "FF1 needs 6 free digits: keeping the last four of an SSN leaves 5 "
                                        "(DOMAIN_TOO_SMALL); use RANDOM or DETERMINISTIC")
    elif kind == "phone_number":
        _check_method(found, profile.phone_number.method, f"{sub}.method")
        found.check(profile.phone_number.keep_last_digits <= 4, f"{sub}.keep_last_digits", "must be 0..4")
    elif kind == "email":
        e = profile.email
        _check_method(found, e.method, f"{sub}.method")
        found.check(e.alphabet in ALPHABETS, f"{sub}.alphabet", "unknown alphabet")
        found.check(not e.replacement_domain or shapes.domain_valid(e.replacement_domain),
                    f"{sub}.replacement_domain", "not a domain name")
    elif kind == "masking":
        m = profile.masking
        found.check(len(m.mask_character) <= 1, f"{sub}.mask_character", "a single character")
        found.check(m.keep_first <= 1024 and m.keep_last <= 1024, f"{sub}.keep_first",
                    "keep_first and keep_last are at most 1024")
    return found.items


class _Found:
    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, path: str, description: str) -> None:
        self.items.append(FieldViolation(path, description))

    def check(self, ok: bool, path: str, description: str) -> None:
        if not ok:
            self.add(path, description)


def _check_method(found: _Found, method: int, path: str) -> None:
    found.check(method in pb.ShapeMethod.values(), path, "unknown shape method")
