"""The torch backend of the evaluator seam: OpenFHE's serialized ciphertexts in, OpenFHE's serialized ciphertexts
out, every operation on torch tensors on one device.

Plaintexts are encoded by OpenFHE itself (its encoder's floating-point FFT and rounding are what a bit-identical
product needs), once per circuit: the plaintext's residues are read off an OpenFHE ciphertext to which it was
added. Evaluation keys are moved to the device when the evaluator is built, once per session, and freed with it.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import openfhe
import torch
from numpy.typing import NDArray

from privmesh.fhe.evaluator import Evaluator
from privmesh.fhe.gpu import serial
from privmesh.fhe.gpu.ckks import Ct, Engine, Pt, SwitchKey, special_moduli

log = logging.getLogger("privmesh.fhe.gpu")


class DeviceMemoryExceeded(Exception):
    """The session's keys and working set would not fit the memory allowed to one session on the device."""


def pick_device(requested: str) -> tuple[torch.device, str]:
    """The device to use and why: `auto` takes CUDA when a GPU is visible, `cuda` falls back to the CPU (with the
    reason) when none is."""
    if requested in ("auto", "cuda"):
        if torch.cuda.is_available():
            return torch.device("cuda"), f"CUDA device {torch.cuda.get_device_name(0)}"
        return torch.device("cpu"), "no CUDA device is visible (torch.cuda.is_available() is False): using the CPU"
    return torch.device("cpu"), "the CPU was asked for"


def key_bytes(size_q: int, size_p: int, n: int, digits: int, keys: int) -> int:
    """The device memory that `keys` key-switching keys take (digits x (b, a) x towers x N words)."""
    return keys * digits * 2 * (size_q + size_p) * n * 8


class TorchEvaluator(Evaluator[Ct, Pt]):
    name = "torch"

    def __init__(self, context: openfhe.CryptoContext, public_key: Any, relinearization_key: bytes | None,
                 rotation_keys: bytes | None, device: torch.device, memory_limit: int = 0) -> None:
        self.openfhe_context = context
        self.device = device
        mult = serial.load_mult_keys(relinearization_key) if relinearization_key else {}
        rotations = serial.load_rotation_keys(rotation_keys) if rotation_keys else {}
        tags = set(mult) | set(rotations)
        if len(tags) != 1:
            raise ValueError("the evaluation keys must belong to exactly one key pair")
        self.key_tag = tags.pop()
        any_key = mult[self.key_tag][0] if mult else next(iter(rotations[self.key_tag].values()))
        self.context = any_key.context
        size_q = len(self.context.ring.towers)
        moduli = special_moduli(any_key, size_q)
        count = len(mult.get(self.key_tag, [])) + len(rotations.get(self.key_tag, {}))
        needed = key_bytes(size_q, len(moduli), self.context.ring.ring_dim, len(any_key.a), count)
        if memory_limit and needed > memory_limit:
            raise DeviceMemoryExceeded(f"the session's evaluation keys take {needed} bytes on the device, more than "
                                       f"the {memory_limit} allowed per session")
        self.engine = Engine(self.context, moduli, device)
        self.relin: SwitchKey | None = self.engine.import_key(mult[self.key_tag][0]) if mult else None
        self.rotation_keys = {index: self.engine.import_key(key)
                              for index, key in rotations.get(self.key_tag, {}).items()}
        self._zero = context.Encrypt(public_key, context.MakeCKKSPackedPlaintext([0.0]))

    @property
    def slots(self) -> int:
        return int(self.openfhe_context.GetBatchSize())

    def load(self, raw: bytes) -> Ct:
        """A ciphertext in OpenFHE's BINARY form, on the device."""
        return self.engine.import_ciphertext(serial.load_ciphertext(raw))

    def dump(self, ct: Ct) -> bytes:
        """The ciphertext in OpenFHE's BINARY form (what a client deserializes and decrypts)."""
        return serial.dump_ciphertext(self.engine.export_ciphertext(ct, self.key_tag))

    def encode(self, values: NDArray[np.float64]) -> Pt:
        o = openfhe
        plaintext = self.openfhe_context.MakeCKKSPackedPlaintext([float(v) for v in values])
        carrier = self.openfhe_context.EvalSub(self.openfhe_context.EvalAdd(self._zero, plaintext), self._zero)
        residues = serial.load_ciphertext(o.Serialize(carrier, o.BINARY)).elements[0].residues()
        return Pt(torch.from_numpy(residues.view(np.int64)).to(self.device))

    def add(self, a: Ct, b: Ct) -> Ct:
        return self.engine.add(a, b)

    def add_plain(self, a: Ct, p: Pt) -> Ct:
        return self.engine.add_plain(a, p)

    def add_scalar(self, a: Ct, value: float) -> Ct:
        return self.engine.add_scalar(a, value)

    def mul_plain(self, a: Ct, p: Pt) -> Ct:
        return self.engine.mul_plain(a, p)

    def mul_scalar(self, a: Ct, value: float) -> Ct:
        return self.engine.mul_scalar(a, value)

    def mul(self, a: Ct, b: Ct) -> Ct:
        return self.engine.mul(a, b)

    def relinearize(self, a: Ct) -> Ct:
        if self.relin is None:
            raise ValueError("the session has no relinearization key")
        return self.engine.relinearize(a, self.relin)

    def rescale(self, a: Ct) -> Ct:
        return self.engine.rescale(a)

    def rotate(self, a: Ct, steps: int) -> Ct:
        return self.engine.rotate(a, steps, self.rotation_keys)
