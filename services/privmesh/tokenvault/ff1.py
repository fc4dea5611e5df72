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
from numpy.typing import NDArray

MIN_DOMAIN = 1_000_000  # SP 800-38G: radix^minlen >= 10^6
MAX_LENGTH = 2 ** 32 - 1
ROUNDS = 10
NARROW_MIN_BATCH = 8  # below this, numpy set-up costs more than Python integers


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
        # FF1 builds its CBC-MAC PRF from single AES blocks: ECB here is one block per value, never a mode of use.
        self._ecb = Cipher(algorithms.AES(key), modes.ECB())  # noqa: S305

    def aes_ecb(self, blocks: bytes) -> bytes:
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
        const_blocks = len(head) // 16
        state = self.aes_ecb(p)
        for index in range(const_blocks):
            state = self.aes_ecb(_xor(state, head[16 * index:16 * index + 16]))
        head_tail = head[16 * const_blocks:]
        var_blocks = (q_len - 16 * const_blocks) // 16
        rounds = _Rounds(self, state, head_tail, var_blocks, b, d, mod_u, mod_v, decrypt)
        a = [x for x, _ in values]
        bb = [y for _, y in values]
        if decrypt:
            a, bb = bb, a  # decryption runs the rounds backwards on (B, A)
        if b <= 4 and len(values) >= NARROW_MIN_BATCH:  # NUM(B) and y fit 64 bits: numpy arithmetic
            a_arr, b_arr = rounds.run_narrow(np.array(a, dtype=np.uint64), np.array(bb, dtype=np.uint64))
            a, bb = [int(x) for x in a_arr], [int(x) for x in b_arr]
        else:
            a, bb = rounds.run_wide(a, bb)
        if decrypt:
            a, bb = bb, a
        return list(zip(a, bb, strict=True))


class _Rounds:
    """The ten Feistel rounds over a batch sharing length and tweak (state = CBC-MAC of P and the tweak)."""

    def __init__(self, cipher: FF1, state: bytes, head_tail: bytes, var_blocks: int, b: int, d: int,
                 mod_u: int, mod_v: int, decrypt: bool) -> None:
        self.cipher, self.head_tail, self.var_blocks = cipher, head_tail, var_blocks
        self.b, self.d, self.mod_u, self.mod_v, self.decrypt = b, d, mod_u, mod_v, decrypt
        self.state = np.frombuffer(state, dtype=np.uint8)

    def _order(self) -> range:
        return range(ROUNDS - 1, -1, -1) if self.decrypt else range(ROUNDS)

    def _mac(self, q: NDArray[np.uint8]) -> NDArray[np.uint8]:
        """CBC-MAC of each row of `q` chained from the shared state, then S's extra blocks: rows of S."""
        count = q.shape[0]
        mac = np.broadcast_to(self.state, (count, 16))
        for block in range(self.var_blocks):
            chunk = np.bitwise_xor(mac, q[:, 16 * block:16 * block + 16])
            mac = np.frombuffer(self.cipher.aes_ecb(chunk.tobytes()), dtype=np.uint8).reshape(count, 16)
        if self.d <= 16:
            return mac
        extra = [np.bitwise_xor(mac, np.frombuffer(j.to_bytes(16, "big"), dtype=np.uint8))
                 for j in range(1, math.ceil(self.d / 16))]
        stacked = np.concatenate(extra, axis=1).reshape(count * len(extra), 16)
        more = np.frombuffer(self.cipher.aes_ecb(stacked.tobytes()), dtype=np.uint8).reshape(count, -1)
        return np.concatenate([mac, more], axis=1)

    def run_narrow(self, a: NDArray[np.uint64],
                   bb: NDArray[np.uint64]) -> tuple[NDArray[np.uint64], NDArray[np.uint64]]:
        count, width, b = a.shape[0], self.var_blocks * 16, self.b
        q = np.empty((count, width), dtype=np.uint8)
        for i in self._order():
            m_mod = np.uint64(self.mod_u if i % 2 == 0 else self.mod_v)
            q[:, :width - b] = np.frombuffer(self.head_tail + bytes([i]), dtype=np.uint8)
            q[:, width - b:] = bb.astype(">u8").view(np.uint8).reshape(count, 8)[:, 8 - b:]
            y = np.ascontiguousarray(self._mac(q)[:, :8]).view(">u8").reshape(count).astype(np.uint64) % m_mod
            c = (a + m_mod - y) % m_mod if self.decrypt else (a + y) % m_mod
            a, bb = bb, c
        return a, bb

    def run_wide(self, a: list[int], bb: list[int]) -> tuple[list[int], list[int]]:
        count, b, d = len(a), self.b, self.d
        for i in self._order():
            m_mod = self.mod_u if i % 2 == 0 else self.mod_v
            prefix = self.head_tail + bytes([i])
            q = b"".join(prefix + x.to_bytes(b, "big") for x in bb)
            s_bytes = self._mac(np.frombuffer(q, dtype=np.uint8).reshape(count, -1))[:, :d].tobytes()
            ys = [int.from_bytes(s_bytes[k * d:(k + 1) * d], "big") for k in range(count)]
            if self.decrypt:
                c = [(x - y) % m_mod for x, y in zip(a, ys, strict=True)]
            else:
                c = [(x + y) % m_mod for x, y in zip(a, ys, strict=True)]
            a, bb = bb, c
        return a, bb


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
