"""The torch CKKS evaluator against OpenFHE: its serialization read and written byte for byte, exact modular
arithmetic, each operation and every model circuit bit-identical to OpenFHE's (same residues, level, degree and
scaling factor), and the written outputs decrypting with OpenFHE. Small rings (HEStd_NotSet); slow tests at 2^16."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import openfhe as o
import pytest
import torch

from privmesh.fhe.circuit import Circuit, Packing
from privmesh.fhe.gpu import ckks, ring, serial
from privmesh.fhe.gpu.cereal import FormatError
from privmesh.fhe.gpu.evaluator import DeviceMemoryExceeded, TorchEvaluator, pick_device
from privmesh.fhe.model import load_model
from privmesh.fhe.openfhe_evaluator import OpenFheEvaluator
from privmesh.fhe.params import CkksParams, create_context
from tests.fhe.conftest import small_model_files

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
pytestmark = pytest.mark.insecure_params


class Keys:
    """A context, a key pair, its relinearization and rotation keys, and the torch engine over them."""

    def __init__(self, params: CkksParams) -> None:
        self.cc = create_context(params)
        self.kp = self.cc.KeyGen()
        self.cc.EvalMultKeyGen(self.kp.secretKey)
        self.cc.EvalRotateKeyGen(self.kp.secretKey, list(params.rotation_indices))
        self.tag = self.kp.publicKey.GetKeyTag()
        self.mult_bytes = o.SerializeEvalMultKeyString(o.BINARY, self.tag)
        self.rotation_bytes = o.SerializeEvalAutomorphismKeyString(o.BINARY, self.tag)
        self.evaluator = TorchEvaluator(self.cc, self.kp.publicKey, self.mult_bytes, self.rotation_bytes, DEVICE)
        self.engine = self.evaluator.engine

    def encrypt(self, values: list[float]) -> Any:
        return self.cc.Encrypt(self.kp.publicKey, self.cc.MakeCKKSPackedPlaintext(values))

    def mine(self, ciphertext: Any) -> ckks.Ct:
        return self.evaluator.load(o.Serialize(ciphertext, o.BINARY))

    def decrypt(self, ct: ckks.Ct, count: int) -> np.ndarray:
        back = o.DeserializeCiphertextString(self.evaluator.dump(ct), o.BINARY)
        plaintext = self.cc.Decrypt(self.kp.secretKey, back)
        plaintext.SetLength(count)
        return np.array(plaintext.GetRealPackedValue())

    def assert_identical(self, mine: ckks.Ct, theirs: Any) -> None:
        """Same residues, level, noise-scale degree and scaling factor; and the same bytes once written."""
        raw = o.Serialize(theirs, o.BINARY)
        ref = serial.load_ciphertext(raw)
        expected = np.stack([e.residues() for e in ref.elements]).view(np.int64)
        assert mine.data.shape == expected.shape
        assert np.array_equal(mine.data.cpu().numpy(), expected)
        assert (mine.level, mine.noise_scale_deg, mine.scaling_factor) == \
            (ref.level, ref.noise_scale_deg, ref.scaling_factor)


PARAMS = CkksParams(ring_dimension=1024, multiplicative_depth=3, scaling_mod_size=40, first_mod_size=50,
                    batch_size=16, rotation_indices=(1, 2, -1, 4), security_level="HEStd_NotSet",
                    num_large_digits=2)


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(PARAMS)


# --- serialization -------------------------------------------------------------------------------------------
def test_every_object_round_trips_byte_for_byte(keys: Keys) -> None:
    ct = keys.encrypt([1.0, -2.0, 0.5])
    cases = [
        (o.Serialize(ct, o.BINARY), serial.load_ciphertext, serial.dump_ciphertext),
        (o.Serialize(keys.cc.Rescale(keys.cc.EvalMult(ct, 2.0)), o.BINARY), serial.load_ciphertext,
         serial.dump_ciphertext),
        (o.Serialize(keys.cc.EvalMultNoRelin(ct, ct), o.BINARY), serial.load_ciphertext, serial.dump_ciphertext),
        (o.Serialize(keys.kp.publicKey, o.BINARY), serial.load_public_key, serial.dump_public_key),
        (o.Serialize(keys.cc, o.BINARY), serial.load_context, serial.dump_context),
        (keys.mult_bytes, serial.load_mult_keys, serial.dump_mult_keys),
        (keys.rotation_bytes, serial.load_rotation_keys, serial.dump_rotation_keys),
    ]
    for raw, load, dump in cases:
        assert dump(load(raw)) == raw  # type: ignore[operator]


def test_parsed_ciphertext_holds_openfhe_parameters(keys: Keys) -> None:
    ct = serial.load_ciphertext(o.Serialize(keys.encrypt([1.0]), o.BINARY))
    assert ct.context.ring.ring_dim == 1024 and len(ct.context.ring.towers) == 4
    assert ct.context.scaling_technique == "FIXEDMANUAL" and ct.context.key_switch_technique == "HYBRID"
    assert (ct.level, ct.noise_scale_deg, ct.scaling_factor, ct.slots) == (0, 1, 2.0 ** 40, 16)
    for tower in ct.context.ring.towers:  # the roots OpenFHE chose are the minimal ones we derive for P
        assert ring.minimal_root_of_unity(tower.order, tower.modulus) == tower.root
    residues = ct.elements[0].residues()
    assert all(int(row.max()) < t.modulus for row, t in zip(residues, ct.context.ring.towers, strict=True))


def test_bad_bytes_are_refused_without_allocating(keys: Keys) -> None:
    raw = bytearray(o.Serialize(keys.encrypt([1.0]), o.BINARY))
    with pytest.raises(FormatError, match="truncated"):
        serial.load_ciphertext(bytes(raw[:-9]))
    with pytest.raises(FormatError, match="left after"):
        serial.load_ciphertext(bytes(raw) + b"\0")
    ct = serial.load_ciphertext(bytes(raw))
    first = ct.elements[0].towers[0].values[:1].tobytes()
    ct.elements[0].towers[0].values[0] = np.uint64(ct.context.ring.towers[0].modulus)  # not a residue
    with pytest.raises(FormatError, match="not below its modulus"):
        serial.load_ciphertext(serial.dump_ciphertext(ct))
    at = bytes(raw).index((1024).to_bytes(8, "little") + first)
    raw[at:at + 8] = (1 << 40).to_bytes(8, "little")  # a residue count of 2^40
    with pytest.raises(FormatError, match="exceeds"):
        serial.load_ciphertext(bytes(raw))
    with pytest.raises(FormatError):
        serial.load_ciphertext(b"\x00" + bytes(20))


# --- arithmetic ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [20, 31, 40, 50, 59, 60])
def test_modular_product_is_exact(bits: int) -> None:
    rng = random.Random(bits)
    moduli = [rng.randrange(2 ** (bits - 1), 2 ** bits) | 1 for _ in range(3)]
    a = [[m - 1, 0, m - 1, m // 2] + [rng.randrange(m) for _ in range(4000)] for m in moduli]
    b = [[m - 1, m - 1, 1, m // 2 + 1] + [rng.randrange(m) for _ in range(4000)] for m in moduli]
    q = torch.tensor([[m] for m in moduli])
    expected = [[x * y % m for x, y in zip(ra, rb, strict=True)] for ra, rb, m in zip(a, b, moduli, strict=True)]
    assert ring.mul(torch.tensor(a), torch.tensor(b), q, q.double()).tolist() == expected


def test_ntt_inverts_and_matches_a_plain_evaluation(keys: Keys) -> None:
    basis = keys.engine.q(2)
    x = torch.stack([torch.randint(0, m, (1024,), dtype=torch.int64) for m in basis.moduli]).to(DEVICE)
    assert torch.equal(basis.intt(basis.ntt(x)), x)
    # slot i of OpenFHE's NTT is the polynomial at psi^(2 * bitreverse(i) + 1)
    m, psi, coeffs = basis.moduli[0], keys.engine.context.ring.towers[0].root, x[0].tolist()
    slot = 5
    point = pow(psi, 2 * ring.bit_reverse(slot, 10) + 1, m)
    assert int(basis.ntt(x)[0, slot]) == sum(c * pow(point, k, m) for k, c in enumerate(coeffs)) % m


# --- agreement, operation by operation ---------------------------------------------------------------------
def test_linear_operations_are_bit_identical(keys: Keys) -> None:
    cc, e = keys.cc, keys.engine
    x, y = keys.encrypt([1.0, 2.0, -3.0]), keys.encrypt([0.5, -1.0, 2.0])
    a, b = keys.mine(x), keys.mine(y)
    keys.assert_identical(e.add(a, b), cc.EvalAdd(x, y))
    keys.assert_identical(e.add(a, b, subtract=True), cc.EvalSub(x, y))
    for value in (0.5, -0.25, 3.0, 1e-9, 0.0, -3.5 / 2 ** 40, 2.5 / 2 ** 40, -1234.5678):
        keys.assert_identical(e.mul_scalar(a, value), cc.EvalMult(x, value))
        keys.assert_identical(e.add_scalar(a, value), cc.EvalAdd(x, value))
    plain = cc.MakeCKKSPackedPlaintext([0.25, -0.5, 4.0])
    p = keys.evaluator.encode(np.array([0.25, -0.5, 4.0]))
    keys.assert_identical(e.mul_plain(a, p), cc.EvalMult(x, plain))
    keys.assert_identical(e.add_plain(a, p), cc.EvalAdd(x, plain))
    lower = cc.Rescale(cc.EvalMult(x, 2.0))  # a plaintext at level 0 meets a ciphertext at level 1
    keys.assert_identical(e.mul_plain(keys.mine(lower), p), cc.EvalMult(lower, plain))
    keys.assert_identical(e.add(keys.mine(lower), b), cc.EvalAdd(lower, y))


def test_products_rescaling_and_relinearization_are_bit_identical(keys: Keys) -> None:
    cc, e = keys.cc, keys.engine
    x, y = keys.encrypt([1.0, 2.0, -3.0]), keys.encrypt([0.5, -1.0, 2.0])
    product = e.mul(keys.mine(x), keys.mine(y))
    keys.assert_identical(product, cc.EvalMultNoRelin(x, y))
    keys.assert_identical(e.rescale(product), cc.Rescale(cc.EvalMultNoRelin(x, y)))
    relinearized = e.relinearize(product, keys.evaluator.relin)  # type: ignore[arg-type]
    keys.assert_identical(relinearized, cc.Relinearize(cc.EvalMultNoRelin(x, y)))
    deeper = cc.Rescale(cc.EvalMult(cc.Rescale(cc.EvalMult(x, y)), x))  # every digit count down the chain
    mine = e.rescale(e.relinearize(e.mul(e.rescale(relinearized), keys.mine(x)), keys.evaluator.relin))  # type: ignore[arg-type]
    keys.assert_identical(mine, deeper)


def test_rotation_is_bit_identical_and_decrypts_rotated(keys: Keys) -> None:
    values = [1.0, 2.0, -3.0, 0.5, 7.0]
    x = keys.encrypt(values)
    lower = keys.cc.Rescale(keys.cc.EvalMult(x, 0.5))
    for steps in (1, 2, -1, 4):
        mine = keys.engine.rotate(keys.mine(x), steps, keys.evaluator.rotation_keys)
        keys.assert_identical(mine, keys.cc.EvalRotate(x, steps))
        expected = np.roll(np.array(values + [0.0] * 11), -steps)
        assert np.allclose(keys.decrypt(mine, 16), expected, atol=1e-6)
        keys.assert_identical(keys.engine.rotate(keys.mine(lower), steps, keys.evaluator.rotation_keys),
                              keys.cc.EvalRotate(lower, steps))
    with pytest.raises(ckks.CkksError, match="no rotation key"):
        keys.engine.rotate(keys.mine(x), 3, keys.evaluator.rotation_keys)


def test_automorphism_index_matches_openfhe(keys: Keys) -> None:
    for steps in (1, 2, -1, 4, 7, -8):
        assert ckks.automorphism_index(steps, 2048) == keys.cc.FindAutomorphismIndex(steps)


# --- circuits ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["linear", "logistic-3", pytest.param("mlp", marks=pytest.mark.slow)])
def test_model_circuits_are_bit_identical_to_openfhes(name: str) -> None:
    spec = load_model(name, small_model_files()[name])
    k = Keys(spec.params)
    packing = Packing.of(spec)
    rng = np.random.default_rng(3)
    samples = rng.uniform(-1, 1, (2, packing.features))
    x = k.cc.Encrypt(k.kp.publicKey, k.cc.MakeCKKSPackedPlaintext(list(packing.pack(samples))))
    theirs = Circuit(spec, OpenFheEvaluator(k.cc))(x)
    mine = Circuit(spec, k.evaluator)(k.evaluator.load(o.Serialize(x, o.BINARY)))
    plain = k.cc.Decrypt(k.kp.secretKey, theirs)
    plain.SetLength(packing.slots)
    expected = packing.unpack(plain.GetRealPackedValue(), 2)
    got = packing.unpack(list(k.decrypt(mine, packing.slots)), 2)
    k.assert_identical(mine, theirs)
    assert np.allclose(got, expected, atol=1e-6)  # OpenFHE's CKKS decoding adds its own small noise


def test_memory_bound_refuses_a_session_and_device_fallback_is_explained(keys: Keys) -> None:
    with pytest.raises(DeviceMemoryExceeded, match="allowed per session"):
        TorchEvaluator(keys.cc, keys.kp.publicKey, keys.mult_bytes, keys.rotation_bytes, DEVICE, memory_limit=1024)
    device, reason = pick_device("cpu")
    assert device.type == "cpu" and "asked" in reason
    if not torch.cuda.is_available():
        device, reason = pick_device("cuda")
        assert device.type == "cpu" and "no CUDA device" in reason


@pytest.mark.slow
@pytest.mark.timeout(2400)  # minutes on two shared CPU cores; well under a second of work on a GPU
def test_production_ring_hmult_relin_rescale_rotation_bit_identical() -> None:
    params = CkksParams(ring_dimension=1 << 16, multiplicative_depth=12, scaling_mod_size=50, first_mod_size=60,
                        batch_size=32, rotation_indices=(1,))
    k = Keys(params)
    x, y = k.encrypt([0.5, -1.5, 2.0]), k.encrypt([1.25, 0.75, -0.5])
    product = k.engine.rescale(k.engine.relinearize(k.engine.mul(k.mine(x), k.mine(y)), k.evaluator.relin))  # type: ignore[arg-type]
    k.assert_identical(product, k.cc.Rescale(k.cc.EvalMult(x, y)))
    rotated = k.engine.rotate(k.mine(x), 1, k.evaluator.rotation_keys)
    k.assert_identical(rotated, k.cc.EvalRotate(x, 1))
    assert np.allclose(k.decrypt(rotated, 4), [-1.5, 2.0, 0.0, 0.0], atol=1e-6)
