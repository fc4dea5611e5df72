"""FF1 format-preserving encryption (NIST SP 800-38G), vectorised across a batch.

Written by hand on `cryptography`'s AES: no well-kept Python FF1 library exists on PyPI (`ff3` is FF3-1
only, which the revised draft withdraws; `pyffx` is not NIST FF1), and none encrypts a batch at once.

Batching: the values of a batch that share a length share every round's constant part (P, the tweak),
so each round is one AES-ECB call over the concatenated last blocks of all values (plus one per extra
16 bytes of NUM(B) or of S for very long values), instead of a CBC-MAC per value. The numerals A and B stay
Python integers through the rounds (NUM_radix(STR(c)) = c), so digits are converted only on entry and exit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

MIN_DOMAIN = 1_000_000  # SP 800-38G: radix^minlen >= 10^6
MAX_LENGTH = 2 ** 32 - 1
ROUNDS = 10


class FF1Error(ValueError):
    """The input cannot be enciphered (domain too small, numeral outside the radix)."""


def domain_ok(radix: int, length: int) -> bool:
    """Whether `length` numerals of `radix` reach the 10^6 minimum domain (and at least 2 numerals)."""
    return length >= 2 and radix ** length >= MIN_DOMAIN


class FF1:
    """FF1-AES with one key and radix; `encrypt`/`decrypt` take numerals as integers, one tweak per batch."""

    def __init__(self, key: bytes, radix: int) -> None:
        if len(key) not in (16, 24, 32):
            raise FF1Error("FF1 needs an AES-128, -192 or -256 key")
        if not 2 <= radix <= 2 ** 16:
            raise FF1Error("radix must be in 2..65536")
        self.radix = radix
        self._ecb = Cipher(algorithms.AES(key), modes.ECB())

    def _aes(self, blocks: bytes) -> bytes:
        encryptor = self._ecb.encryptor()
        return encryptor.update(blocks) + encryptor.finalize()

    def encrypt(self, values: Sequence[tuple[int, int]], length: int, tweak: bytes) -> list[tuple[int, int]]:
        """Enciphers (NUM(A), NUM(B)) halves of `length`-numeral strings; returns the enciphered halves."""
        return self._crypt(values, length, tweak, decrypt=False)

    def decrypt(self, values: Sequence[tuple[int, int]], length: int, tweak: bytes) -> list[tuple[int, int]]:
        return self._crypt(values, length, tweak, decrypt=True)

    def _crypt(self, values: Sequence[tuple[int, int]], n: int, tweak: bytes, *,
               decrypt: bool) -> list[tuple[int, int]]:
        if not domain_ok(self.radix, n) or n > MAX_LENGTH:
            raise FF1Error("domain too small: radix^length must be at least 10^6")
        if not values:
            return []
        radix, t = self.radix, len(tweak)
        u, v = n // 2, n - n // 2
        b = math.ceil(math.ceil(v * math.log2(radix)) / 8)
        d = 4 * math.ceil(b / 4) + 4
        mod_u, mod_v = radix ** u, radix ** v
        p = bytes([1, 2, 1]) + radix.to_bytes(3, "big") + bytes([10, u % 256]) + n.to_bytes(4, "big") + \
            t.to_bytes(4, "big")
        q_len = t + (-t - b - 1) % 16 + 1 + b
        # The CBC-MAC over P and the tweak's full blocks is the same for every value: computed once.
        head = tweak + bytes((-t - b - 1) % 16)
        const_blocks, tail_len = divmod(len(head), 16)
        state = self._aes(p)
        for index in range(const_blocks):
            state = self._aes(_xor(state, head[16 * index:16 * index + 16]))
        head_tail = head[16 * const_blocks:]
        var_blocks = (q_len - 16 * const_blocks) // 16
        count = len(values)
        a = [x for x, _ in values]
        bb = [y for _, y in values]
        if decrypt:
            a, bb = bb, a  # decryption runs the rounds backwards on (B, A)
        state_arr = np.frombuffer(state, dtype=np.uint8)
        for step in range(ROUNDS):
            i = ROUNDS - 1 - step if decrypt else step
            m_mod = mod_u if i % 2 == 0 else mod_v
            prefix = head_tail + bytes([i])
            q = b"".join(prefix + x.to_bytes(b, "big") for x in bb)
            q_arr = np.frombuffer(q, dtype=np.uint8).reshape(count, var_blocks * 16)
            mac = np.broadcast_to(state_arr, (count, 16))
            for block in range(var_blocks):
                chunk = np.bitwise_xor(mac, q_arr[:, 16 * block:16 * block + 16])
                mac = np.frombuffer(self._aes(chunk.tobytes()), dtype=np.uint8).reshape(count, 16)
            s = mac
            if d > 16:
                extra = [np.bitwise_xor(mac, np.frombuffer(j.to_bytes(16, "big"), dtype=np.uint8))
                         for j in range(1, math.ceil(d / 16))]
                stacked = np.concatenate(extra, axis=1).reshape(count * len(extra), 16)
                more = np.frombuffer(self._aes(stacked.tobytes()), dtype=np.uint8).reshape(count, -1)
                s = np.concatenate([mac, more], axis=1)
            s_bytes = s[:, :d].tobytes()
            ys = [int.from_bytes(s_bytes[k * d:(k + 1) * d], "big") for k in range(count)]
            if decrypt:
                c = [(x - y) % m_mod for x, y in zip(a, ys, strict=True)]
            else:
                c = [(x + y) % m_mod for x, y in zip(a, ys, strict=True)]
            a, bb = bb, c
        if decrypt:
            a, bb = bb, a
        return list(zip(a, bb, strict=True))


def _xor(left: bytes, right: bytes) -> bytes:
    return (int.from_bytes(left, "big") ^ int.from_bytes(right, "big")).to_bytes(16, "big")


class Alphabet:
    """Numerals <-> characters for one FF1 alphabet (a character's numeral is its position)."""

    def __init__(self, characters: str) -> None:
        self.characters = characters
        self.radix = len(characters)
        self._index = {c: i for i, c in enumerate(characters)}
        self._int_base = self.radix if characters == "0123456789abcdefghijklmnopqrstuvwxyz"[:self.radix] else 0

    def __contains__(self, char: str) -> bool:
        return char in self._index

    def to_int(self, text: str) -> int:
        if self._int_base and self.radix <= 36:
            return int(text, self._int_base) if text else 0
        value = 0
        for char in text:
            value = value * self.radix + self._index[char]
        return value

    def to_str(self, value: int, length: int) -> str:
        if self.radix == 10:
            return f"{value:0{length}d}"
        chars = []
        for _ in range(length):
            value, digit = divmod(value, self.radix)
            chars.append(self.characters[digit])
        return "".join(reversed(chars))


RADIX_10 = Alphabet("0123456789")
RADIX_36 = Alphabet("0123456789abcdefghijklmnopqrstuvwxyz")
RADIX_62 = Alphabet("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def encrypt_strings(cipher: FF1, alphabet: Alphabet, texts: Sequence[str], tweak: bytes,
                    *, decrypt: bool = False) -> list[str]:
    """Enciphers (or deciphers) strings over `alphabet`, one AES call per round for each length present."""
    out: list[str] = [""] * len(texts)
    by_length: dict[int, list[int]] = {}
    for index, text in enumerate(texts):
        by_length.setdefault(len(text), []).append(index)
    for length, indices in by_length.items():
        u = length // 2
        halves = [(alphabet.to_int(texts[k][:u]), alphabet.to_int(texts[k][u:])) for k in indices]
        done = (cipher.decrypt if decrypt else cipher.encrypt)(halves, length, tweak)
        for k, (x, y) in zip(indices, done, strict=True):
            out[k] = alphabet.to_str(x, u) + alphabet.to_str(y, length - u)
    return out
