"""Protobuf <-> domain conversions shared by the servicer and the client SDK (CKKS parameters, enums)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from privmesh.fhe.params import CkksParams
from privmesh.fhe.v1 import fhe_pb2 as pb
from privmesh.fhe.worker import CRYPTO_CONTEXT, PUBLIC_KEY, RELINEARIZATION_KEY, ROTATION_KEYS

PART_KINDS = {CRYPTO_CONTEXT: pb.KEY_PART_KIND_CRYPTO_CONTEXT, PUBLIC_KEY: pb.KEY_PART_KIND_PUBLIC_KEY,
              RELINEARIZATION_KEY: pb.KEY_PART_KIND_RELINEARIZATION_KEY, ROTATION_KEYS: pb.KEY_PART_KIND_ROTATION_KEYS}
PART_NAMES = {v: k for k, v in PART_KINDS.items()}
KINDS = {"linear_regression": pb.MODEL_KIND_LINEAR_REGRESSION, "logistic_regression": pb.MODEL_KIND_LOGISTIC_REGRESSION,
         "mlp": pb.MODEL_KIND_MLP}
SECURITY = {"HEStd_128_classic": pb.SECURITY_LEVEL_HESTD_128_CLASSIC, "HEStd_NotSet": pb.SECURITY_LEVEL_HESTD_NOT_SET}
SCALING = {"FIXEDMANUAL": pb.SCALING_TECHNIQUE_FIXED_MANUAL, "FIXEDAUTO": pb.SCALING_TECHNIQUE_FIXED_AUTO,
           "FLEXIBLEAUTO": pb.SCALING_TECHNIQUE_FLEXIBLE_AUTO,
           "FLEXIBLEAUTOEXT": pb.SCALING_TECHNIQUE_FLEXIBLE_AUTO_EXT}
KEY_SWITCH = {"HYBRID": pb.KEY_SWITCH_TECHNIQUE_HYBRID, "BV": pb.KEY_SWITCH_TECHNIQUE_BV}
SECRET_DIST = {"UNIFORM_TERNARY": pb.SECRET_KEY_DISTRIBUTION_UNIFORM_TERNARY,
               "SPARSE_TERNARY": pb.SECRET_KEY_DISTRIBUTION_SPARSE_TERNARY,
               "GAUSSIAN": pb.SECRET_KEY_DISTRIBUTION_GAUSSIAN}

_Enum = TypeVar("_Enum", bound=int)  # a protobuf enum's ValueType


def reverse(mapping: Mapping[str, _Enum]) -> dict[_Enum, str]:
    return {v: k for k, v in mapping.items()}


def params_to_proto(params: CkksParams) -> pb.CkksParameters:
    return pb.CkksParameters(
        ring_dimension=params.ring_dimension, multiplicative_depth=params.multiplicative_depth,
        scaling_mod_size=params.scaling_mod_size, first_mod_size=params.first_mod_size,
        scaling_technique=SCALING[params.scaling_technique], security_level=SECURITY[params.security_level],
        batch_size=params.batch_size, rotation_indices=list(params.rotation_indices),
        key_switch_technique=KEY_SWITCH[params.key_switch_technique], num_large_digits=params.num_large_digits,
        secret_key_distribution=SECRET_DIST[params.secret_key_distribution])


def params_from_proto(msg: pb.CkksParameters) -> CkksParams:
    """Unknown or unspecified enum values become '' so they differ from every model's."""
    return CkksParams(
        msg.ring_dimension, msg.multiplicative_depth, msg.scaling_mod_size, msg.first_mod_size, msg.batch_size,
        tuple(msg.rotation_indices), reverse(SECURITY).get(msg.security_level, ""),
        reverse(SCALING).get(msg.scaling_technique, ""), reverse(KEY_SWITCH).get(msg.key_switch_technique, ""),
        msg.num_large_digits, reverse(SECRET_DIST).get(msg.secret_key_distribution, ""))
