"""CKKS evaluation on RNS limbs in torch, computing what OpenFHE 1.6 computes, word for word, with FIXEDMANUAL
scaling and HYBRID key switching (the parameters privmesh.fhe.params publishes).

FIXEDMANUAL is the technique where exact agreement is possible and the one the models use: rescaling happens only
where the circuit asks, and the scaling factor is the fixed 2^scaling_mod_size, so each operation is a
deterministic function of its inputs (the FLEXIBLE* techniques rescale inside other operations and scale constants
by level-dependent factors, which is more of OpenFHE to mirror for no gain here).

Each operation follows the OpenFHE routine named in its docstring: the same digit decomposition, basis extension
(ApproxSwitchCRTBasis), inner product with the key and ApproxModDown for key switching; DropLastElementAndScale for
rescaling; PrecomputeAutoMap's permutation of the NTT slots for automorphisms. Results are canonical residues, so
they equal OpenFHE's whatever the order of the arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cache, lru_cache

import numpy as np
import torch
from numpy.typing import NDArray

from privmesh.fhe.gpu import ring, serial
from privmesh.fhe.gpu.ring import Basis

MAX_BITS_IN_WORD = 61  # OpenFHE's LargeScalingFactorConstants
MAX_LOG_STEP = 60


class CkksError(ValueError):
    """An operation OpenFHE would refuse (missing key, mismatched operands, unsupported parameters)."""


@dataclass(frozen=True)
class Ct:
    """A ciphertext on the device: (components, towers, N) int64 residues in EVALUATION form, and OpenFHE's
    bookkeeping for it."""

    data: torch.Tensor
    level: int
    noise_scale_deg: int
    scaling_factor: float
    slots: int

    @property
    def towers(self) -> int:
        return int(self.data.shape[1])


@dataclass(frozen=True)
class Pt:
    """An encoded plaintext: (towers, N) residues in EVALUATION form at level 0."""

    data: torch.Tensor
    noise_scale_deg: int = 1


@dataclass(frozen=True)
class SwitchKey:
    """A key-switching key on the device: (digits, 2, towers of Q*P, N); index 0 is OpenFHE's b, 1 its a."""

    data: torch.Tensor


def automorphism_index(steps: int, order: int) -> int:
    """OpenFHE's FindAutomorphismIndex2nComplex: the Galois element that rotates the slots by `steps`."""
    if steps == 0:
        return 1
    if steps == order - 1:
        return steps
    g0 = pow(5, -1, order) if steps < 0 else 5
    return pow(g0, abs(steps), order)


@lru_cache(maxsize=256)
def _automorphism_map(n: int, k: int) -> NDArray[np.int64]:
    """PrecomputeAutoMap: result slot j takes slot map[j] (NTT slots in bit-reversed order)."""
    bits = n.bit_length() - 1
    j = np.arange(n, dtype=np.int64)
    idx = (((2 * j + 1) * k) % (2 * n)) >> 1
    rev = np.array([ring.bit_reverse(i, bits) for i in range(n)], dtype=np.int64)
    out = np.empty(n, dtype=np.int64)
    out[rev] = rev[idx]
    return out


class Engine:
    """The CKKS operations for one crypto context on one device. The special primes P are those of the
    evaluation keys (OpenFHE derives them from the context; the keys carry them)."""

    def __init__(self, context: serial.Context, special_moduli: tuple[int, ...], device: torch.device | str) -> None:
        if context.scaling_technique != "FIXEDMANUAL" or context.key_switch_technique != "HYBRID":
            raise CkksError("the torch evaluator supports FIXEDMANUAL scaling with HYBRID key switching only")
        self.context = context
        self.device = torch.device(device)
        towers = context.ring.towers
        self.n = context.ring.ring_dim
        self.order = 2 * self.n
        self.q_moduli = tuple(t.modulus for t in towers)
        self.p_moduli = tuple(special_moduli)
        roots = tuple(t.root for t in towers) + tuple(ring.minimal_root_of_unity(self.order, p)
                                                       for p in self.p_moduli)
        self.basis = Basis.build(self.q_moduli + self.p_moduli, roots, self.n, self.device)
        self.size_q, self.size_p = len(self.q_moduli), len(self.p_moduli)
        self.alpha = math.ceil(self.size_q / context.dnum)  # towers per digit
        self.scale = float(2 ** context.scaling_mod_size)

    # --- helpers ----------------------------------------------------------------------------------------------
    def tensor(self, rows: list[list[int]] | list[int]) -> torch.Tensor:
        return torch.tensor(rows, dtype=torch.int64, device=self.device)

    @cache  # noqa: B019 - one engine per session, kept as long as the session
    def select(self, index: tuple[int, ...]) -> Basis:
        """The sub-basis of these towers (of Q then P), its tables gathered once."""
        return self.basis.select(list(index))

    def q(self, towers: int) -> Basis:
        return self.select(tuple(range(towers)))

    @property
    def p(self) -> Basis:
        return self.select(tuple(range(self.size_q, self.size_q + self.size_p)))

    def qp(self, towers: int) -> Basis:
        return self.select((*range(towers), *range(self.size_q, self.size_q + self.size_p)))

    def _switch_basis(self, x: torch.Tensor, source: tuple[int, ...], target: Basis) -> torch.Tensor:
        """ApproxSwitchCRTBasis: sum_i [x_i (Q/q_i)^-1]_{q_i} (Q/q_i) mod t_j, for coefficients x over the
        moduli `source` (x: (..., len(source), N) in COEFFICIENT form)."""
        hat_inverse, hat_mod = _hat_tables(source, target.moduli)
        src = self.select(tuple(self.basis.moduli.index(m) for m in source))
        scaled = src.mul(x, self.tensor([[v] for v in hat_inverse]))
        out = None
        for i in range(len(source)):
            term = target.mul(ring.reduce(scaled[..., i:i + 1, :], target.q, target.qf),
                              self.tensor([[h] for h in hat_mod[i]]))
            out = term if out is None else target.add(out, term)
        assert out is not None
        return out

    # --- linear operations ------------------------------------------------------------------------------------
    def _align(self, a: Ct, towers: int) -> Ct:
        """LevelReduceInternal: drop the last towers."""
        if a.towers == towers:
            return a
        return replace(a, data=a.data[:, :towers], level=a.level + a.towers - towers)

    def add(self, a: Ct, b: Ct, subtract: bool = False) -> Ct:
        """EvalAdd/EvalSub of two ciphertexts (FIXEDMANUAL: the one with more towers loses its extra ones)."""
        towers = min(a.towers, b.towers)
        a, b = self._align(a, towers), self._align(b, towers)
        basis = self.q(towers)
        size = max(a.data.shape[0], b.data.shape[0])
        x, y = _pad(a.data, size), _pad(b.data, size)
        return replace(a, data=basis.sub(x, y) if subtract else basis.add(x, y))

    def _plain(self, a: Ct, p: Pt) -> torch.Tensor:
        """MorphPlaintext + AdjustForAddOrSub: the plaintext's towers cut to the ciphertext's, raised to its depth."""
        data, basis = p.data[:a.towers], self.q(a.towers)
        if p.noise_scale_deg < a.noise_scale_deg:
            factor = int(self.scale + 0.5)
            power = self.tensor([[pow(factor, a.noise_scale_deg - p.noise_scale_deg, m)] for m in basis.moduli])
            data = basis.mul(data, power)
        elif p.noise_scale_deg > a.noise_scale_deg:
            raise CkksError("plaintext cannot be encoded at a larger depth than that of the ciphertext")
        return data

    def add_plain(self, a: Ct, p: Pt) -> Ct:
        basis = self.q(a.towers)
        return replace(a, data=torch.cat((basis.add(a.data[:1], self._plain(a, p)[None]), a.data[1:])))

    def mul_plain(self, a: Ct, p: Pt) -> Ct:
        """EvalMult(ct, pt): every component times the plaintext; OpenFHE squares the scaling factor."""
        if p.data.shape[0] < a.towers:
            raise CkksError("plaintext has fewer towers than the ciphertext")
        basis = self.q(a.towers)
        return replace(a, data=basis.mul(a.data, p.data[:a.towers][None]),
                       noise_scale_deg=a.noise_scale_deg + p.noise_scale_deg,
                       scaling_factor=a.scaling_factor * a.scaling_factor)

    def add_scalar(self, a: Ct, value: float) -> Ct:
        """EvalAdd(ct, double): GetElementForEvalAddOrSub's constant added to every NTT slot of c0."""
        basis = self.q(a.towers)
        constant = self.tensor([[c] for c in self._add_constant(a, value, basis.moduli)]).unsqueeze(0)
        return replace(a, data=torch.cat((basis.add(a.data[:1], constant.expand(1, -1, self.n)), a.data[1:])))

    def _add_constant(self, a: Ct, value: float, moduli: tuple[int, ...]) -> list[int]:
        """GetElementForEvalAddOrSub: value * scale rounded half away from zero (as OpenFHE 1.6.1 does), times
        scale^(depth - 1)."""
        res = abs(value * self.scale)
        log_approx = 0
        if res > 0:
            log_sf = math.ceil(math.log2(res))
            log_approx = log_sf - min(log_sf, MAX_BITS_IN_WORD)
        scaled = _round_half_away(value * self.scale / 2.0 ** log_approx)
        constants = [scaled * pow(2, log_approx, m) % m for m in moduli]
        factor = int(self.scale + 0.5)
        return [c * pow(factor, a.noise_scale_deg - 1, m) % m for c, m in zip(constants, moduli, strict=True)]

    def mul_scalar(self, a: Ct, value: float) -> Ct:
        """EvalMult(ct, double) under FIXEDMANUAL: GetElementForEvalMult's factors, one more level of scale."""
        basis = self.q(a.towers)
        factors = self.tensor([[f] for f in _mult_factors(value, self.scale, basis.moduli)]).unsqueeze(0)
        return replace(a, data=basis.mul(a.data, factors), noise_scale_deg=a.noise_scale_deg + 1,
                       scaling_factor=a.scaling_factor * self.scale)

    # --- multiplication, rescaling, key switching -------------------------------------------------------------
    def mul(self, a: Ct, b: Ct) -> Ct:
        """EvalMultNoRelin of two 2-component ciphertexts: (a0 b0, a0 b1 + a1 b0, a1 b1)."""
        if a.data.shape[0] != 2 or b.data.shape[0] != 2:
            raise CkksError("multiply relinearized ciphertexts only")
        towers = min(a.towers, b.towers)
        a, b = self._align(a, towers), self._align(b, towers)
        basis = self.q(towers)
        (a0, a1), (b0, b1) = a.data, b.data
        data = torch.stack((basis.mul(a0, b0), basis.add(basis.mul(a0, b1), basis.mul(a1, b0)), basis.mul(a1, b1)))
        return replace(a, data=data, noise_scale_deg=a.noise_scale_deg + b.noise_scale_deg,
                       scaling_factor=a.scaling_factor * b.scaling_factor)

    def rescale(self, a: Ct) -> Ct:
        """ModReduceInternal with DropLastElementAndScale, once."""
        towers = a.towers
        if towers < 2:
            raise CkksError("no tower left to rescale by")
        basis, kept = self.q(towers), self.q(towers - 1)
        last_modulus = basis.moduli[-1]
        constants, inverses = _rescale_tables(basis.moduli)
        last = self.select((towers - 1,)).intt(a.data[:, towers - 1:])  # (components, 1, N)
        centered = torch.where(last > last_modulus >> 1, last - last_modulus, last)  # SwitchModulus's lift
        spread = ring.reduce(centered, kept.q, kept.qf)
        spread = kept.ntt(kept.mul(spread, self.tensor([[c] for c in constants])))
        data = kept.add(kept.mul(a.data[:, :towers - 1], self.tensor([[v] for v in inverses])), spread)
        return replace(a, data=data, level=a.level + 1, noise_scale_deg=a.noise_scale_deg - 1,
                       scaling_factor=a.scaling_factor / self.scale)

    def key_switch(self, c: torch.Tensor, key: SwitchKey) -> tuple[torch.Tensor, torch.Tensor]:
        """KeySwitchHYBRID::KeySwitchCore of one component c (towers, N): digits, inner product, ApproxModDown."""
        towers = c.shape[0]
        extended = self._key_switch_extended(c, key)
        return self._mod_down(extended[0], towers), self._mod_down(extended[1], towers)

    def _key_switch_extended(self, c: torch.Tensor, key: SwitchKey) -> torch.Tensor:
        """The digits of c (EvalKeySwitchPrecomputeCore) times the key (EvalFastKeySwitchCoreExt): (2, QlP, N)."""
        towers = c.shape[0]
        digits = min(math.ceil(towers / self.alpha), self.context.dnum)
        extended = self.qp(towers)
        qp_index = list(range(towers)) + list(range(self.size_q, self.size_q + self.size_p))
        acc: torch.Tensor | None = None
        for j in range(digits):
            part = list(range(self.alpha * j, min(self.alpha * (j + 1), towers)))
            others = [i for i in qp_index if i not in part]
            coeff = self.select(tuple(part)).intt(c[part])
            target = self.select(tuple(others))
            switched = target.ntt(self._switch_basis(coeff, tuple(self.basis.moduli[i] for i in part), target))
            digit = torch.empty((len(qp_index), self.n), dtype=torch.int64, device=self.device)
            position = {m: k for k, m in enumerate(qp_index)}
            digit[[position[i] for i in part]] = c[part]
            digit[[position[i] for i in others]] = switched
            product = extended.mul(digit[None], key.data[j][:, qp_index])  # (2, QlP, N)
            acc = product if acc is None else extended.add(acc, product)
        assert acc is not None
        return acc

    def _mod_down(self, x: torch.Tensor, towers: int) -> torch.Tensor:
        """ApproxModDown: (x_Q - ApproxSwitchCRTBasis(x_P -> Q)) * P^-1 mod each q_i."""
        basis = self.q(towers)
        coeff = self.p.intt(x[towers:])
        switched = basis.ntt(self._switch_basis(coeff, self.p_moduli, basis))
        p_inverse = self.tensor([[pow(math.prod(self.p_moduli), -1, m)] for m in basis.moduli])
        return basis.mul(basis.sub(x[:towers], switched), p_inverse)

    def relinearize(self, a: Ct, key: SwitchKey) -> Ct:
        if a.data.shape[0] != 3:
            raise CkksError("only a 3-component product is relinearized")
        basis = self.q(a.towers)
        b0, b1 = self.key_switch(a.data[2], key)
        return replace(a, data=torch.stack((basis.add(a.data[0], b0), basis.add(a.data[1], b1))))

    def rotate(self, a: Ct, steps: int, keys: dict[int, SwitchKey]) -> Ct:
        """EvalRotate as OpenFHE 1.6.1 computes it (its EvalFastRotation): c1's digits times the automorphism's
        key over Q*P, the NTT slots of that permuted, then ApproxModDown, plus c0 permuted. (Permuting after
        ApproxModDown, as 1.5's EvalAutomorphism reads, decrypts the same but differs in the last bits.)"""
        if a.data.shape[0] != 2:
            raise CkksError("ciphertext should be relinearized before rotating")
        index = automorphism_index(steps, self.order)
        if index not in keys:
            raise CkksError(f"no rotation key for step {steps}")
        towers, basis = a.towers, self.q(a.towers)
        permutation = torch.from_numpy(_automorphism_map(self.n, index)).to(self.device)
        extended = self._key_switch_extended(a.data[1], keys[index]).index_select(-1, permutation)
        c0 = basis.add(a.data[0].index_select(-1, permutation), self._mod_down(extended[0], towers))
        return replace(a, data=torch.stack((c0, self._mod_down(extended[1], towers))))

    # --- import and export ------------------------------------------------------------------------------------
    def import_ciphertext(self, ct: serial.Ciphertext) -> Ct:
        if any(e.format != serial.EVALUATION for e in ct.elements):
            raise CkksError("ciphertexts must be in EVALUATION form")
        data = np.stack([e.residues() for e in ct.elements])
        return Ct(torch.from_numpy(data.view(np.int64)).to(self.device), ct.level, ct.noise_scale_deg,
                  ct.scaling_factor, ct.slots)

    def import_key(self, key: serial.EvalKey) -> SwitchKey:
        data = np.stack([np.stack([b.residues(), a.residues()]) for b, a in zip(key.b, key.a, strict=True)])
        return SwitchKey(torch.from_numpy(data.view(np.int64)).to(self.device))

    def export_ciphertext(self, a: Ct, key_tag: str) -> serial.Ciphertext:
        towers = self.context.ring.towers[:a.towers]
        values = a.data.cpu().numpy().view(np.uint64)
        elements = []
        for component in values:
            params = self.context.ring if a.towers == self.size_q else serial.DcrtParams.of(towers)
            elements.append(serial.DcrtPoly([serial.NativePoly(v.copy(), t) for v, t in zip(component, towers,
                                                                                             strict=True)], params))
        return serial.Ciphertext(self.context, key_tag, elements, a.slots, a.level, a.noise_scale_deg,
                                 a.scaling_factor)


def special_moduli(key: serial.EvalKey, size_q: int) -> tuple[int, ...]:
    """The special primes P: the towers of a key-switching key after the size_q towers of Q."""
    return tuple(t.params.modulus for t in key.b[0].towers[size_q:])


def _pad(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[0] == size:
        return x
    return torch.cat((x, torch.zeros((size - x.shape[0], *x.shape[1:]), dtype=x.dtype, device=x.device)))


@lru_cache(maxsize=1024)
def _hat_tables(source: tuple[int, ...], target: tuple[int, ...]) -> tuple[list[int], list[list[int]]]:
    product = math.prod(source)
    hats = [product // m for m in source]
    return [pow(h % m, -1, m) for h, m in zip(hats, source, strict=True)], [[h % t for t in target] for h in hats]


@lru_cache(maxsize=1024)
def _rescale_tables(moduli: tuple[int, ...]) -> tuple[list[int], list[int]]:
    """QlQlInvModqlDivqlModq and qlInvModq for dropping the last of `moduli` (CryptoParametersCKKSRNS)."""
    last, rest = moduli[-1], moduli[:-1]
    product = math.prod(rest)
    value = pow(product, -1, last) * product // last
    return [value % m for m in rest], [pow(last, -1, m) for m in rest]


def _round_half_away(x: float) -> int:
    """std::llround: the nearest integer, halves away from zero (exact: x - floor(x) is exact in binary64)."""
    magnitude = abs(x)
    whole = math.floor(magnitude)
    rounded = whole + (1 if magnitude - whole >= 0.5 else 0)
    return -rounded if x < 0 else rounded


def _mult_factors(value: float, scale: float, moduli: tuple[int, ...]) -> list[int]:
    """GetElementForEvalMult (64-bit native integers, 128-bit intermediate)."""
    res = abs(value * scale)
    log_approx = 0
    if res > 0:
        log_sf = math.ceil(math.log2(res))
        log_approx = log_sf - min(log_sf, 125)
    approx = 2.0 ** log_approx
    large = math.trunc(value / approx * scale + 0.5)
    factors = [large % m for m in moduli]
    if log_approx > 0:
        factors = [f * pow(2, log_approx, m) % m for f, m in zip(factors, moduli, strict=True)]
    return factors
