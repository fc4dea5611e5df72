"""The OpenFHE CPU backend of the evaluator seam."""

from __future__ import annotations

import numpy as np
import openfhe
from numpy.typing import NDArray

from privmesh.fhe.evaluator import Evaluator


class OpenFheEvaluator(Evaluator[openfhe.Ciphertext, openfhe.Plaintext]):
    name = "openfhe-cpu"

    def __init__(self, context: openfhe.CryptoContext) -> None:
        self.context = context

    @property
    def slots(self) -> int:
        return int(self.context.GetBatchSize())

    def encode(self, values: NDArray[np.float64]) -> openfhe.Plaintext:
        return self.context.MakeCKKSPackedPlaintext([float(v) for v in values])

    def add(self, a: openfhe.Ciphertext, b: openfhe.Ciphertext) -> openfhe.Ciphertext:
        return self.context.EvalAdd(a, b)

    def add_plain(self, a: openfhe.Ciphertext, p: openfhe.Plaintext) -> openfhe.Ciphertext:
        return self.context.EvalAdd(a, p)

    def add_scalar(self, a: openfhe.Ciphertext, value: float) -> openfhe.Ciphertext:
        return self.context.EvalAdd(a, float(value))

    def mul_plain(self, a: openfhe.Ciphertext, p: openfhe.Plaintext) -> openfhe.Ciphertext:
        return self.context.EvalMult(a, p)

    def mul_scalar(self, a: openfhe.Ciphertext, value: float) -> openfhe.Ciphertext:
        return self.context.EvalMult(a, float(value))

    def mul(self, a: openfhe.Ciphertext, b: openfhe.Ciphertext) -> openfhe.Ciphertext:
        return self.context.EvalMultNoRelin(a, b)

    def relinearize(self, a: openfhe.Ciphertext) -> openfhe.Ciphertext:
        return self.context.Relinearize(a)

    def rescale(self, a: openfhe.Ciphertext) -> openfhe.Ciphertext:
        return self.context.Rescale(a)

    def rotate(self, a: openfhe.Ciphertext, steps: int) -> openfhe.Ciphertext:
        return self.context.EvalRotate(a, steps)
