"""The CKKS parameters a model publishes, and the one place that turns them into an OpenFHE crypto context.

Client and server build their contexts with `create_context` from the same `CkksParams`, so a client that
follows the published parameters always produces a context the server recognises.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import openfhe

SECURITY_LEVELS = {"HEStd_128_classic": openfhe.HEStd_128_classic, "HEStd_NotSet": openfhe.HEStd_NotSet}
SCALING_TECHNIQUES = {"FIXEDMANUAL": openfhe.FIXEDMANUAL, "FIXEDAUTO": openfhe.FIXEDAUTO,
                      "FLEXIBLEAUTO": openfhe.FLEXIBLEAUTO, "FLEXIBLEAUTOEXT": openfhe.FLEXIBLEAUTOEXT}
KEY_SWITCH_TECHNIQUES = {"HYBRID": openfhe.HYBRID, "BV": openfhe.BV}
SECRET_KEY_DISTRIBUTIONS = {"UNIFORM_TERNARY": openfhe.UNIFORM_TERNARY, "SPARSE_TERNARY": openfhe.SPARSE_TERNARY,
                            "GAUSSIAN": openfhe.GAUSSIAN}
PRODUCTION_SECURITY = "HEStd_128_classic"
TEST_SECURITY = "HEStd_NotSet"


@dataclass(frozen=True)
class CkksParams:
    ring_dimension: int
    multiplicative_depth: int
    scaling_mod_size: int
    first_mod_size: int
    batch_size: int
    rotation_indices: tuple[int, ...]
    security_level: str = PRODUCTION_SECURITY
    scaling_technique: str = "FIXEDMANUAL"
    key_switch_technique: str = "HYBRID"
    num_large_digits: int = 0
    secret_key_distribution: str = "UNIFORM_TERNARY"  # noqa: S105 - a distribution's name, not a secret

    @property
    def is_production(self) -> bool:
        return self.security_level == PRODUCTION_SECURITY

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["rotation_indices"] = list(self.rotation_indices)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CkksParams:
        return cls(**{**data, "rotation_indices": tuple(data["rotation_indices"])})

    def differences(self, other: CkksParams) -> list[str]:
        """The names of the fields that differ (rotation indices compared as sets)."""
        out = []
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if f.name == "rotation_indices":
                mine, theirs = sorted(set(mine)), sorted(set(theirs))
            if mine != theirs:
                out.append(f.name)
        return out


def openfhe_parameters(params: CkksParams) -> openfhe.CCParamsCKKSRNS:
    """OpenFHE's CCParams for these parameters (ring_dimension 0 lets OpenFHE pick the smallest secure ring)."""
    cc_params = openfhe.CCParamsCKKSRNS()
    cc_params.SetMultiplicativeDepth(params.multiplicative_depth)
    cc_params.SetScalingModSize(params.scaling_mod_size)
    cc_params.SetFirstModSize(params.first_mod_size)
    cc_params.SetScalingTechnique(SCALING_TECHNIQUES[params.scaling_technique])
    cc_params.SetSecurityLevel(SECURITY_LEVELS[params.security_level])
    cc_params.SetKeySwitchTechnique(KEY_SWITCH_TECHNIQUES[params.key_switch_technique])
    cc_params.SetSecretKeyDist(SECRET_KEY_DISTRIBUTIONS[params.secret_key_distribution])
    if params.num_large_digits:
        cc_params.SetNumLargeDigits(params.num_large_digits)
    if params.ring_dimension:
        cc_params.SetRingDim(params.ring_dimension)
    if params.batch_size:
        cc_params.SetBatchSize(params.batch_size)
    return cc_params


def create_context(params: CkksParams) -> openfhe.CryptoContext:
    """The crypto context for `params`, with the features a circuit needs (raises RuntimeError if OpenFHE
    refuses the parameters, e.g. a ring too small for the security level)."""
    context = openfhe.GenCryptoContext(openfhe_parameters(params))
    for feature in (openfhe.PKE, openfhe.KEYSWITCH, openfhe.LEVELEDSHE):
        context.Enable(feature)
    return context


def smallest_secure_ring(params: CkksParams) -> int:
    """The ring dimension OpenFHE chooses for `params` at its security level when none is set."""
    probe = CkksParams(**{**params.to_json(), "ring_dimension": 0, "batch_size": 0,
                          "rotation_indices": params.rotation_indices})
    return int(create_context(probe).GetRingDimension())
