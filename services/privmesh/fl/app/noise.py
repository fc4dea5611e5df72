"""Distributed DP noise: the Flower mod with which each participant adds its share of the Gaussian noise to its
clipped update before SecAgg+ masks it, so that the coordinator only ever unmasks a noised sum.

Each of the m sampled participants adds N(0, s^2) per coordinate with s = noise_multiplier * clipping_norm /
sqrt(m) (RunSpec.noise_share_stddev, from the run's spec in the FAB, not from the server's per-round messages),
so the m shares sum to N(0, (noise_multiplier * clipping_norm)^2), the noise that central DP adds to the sum.
Every update is sent with weight 1: SecAgg+ multiplies each update by its weight before summing, and unequal
weights would scale one participant's influence (and the noise) unevenly.

SecAgg+ then clips every value to its clipping_range and rounds it stochastically to a grid of step
2 * clipping_range / quantization_range (unbiased, at most one step per value); the coordinator's validation keeps
the share far inside the clipping range and far coarser than the step (federations.py).
"""

from __future__ import annotations

import secrets
from typing import Any

import numpy as np
import numpy.typing as npt
from flwr.app.message_type import MessageType
from flwr.client.typing import ClientAppCallable
from flwr.common import Context, Message, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common import recorddict_compat as compat

from privmesh.fl.app.spec import RUN_SPEC_KEY, RunSpec


def add_noise_share(arrays: list[npt.NDArray[Any]], stddev: float, rng: np.random.Generator
                    ) -> list[npt.NDArray[np.float64]]:
    """The arrays with independent N(0, stddev^2) noise on every coordinate."""
    return [np.asarray(a, np.float64) + rng.normal(0.0, stddev, np.shape(a)) for a in arrays]


def distributed_noise_mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """Adds this participant's noise share to the (already clipped) update of a training reply."""
    if msg.metadata.message_type != MessageType.TRAIN:
        return call_next(msg, ctxt)
    out = call_next(msg, ctxt)
    if out.has_error():
        return out
    stddev = RunSpec.from_json(str(ctxt.run_config[RUN_SPEC_KEY])).noise_share_stddev()
    if stddev <= 0:
        raise ValueError("distributed noise is configured without a noise share")
    fit_res = compat.recorddict_to_fitres(out.content, keep_input=True)
    rng = np.random.default_rng(secrets.randbits(128))  # fresh OS entropy for every share
    fit_res.parameters = ndarrays_to_parameters(add_noise_share(parameters_to_ndarrays(fit_res.parameters), stddev,
                                                                rng))
    fit_res.num_examples = 1
    out.content = compat.fitres_to_recorddict(fit_res, keep_input=True)
    return out
