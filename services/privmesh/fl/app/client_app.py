"""The ClientApp each participant's SuperNode runs: trains the federation's model on the participant's local
CSV (the SuperNode's node config names it) and never sends anything but weights, counts and losses.

Five variants differ only in their Flower mods, because `secaggplus_mod` and `fixedclipping_mod` refuse
messages that were not prepared for them; the coordinator names the right one in the run's FAB. With distributed
DP noise, `distributed_noise_mod` sits between the two: it adds the participant's noise share to the clipped
update before SecAgg+ quantizes and masks it.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import numpy.typing as npt
from flwr.client import Client, NumPyClient
from flwr.client.mod import fixedclipping_mod, secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import Context, NDArrays, Scalar

from privmesh.fl.app.model import TrainingConfig, loss_and_accuracy, train
from privmesh.fl.app.noise import distributed_noise_mod
from privmesh.fl.app.spec import DATA_PATH_KEY, RUN_SPEC_KEY, RunSpec


def load_csv(path: Path, feature_names: tuple[str, ...], label_name: str
             ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Features (in the federation's order) and integer labels from a CSV with a header row."""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{path} holds no records")
    names = list(feature_names) or [c for c in rows[0] if c != label_name]
    missing = [n for n in [*names, label_name] if n not in rows[0]]
    if missing:
        raise ValueError(f"{path} lacks the columns {missing}")
    x = np.array([[float(r[n]) for n in names] for r in rows], dtype=np.float64)
    y = np.array([int(float(r[label_name])) for r in rows], dtype=np.int64)
    return x, y


class LocalTrainer(NumPyClient):
    def __init__(self, spec: RunSpec, data_path: Path, node_id: int) -> None:
        self.spec = spec
        self.data_path = data_path
        self.node_id = node_id

    def _data(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        # Read at every call: a participant whose data disappears drops out of the round.
        return load_csv(self.data_path, self.spec.feature_names, self.spec.label_name)

    def fit(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[NDArrays, int, dict[str, Scalar]]:
        x, y = self._data()
        base = self.spec.training
        mu = float(self.spec.strategy_params.get("proximal_mu", 0.0)) if self.spec.strategy == "fedprox" else 0.0
        seed = (self.spec.seed * 1_000_003 + self.node_id * 7919 + int(config.get("round", 0))) % 2**32
        local = TrainingConfig(base.epochs, base.batch_size, base.learning_rate, base.optimizer, mu, seed)
        weights, loss = train(self.spec.architecture, [np.asarray(p, np.float64) for p in parameters], x, y, local)
        # The node id travels beside the (masked) weights so the round can say who completed, even under SecAgg+.
        metrics: dict[str, Scalar] = {"train_loss": loss, "node": str(self.node_id)}
        if self.spec.dp is None:
            return weights, len(x), metrics
        # Under DP every update weighs the same: the noise is calibrated to one clipped update moving the mean by
        # C/m, and weighting by example counts would let a site with more rows move it further. The count still
        # travels as a metric, except under SecAgg+, where the weight is the only thing it would reveal.
        if self.spec.secagg is None:
            metrics["examples"] = len(x)
        return weights, 1, metrics

    def evaluate(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[float, int, dict[str, Scalar]]:
        x, y = self._data()
        loss, accuracy = loss_and_accuracy(self.spec.architecture, [np.asarray(p, np.float64) for p in parameters],
                                           x, y)
        return loss, len(x), {"accuracy": accuracy}


def client_fn(context: Context) -> Client:
    spec = RunSpec.from_json(str(context.run_config[RUN_SPEC_KEY]))
    return LocalTrainer(spec, Path(str(context.node_config[DATA_PATH_KEY])), context.node_id).to_client()


plain = ClientApp(client_fn=client_fn)
secagg = ClientApp(client_fn=client_fn, mods=[secaggplus_mod])
clipped = ClientApp(client_fn=client_fn, mods=[fixedclipping_mod])
secagg_clipped = ClientApp(client_fn=client_fn, mods=[secaggplus_mod, fixedclipping_mod])
secagg_clipped_noised = ClientApp(client_fn=client_fn, mods=[secaggplus_mod, distributed_noise_mod, fixedclipping_mod])
