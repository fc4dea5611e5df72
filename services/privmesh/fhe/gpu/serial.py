"""OpenFHE 1.6's serialized CKKS objects (crypto context, ciphertext, public key, evaluation keys) as Python
objects whose polynomials are numpy arrays of RNS residues, and back, byte for byte.

The layout (gpu/README.md has it in prose) is OpenFHE's `save` functions in order: a ciphertext carries its whole
crypto context, its key tag, its polynomials (one `DcrtPoly` per component, one `NativePoly` per RNS tower, in the
NTT form OpenFHE calls EVALUATION), then slots, level, noise-scale degree and scaling factor. Objects shared in C++
(the ring parameters of a tower, the context) are shared here too, so they are written once and referred to after,
as cereal does. The layout is OpenFHE's, fixed per version: `SUPPORTED_OPENFHE` is the one this was read from, and
every read checks the class versions and consumes every byte.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from privmesh.fhe.gpu.cereal import Archive, FormatError

SUPPORTED_OPENFHE = "1.6.1"
EVALUATION, COEFFICIENT = 0, 1  # OpenFHE's Format enum
MAX_RING = 1 << 17
MAX_TOWERS = 128
CKKS_PARAMS = "lbcrypto::CryptoParametersCKKSRNS"
CKKS_SCHEME = "lbcrypto::SchemeCKKSRNS"
RELIN_KEY = "lbcrypto::EvalKeyRelinImpl<lbcrypto::DCRTPoly>"

__all__ = ["COEFFICIENT", "EVALUATION", "Ciphertext", "Context", "DcrtParams", "DcrtPoly", "EvalKey", "FormatError",
           "NativeParams", "NativePoly", "PublicKey", "dumps", "loads"]


# --- integers -------------------------------------------------------------------------------------------------
def _native(ar: Archive, value: int = 0) -> int:
    ar.version("NativeInteger")
    return ar.u64(value)


def _big(ar: Archive, value: int = 0) -> int:
    """OpenFHE's multiprecision integer: 64-bit limbs (least significant first, at least one) and its bit length."""
    ar.version("BigInteger")
    limbs = [(value >> (64 * i)) & (2**64 - 1) for i in range(max(1, (value.bit_length() + 63) // 64))]
    limbs = ar.sequence(limbs, lambda x: ar.u64(x or 0), limit=64)
    number = sum(limb << (64 * i) for i, limb in enumerate(limbs))
    canonical = len(limbs) == max(1, (number.bit_length() + 63) // 64)
    if ar.u32(value.bit_length()) != number.bit_length() or not canonical:
        raise FormatError("a multiprecision integer is not in its canonical form")
    return number


# --- ring parameters ------------------------------------------------------------------------------------------
@dataclass(eq=False)
class NativeParams:
    """One tower's ring: cyclotomic order 2N, ring dimension N, modulus q and OpenFHE's 2N-th root of unity mod q."""

    order: int
    ring_dim: int
    modulus: int
    root: int
    big_modulus: int = 0
    big_root: int = 0


@dataclass(eq=False)
class DcrtParams:
    """A DCRT ring: its towers (shared with the context's where OpenFHE shares them) and Q = their product."""

    order: int
    ring_dim: int
    towers: list[NativeParams]
    modulus: int = 0
    root: int = 0
    big_modulus: int = 0
    big_root: int = 0

    @classmethod
    def of(cls, towers: list[NativeParams]) -> DcrtParams:
        product = 1
        for tower in towers:
            product *= tower.modulus
        return cls(towers[0].order, towers[0].ring_dim, list(towers), product)


def _elem_params(ar: Archive, obj: Any, integer: Any, type_name: str) -> tuple[int, ...]:
    ar.version(type_name)
    values = (obj.order, obj.ring_dim, obj.modulus, obj.root, obj.big_modulus, obj.big_root) if obj else (0,) * 6
    order, ring_dim = ar.u32(values[0]), ar.u32(values[1])
    if ar.reading and (ring_dim > MAX_RING or order != 2 * ring_dim or ring_dim & (ring_dim - 1)):
        raise FormatError(f"ring dimension {ring_dim} (order {order}) is not a power of two up to {MAX_RING}")
    return (order, ring_dim, *(integer(ar, v) for v in values[2:]))


def _native_params(ar: Archive, obj: NativeParams | None) -> NativeParams:
    def body(o: NativeParams | None) -> NativeParams:
        ar.version("ILNativeParams")
        return NativeParams(*_elem_params(ar, o, _native, "ElemParams<NativeInteger>"))

    _static(ar)
    return ar.shared(obj, body)


def _dcrt_params(ar: Archive, obj: DcrtParams | None) -> DcrtParams:
    def body(o: DcrtParams | None) -> DcrtParams:
        ar.version("ILDCRTParams")
        order, ring_dim, modulus, root, big_modulus, big_root = _elem_params(ar, o, _big, "ElemParams<BigInteger>")
        towers = ar.sequence(o.towers if o else None, lambda t: _native_params(ar, t), limit=MAX_TOWERS)
        return DcrtParams(order, ring_dim, towers, modulus, root, big_modulus, big_root)

    _static(ar)
    return ar.shared(obj, body)


def _static(ar: Archive) -> None:
    """The header of a pointer to a non-polymorphic object (OpenFHE never writes a null one where this is used)."""
    if ar.polymorphic("") != "":
        raise FormatError("a pointer that must hold its own type holds another")


# --- polynomials ----------------------------------------------------------------------------------------------
@dataclass(eq=False)
class NativePoly:
    values: NDArray[np.uint64]  # uint64 residues, length N
    params: NativeParams
    format: int = EVALUATION


@dataclass(eq=False)
class DcrtPoly:
    towers: list[NativePoly]
    params: DcrtParams
    format: int = EVALUATION

    def residues(self) -> NDArray[np.uint64]:
        """The towers as one (towers x N) uint64 array."""
        return np.stack([t.values for t in self.towers])


def _native_poly(ar: Archive, obj: NativePoly | None) -> NativePoly:
    ar.version("NativePoly")

    def vector(_: Any) -> tuple[NDArray[np.uint64], int]:
        ar.version("NativeVector")
        values = ar.words(obj.values if obj else None, limit=MAX_RING)
        modulus = _native(ar, obj.params.modulus if obj else 0)
        if ar.reading and (modulus < 2 or modulus >= 1 << 62 or (values.size and int(values.max()) >= modulus)):
            raise FormatError("a residue is not below its modulus, or the modulus is out of range")
        return values, modulus

    _static(ar)
    values, modulus = ar.unique(None, vector)
    fmt = ar.i32(obj.format if obj else 0)
    params = _native_params(ar, obj.params if obj else None)
    if ar.reading and (params.modulus != modulus or params.ring_dim != values.size or fmt not in (0, 1)):
        raise FormatError("a tower's residues do not match its ring parameters")
    return NativePoly(values, params, fmt)


def _dcrt_poly(ar: Archive, obj: DcrtPoly | None) -> DcrtPoly:
    ar.version("DCRTPoly")
    towers = ar.sequence(obj.towers if obj else None, lambda t: _native_poly(ar, t), limit=MAX_TOWERS)
    fmt = ar.i32(obj.format if obj else 0)
    params = _dcrt_params(ar, obj.params if obj else None)
    if ar.reading and [t.params.modulus for t in towers] != [t.modulus for t in params.towers]:
        raise FormatError("a polynomial's towers do not match its ring parameters")
    return DcrtPoly(towers, params, fmt)


def _polys(ar: Archive, items: list[DcrtPoly] | None) -> list[DcrtPoly]:
    return ar.sequence(items, lambda p: _dcrt_poly(ar, p), limit=64)


# --- crypto context -------------------------------------------------------------------------------------------
_RLWE_FIELDS = (("dp", "f32"), ("am", "f32"), ("ns", "u64"), ("rw", "u32"), ("nest", "f64"), ("muld", "u32"),
                ("addc", "u32"), ("kswc", "u32"), ("phops", "u32"), ("md", "u32"), ("mo", "i32"), ("pmo", "i32"),
                ("mmo", "i32"), ("exm", "i32"), ("dnm", "i32"), ("slv", "i32"), ("fdp", "f64"), ("ss", "f64"),
                ("aq", "f64"), ("tp", "u32"))
_RNS_FIELDS = (("ks", "i32"), ("rs", "i32"), ("encs", "i32"), ("muls", "i32"), ("dnum", "u32"), ("ab", "u32"),
               ("eb", "u32"), ("ccl", "i32"), ("cd", "u32"), ("rws", "u32"), ("cdt", "i32"))
_ENCODING_FIELDS = (("m", "u64"), ("ru", "native"), ("bm", "native"), ("bru", "native"), ("g", "u32"),
                    ("bs", "u32"))
SCALING_TECHNIQUES = {0: "FIXEDMANUAL", 1: "FIXEDAUTO", 2: "FLEXIBLEAUTO", 3: "FLEXIBLEAUTOEXT", 4: "NORESCALE"}
KEY_SWITCH_TECHNIQUES = {0: "INVALID", 1: "BV", 2: "HYBRID"}


def _fields(ar: Archive, values: dict[str, Any] | None, spec: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    out = {}
    for name, kind in spec:
        value = values[name] if values else 0
        out[name] = _native(ar, value) if kind == "native" else getattr(ar, kind)(value)
    return out


@dataclass(eq=False)
class CryptoParams:
    """CryptoParametersCKKSRNS: the Q ring, the encoding parameters and the scheme's settings, as OpenFHE keeps them."""

    ring: DcrtParams
    encoding: dict[str, Any]
    rlwe: dict[str, Any]
    rns: dict[str, Any]


@dataclass(eq=False)
class Scheme:
    enabled: int  # the PKE/KEYSWITCH/LEVELEDSHE... feature bits


@dataclass(eq=False)
class Context:
    """A CKKS crypto context as OpenFHE serializes it."""

    params: CryptoParams
    scheme: Scheme
    scheme_id: int

    @property
    def ring(self) -> DcrtParams:
        return self.params.ring

    @property
    def scaling_technique(self) -> str:
        return SCALING_TECHNIQUES.get(self.params.rns["rs"], str(self.params.rns["rs"]))

    @property
    def key_switch_technique(self) -> str:
        return KEY_SWITCH_TECHNIQUES.get(self.params.rns["ks"], str(self.params.rns["ks"]))

    @property
    def dnum(self) -> int:
        return int(self.params.rns["dnum"])

    @property
    def scaling_mod_size(self) -> int:
        return int(self.params.encoding["m"])  # CKKS keeps log2 of the scaling factor in the plaintext modulus

    @property
    def batch_size(self) -> int:
        return int(self.params.encoding["bs"])


def _crypto_params(ar: Archive, obj: CryptoParams | None) -> CryptoParams:
    def encoding(enc: dict[str, Any] | None) -> dict[str, Any]:
        ar.version("EncodingParamsImpl")
        return _fields(ar, enc, _ENCODING_FIELDS)

    def body(c: CryptoParams | None) -> CryptoParams:
        for name in ("CryptoParametersCKKSRNS", "CryptoParametersRNS", "CryptoParametersRLWE",
                     "CryptoParametersBase"):
            ar.version(name)
        ring = _dcrt_params(ar, c.ring if c else None)
        _static(ar)
        enc = ar.shared(c.encoding if c else None, encoding)
        rlwe = _fields(ar, c.rlwe if c else None, _RLWE_FIELDS)
        rns = _fields(ar, c.rns if c else None, _RNS_FIELDS)
        return c if c else CryptoParams(ring, enc, rlwe, rns)

    if ar.polymorphic(CKKS_PARAMS) != CKKS_PARAMS:
        raise FormatError("not CKKS crypto parameters")
    return ar.shared(obj, body)


def _scheme(ar: Archive, obj: Scheme | None) -> Scheme:
    def body(sch: Scheme | None) -> Scheme:
        for name in ("SchemeCKKSRNS", "SchemeRNS", "SchemeBase"):
            ar.version(name)
        if ar.polymorphic(None) is not None or ar.polymorphic(None) is not None:
            raise FormatError("bootstrapping or scheme-switching state is not supported")
        enabled = ar.u32(sch.enabled if sch else 0)
        return sch if sch else Scheme(enabled)

    if ar.polymorphic(CKKS_SCHEME) != CKKS_SCHEME:
        raise FormatError("not the CKKS scheme")
    return ar.shared(obj, body)


def _context(ar: Archive, ctx: Context | None) -> Context:
    def body(c: Context | None) -> Context:
        ar.version("CryptoContextImpl", 1)
        params = _crypto_params(ar, c.params if c else None)
        scheme = _scheme(ar, c.scheme if c else None)
        scheme_id = ar.i32(c.scheme_id if c else 0)
        return c if c else Context(params, scheme, scheme_id)

    _static(ar)
    return ar.shared(ctx, body)


def _crypto_object(ar: Archive, ctx: Context | None, key_tag: str) -> tuple[Context, str]:
    ar.version("CryptoObject")
    context = _context(ar, ctx)
    return context, ar.string(key_tag)


# --- top-level objects ----------------------------------------------------------------------------------------
@dataclass(eq=False)
class Ciphertext:
    context: Context
    key_tag: str
    elements: list[DcrtPoly]
    slots: int
    level: int
    noise_scale_deg: int
    scaling_factor: float
    hops: int = 0
    scaling_factor_int: int = 1
    encoding: int = 4  # CKKS_PACKED_ENCODING
    metadata: dict[str, Any] = field(default_factory=dict)


def _ciphertext_body(ar: Archive, ct: Ciphertext | None) -> Ciphertext:
    ar.version("CiphertextImpl", 1)
    context, key_tag = _crypto_object(ar, ct.context if ct else None, ct.key_tag if ct else "")
    elements = _polys(ar, ct.elements if ct else None)
    slots = ar.u32(ct.slots if ct else 0)
    level = ar.u32(ct.level if ct else 0)
    hops = ar.u32(ct.hops if ct else 0)
    degree = ar.u32(ct.noise_scale_deg if ct else 0)
    scale = ar.f64(ct.scaling_factor if ct else 0.0)
    scale_int = _native(ar, ct.scaling_factor_int if ct else 0)
    encoding = ar.i32(ct.encoding if ct else 0)
    ar.shared(ct.metadata if ct else None, lambda m: _empty_map(ar, m))
    return Ciphertext(context, key_tag, elements, slots, level, degree, scale, hops, scale_int, encoding)


def _empty_map(ar: Archive, found: dict[str, Any] | None) -> dict[str, Any]:
    """A ciphertext's metadata map: empty in everything CKKS inference produces (anything else is refused)."""
    if found:
        raise FormatError("ciphertext metadata is not supported")
    ar.size(0, limit=0)
    return {}


@dataclass(eq=False)
class PublicKey:
    context: Context
    key_tag: str
    h: list[DcrtPoly]


@dataclass(eq=False)
class EvalKey:
    """A key-switching key: per digit, (a, b) over the ring Q*P (OpenFHE's relinearization/rotation keys)."""

    context: Context
    key_tag: str
    a: list[DcrtPoly]
    b: list[DcrtPoly]


def _eval_key(ar: Archive, key: EvalKey | None) -> EvalKey:
    def body(k: EvalKey | None) -> EvalKey:
        for name in ("EvalKeyRelinImpl", "EvalKeyImpl", "Key"):
            ar.version(name)
        context, tag = _crypto_object(ar, k.context if k else None, k.key_tag if k else "")
        a = _polys(ar, k.a if k else None)
        b = _polys(ar, k.b if k else None)
        return EvalKey(context, tag, a, b)

    if ar.polymorphic(RELIN_KEY) != RELIN_KEY:
        raise FormatError("not a relinearization-style evaluation key")
    return ar.shared(key, body)


def load_ciphertext(data: bytes) -> Ciphertext:
    ar = Archive(data)
    _static(ar)
    ct = ar.shared(None, lambda _: _ciphertext_body(ar, None))
    ar.done()
    return ct


def dump_ciphertext(ct: Ciphertext) -> bytes:
    ar = Archive()
    _static(ar)
    ar.shared(ct, lambda c: _ciphertext_body(ar, c))
    return ar.getvalue()


def _public_key_body(ar: Archive, pk: PublicKey | None) -> PublicKey:
    for name in ("PublicKeyImpl", "Key"):
        ar.version(name)
    context, tag = _crypto_object(ar, pk.context if pk else None, pk.key_tag if pk else "")
    return PublicKey(context, tag, _polys(ar, pk.h if pk else None))


def load_public_key(data: bytes) -> PublicKey:
    ar = Archive(data)
    _static(ar)
    pk = ar.shared(None, lambda _: _public_key_body(ar, None))
    ar.done()
    return pk


def dump_public_key(pk: PublicKey) -> bytes:
    ar = Archive()
    _static(ar)
    ar.shared(pk, lambda p: _public_key_body(ar, p))
    return ar.getvalue()


def load_context(data: bytes) -> Context:
    ar = Archive(data)
    ctx = _context(ar, None)
    ar.done()
    return ctx


def dump_context(ctx: Context) -> bytes:
    ar = Archive()
    _context(ar, ctx)
    return ar.getvalue()


def load_mult_keys(data: bytes) -> dict[str, list[EvalKey]]:
    """`SerializeEvalMultKeyString`'s bytes: key tag -> relinearization keys."""
    ar = Archive(data)
    out = {}
    for _ in range(ar.size(limit=64)):
        tag = ar.string()
        out[tag] = ar.sequence(None, lambda _: _eval_key(ar, None), limit=64)
    ar.done()
    return out


def dump_mult_keys(keys: dict[str, list[EvalKey]]) -> bytes:
    ar = Archive()
    ar.size(len(keys))
    for tag, items in keys.items():
        ar.string(tag)
        ar.sequence(items, lambda k: _eval_key(ar, k))
    return ar.getvalue()


def load_rotation_keys(data: bytes) -> dict[str, dict[int, EvalKey]]:
    """`SerializeEvalAutomorphismKeyString`'s bytes: key tag -> automorphism index -> key."""
    ar = Archive(data)
    out: dict[str, dict[int, EvalKey]] = {}

    def keymap(_: Any) -> dict[int, EvalKey]:
        found = {}
        for _ in range(ar.size(limit=1 << 12)):
            index = ar.u32()
            found[index] = _eval_key(ar, None)
        return found

    for _ in range(ar.size(limit=64)):
        tag = ar.string()
        out[tag] = ar.shared(None, keymap)
    ar.done()
    return out


def dump_rotation_keys(keys: dict[str, dict[int, EvalKey]]) -> bytes:
    ar = Archive()
    ar.size(len(keys))

    def keymap(found: dict[int, EvalKey] | None) -> dict[int, EvalKey]:
        assert found is not None
        ar.size(len(found))
        for index, key in found.items():
            ar.u32(index)
            _eval_key(ar, key)
        return found

    for tag, found in keys.items():
        ar.string(tag)
        ar.shared(found, keymap)
    return ar.getvalue()


def loads(data: bytes) -> Ciphertext:
    return load_ciphertext(data)


def dumps(ct: Ciphertext) -> bytes:
    return dump_ciphertext(ct)

