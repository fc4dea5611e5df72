"""What the coordinator tells the Flower apps about a run: one JSON document in the FAB's run config.

Flower's run config holds flat scalars only, so the whole spec travels as one string under RUN_SPEC_KEY. It
carries hyperparameters and node ids, never keys or data.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

from privmesh.fl.app.model import Architecture, TrainingConfig

RUN_SPEC_KEY = "privmesh-run-spec"
DATA_PATH_KEY = "data-path"  # SuperNode node config: the participant's local CSV


@dataclass(frozen=True)
class SecAggSpec:
    num_shares: float  # an int count or a fraction, as SecAggPlusWorkflow takes it
    reconstruction_threshold: float
    clipping_range: float
    quantization_range: int
    modulus_range: int
    max_weight: float
    timeout_seconds: float


@dataclass(frozen=True)
class DpSpec:
    server_side: bool
    noise_multiplier: float
    clipping_norm: float
    delta: float
    target_epsilon: float | None
    distributed: bool = False  # each participant adds its share of the noise before SecAgg+ masks its update


@dataclass(frozen=True)
class RunSpec:
    run: str  # "federations/{f}/runs/{r}"; empty for a bare run (no coordinator to report to)
    architecture: Architecture
    training: TrainingConfig
    feature_names: tuple[str, ...]
    label_name: str
    strategy: str  # "fedavg" | "fedprox" | "fedadam"
    strategy_params: dict[str, float]
    num_rounds: int
    min_participants: int
    fraction_train: float
    fraction_evaluate: float
    round_timeout_seconds: float
    participant_wait_seconds: float  # how long a round waits for its participants to be online
    seed: int
    node_ids: tuple[int, ...]  # the federation's admitted SuperNodes; others on the SuperLink are ignored
    secagg: SecAggSpec | None = None
    dp: DpSpec | None = None
    flare_sites: dict[str, int] = field(default_factory=dict)  # FLARE site name -> the participant's node id

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        data = json.loads(text)
        data["architecture"] = Architecture(**{**data["architecture"],
                                               "hidden_units": tuple(data["architecture"]["hidden_units"])})
        data["training"] = TrainingConfig(**data["training"])
        data["feature_names"] = tuple(data["feature_names"])
        data["node_ids"] = tuple(data["node_ids"])
        data["secagg"] = SecAggSpec(**data["secagg"]) if data["secagg"] else None
        data["dp"] = DpSpec(**data["dp"]) if data["dp"] else None
        return cls(**data)

    @property
    def sample_count(self) -> int:
        """The participants sampled for training each round."""
        return max(self.min_participants, math.ceil(self.fraction_train * len(self.node_ids)))

    def noise_share_stddev(self) -> float:
        """With distributed noise, the standard deviation of each participant's share: the m shares of a round
        sum to noise of standard deviation noise_multiplier * clipping_norm, the central mechanism's on the sum."""
        if self.dp is None or not self.dp.distributed:
            return 0.0
        return self.dp.noise_multiplier * self.dp.clipping_norm / math.sqrt(self.sample_count)

    def client_component(self) -> str:
        """The ClientApp object the SuperNodes load: its mods depend on SecAgg+, client-side clipping and
        distributed noise."""
        if self.dp is not None and self.dp.distributed:
            return "privmesh.fl.app.client_app:secagg_clipped_noised"
        clipped = self.dp is not None and not self.dp.server_side
        name = {(False, False): "plain", (True, False): "secagg", (False, True): "clipped",
                (True, True): "secagg_clipped"}[(self.secagg is not None, clipped)]
        return f"privmesh.fl.app.client_app:{name}"
