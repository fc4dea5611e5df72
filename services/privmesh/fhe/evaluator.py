"""The evaluator seam: the CKKS operations a circuit needs, and nothing about where they run.

Circuits (privmesh.fhe.circuit) are written against `Evaluator` only, so another backend (the GPU evaluator of
a later issue) plugs in by implementing these methods for its own ciphertext and plaintext types, without
touching the service or the models. The OpenFHE CPU backend is privmesh.fhe.openfhe_evaluator.

Conventions (those of CKKS with manual rescaling): `mul`, `mul_plain` and `mul_scalar` double the scale and
leave rescaling to the circuit, which calls `rescale` once per multiplication; `mul` does not relinearize, the
circuit calls `relinearize`; operands at different levels are aligned by the backend.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar, Generic, TypeVar

import numpy as np
from numpy.typing import NDArray

C = TypeVar("C")  # the backend's ciphertext type
P = TypeVar("P")  # the backend's encoded plaintext type


class Evaluator(ABC, Generic[C, P]):
    name: ClassVar[str]

    @property
    @abstractmethod
    def slots(self) -> int:
        """The number of slots of a ciphertext (the context's batch size)."""

    @abstractmethod
    def encode(self, values: NDArray[np.float64]) -> P:
        """A plaintext holding `values` in its first slots (zeros after)."""

    @abstractmethod
    def add(self, a: C, b: C) -> C: ...

    @abstractmethod
    def add_plain(self, a: C, p: P) -> C: ...

    @abstractmethod
    def add_scalar(self, a: C, value: float) -> C: ...

    @abstractmethod
    def mul_plain(self, a: C, p: P) -> C: ...

    @abstractmethod
    def mul_scalar(self, a: C, value: float) -> C: ...

    @abstractmethod
    def mul(self, a: C, b: C) -> C:
        """The product, not relinearized (three components)."""

    @abstractmethod
    def relinearize(self, a: C) -> C: ...

    @abstractmethod
    def rescale(self, a: C) -> C:
        """Divides by the last modulus, dropping one level (after every multiplication)."""

    @abstractmethod
    def rotate(self, a: C, steps: int) -> C:
        """Slot i of the result is slot i + steps of `a` (cyclically); needs the rotation key for `steps`."""

    def sum(self, terms: Sequence[C]) -> C:
        """The sum of several ciphertexts (backends may fuse the additions)."""
        if not terms:
            raise ValueError("nothing to sum")
        total = terms[0]
        for term in terms[1:]:
            total = self.add(total, term)
        return total
