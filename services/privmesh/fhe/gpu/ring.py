"""Exact arithmetic modulo word-size primes (< 2^60) in torch int64, and OpenFHE's negacyclic NTT, batched.

Written here because torch has neither 128-bit products nor a high-half multiply: a product of two residues is
split into 30-bit halves (every partial product fits in int64), and each reduction takes its quotient from a
float64 estimate and corrects the remainder in wrapping int64 arithmetic, where the true remainder is small. The
NTT is OpenFHE's own (Cooley-Tukey forward into bit-reversed order with the powers of its 2N-th root of unity
stored bit-reversed, Gentleman-Sande inverse, then a multiply by N^-1), so residues in EVALUATION form match
OpenFHE's word for word. Every tensor here is (..., towers, N) with one modulus per tower.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

HALF = 30
MASK = (1 << HALF) - 1
SHIFT = float(1 << HALF)
MAX_MODULUS_BITS = 60


def _fix(r: torch.Tensor, q: torch.Tensor, qf: torch.Tensor) -> torch.Tensor:
    """r mod q for |r| < 2^62 (one float quotient, off by at most one, then one correction each way)."""
    r = r - torch.floor(r.to(torch.float64) / qf).to(torch.int64) * q
    r = torch.where(r < 0, r + q, r)
    return torch.where(r >= q, r - q, r)


def _step(high: torch.Tensor, low: torch.Tensor, q: torch.Tensor, qf: torch.Tensor) -> torch.Tensor:
    """(high * 2^30 + low) mod q for 0 <= high < q < 2^60 and 0 <= low < 2^62.

    The quotient is below 2^30 + 2^62 / q, so its float64 estimate is off by far less than one (a few 2^-53
    relative) and floor() is off by at most one; the remainder, computed in wrapping int64 arithmetic, is then
    exact (its true value is in [-q, 2q)) and one correction each way finishes it."""
    estimate = torch.floor((high.to(torch.float64) * SHIFT + low.to(torch.float64)) / qf).to(torch.int64)
    r = (high << HALF) + low - estimate * q
    r = torch.where(r < 0, r + q, r)
    return torch.where(r >= q, r - q, r)


def mul(a: torch.Tensor, b: torch.Tensor, q: torch.Tensor, qf: torch.Tensor) -> torch.Tensor:
    """a * b mod q for residues 0 <= a, b < q < 2^60 (broadcasting)."""
    a1, a0 = a >> HALF, a & MASK
    b1, b0 = b >> HALF, b & MASK
    high = a1 * b1  # < q, as a * b < q^2 < q * 2^60
    middle = a1 * b0 + a0 * b1
    return _step(_step(high, middle, q, qf), a0 * b0, q, qf)


def add(a: torch.Tensor, b: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    s = a + b
    return torch.where(s >= q, s - q, s)


def sub(a: torch.Tensor, b: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    s = a - b
    return torch.where(s < 0, s + q, s)


def reduce(a: torch.Tensor, q: torch.Tensor, qf: torch.Tensor) -> torch.Tensor:
    """a mod q for any 0 <= a < 2^62 (a residue of another modulus brought to this one)."""
    return _fix(a, q, qf)


# --- number theory (Python integers, once per modulus) ---------------------------------------------------------
def bit_reverse(i: int, bits: int) -> int:
    return int(format(i, f"0{bits}b")[::-1], 2) if bits else 0


def minimal_root_of_unity(order: int, p: int) -> int:
    """The smallest primitive `order`-th root of unity mod the prime p: the root OpenFHE chooses (its
    RootOfUnity cycles through all primitive roots and keeps the minimum, so every context agrees)."""
    if (p - 1) % order:
        raise ValueError(f"{p} is not 1 mod {order}")
    for g in range(2, p):
        root = pow(g, (p - 1) // order, p)
        if pow(root, order // 2, p) == p - 1:
            break
    best, x, square = root, root, root * root % p
    for _ in range(order // 2 - 1):  # the odd powers of a primitive root are all the primitive roots
        x = x * square % p
        best = min(best, x)
    return best


@dataclass(frozen=True)
class Basis:
    """A list of moduli on a device, with the NTT tables of each (for a ring of dimension n)."""

    moduli: tuple[int, ...]
    n: int
    q: torch.Tensor  # (towers, 1)
    qf: torch.Tensor  # (towers, 1) float64
    roots: torch.Tensor  # (towers, n): psi^i stored at bit_reverse(i)
    inverse_roots: torch.Tensor
    n_inverse: torch.Tensor  # (towers, 1)

    @classmethod
    def build(cls, moduli: tuple[int, ...], roots: tuple[int, ...], n: int, device: torch.device) -> Basis:
        bits = n.bit_length() - 1
        table, inverse = [], []
        for p, psi in zip(moduli, roots, strict=True):
            if p >= 1 << MAX_MODULUS_BITS:
                raise ValueError(f"modulus {p} has more than {MAX_MODULUS_BITS} bits")
            forward, backward = [0] * n, [0] * n
            x, y, psi_inverse = 1, 1, pow(psi, -1, p)
            for i in range(n):
                j = bit_reverse(i, bits)
                forward[j], backward[j] = x, y
                x, y = x * psi % p, y * psi_inverse % p
            table.append(forward)
            inverse.append(backward)

        def tensor(rows: list[list[int]]) -> torch.Tensor:
            return torch.tensor(rows, dtype=torch.int64, device=device)

        return cls(tuple(moduli), n, tensor([[p] for p in moduli]),
                   torch.tensor([[float(p)] for p in moduli], dtype=torch.float64, device=device),
                   tensor(table), tensor(inverse), tensor([[pow(n, -1, p)] for p in moduli]))

    def select(self, index: list[int]) -> Basis:
        """The sub-basis of the towers at `index`, in that order."""
        i = torch.tensor(index, device=self.q.device)
        return Basis(tuple(self.moduli[k] for k in index), self.n, self.q[i], self.qf[i], self.roots[i],
                     self.inverse_roots[i], self.n_inverse[i])

    def mul(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return mul(a, b, self.q, self.qf)

    def add(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return add(a, b, self.q)

    def sub(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return sub(a, b, self.q)

    def ntt(self, a: torch.Tensor) -> torch.Tensor:
        """COEFFICIENT -> EVALUATION, OpenFHE's ForwardTransformToBitReverse on every tower at once."""
        n, towers, shape = self.n, len(self.moduli), a.shape
        q, qf = self.q.unsqueeze(-1), self.qf.unsqueeze(-1)
        m, t = 1, n // 2
        while m < n:
            x = a.reshape(*shape[:-2], towers, m, 2, t)
            omega = self.roots[:, m:2 * m].unsqueeze(-1)
            lo, hi = x[..., 0, :], mul(x[..., 1, :], omega, q, qf)
            a = torch.stack((add(lo, hi, q), sub(lo, hi, q)), dim=-2).reshape(shape)
            m, t = 2 * m, t // 2
        return a

    def intt(self, a: torch.Tensor) -> torch.Tensor:
        """EVALUATION -> COEFFICIENT, OpenFHE's InverseTransformFromBitReverse on every tower at once."""
        n, towers, shape = self.n, len(self.moduli), a.shape
        q, qf = self.q.unsqueeze(-1), self.qf.unsqueeze(-1)
        m, t = n // 2, 1
        while m >= 1:
            x = a.reshape(*shape[:-2], towers, m, 2, t)
            omega = self.inverse_roots[:, m:2 * m].unsqueeze(-1)
            lo, hi = x[..., 0, :], x[..., 1, :]
            a = torch.stack((add(lo, hi, q), mul(sub(lo, hi, q), omega, q, qf)), dim=-2).reshape(shape)
            m, t = m // 2, t * 2
        return self.mul(a, self.n_inverse)
