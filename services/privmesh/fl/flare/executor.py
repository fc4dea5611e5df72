"""The FLARE executor each site runs: trains the federation's model on the site's local CSV (the FLARE client's
environment names it, PRIVMESH_FL_DATA) with the same NumPy training as the Flower ClientApp, and returns only
weights, the example count and the training loss (accuracy for validation)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from flwr.common.differential_privacy import compute_clip_model_update
from nvflare.apis.executor import Executor
from nvflare.apis.fl_constant import ReturnCode
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable, make_reply
from nvflare.apis.signal import Signal
from nvflare.app_common.abstract.fl_model import FLModel
from nvflare.app_common.utils.fl_model_utils import FLModelUtils

from privmesh.fl.app.client_app import load_csv
from privmesh.fl.app.model import TrainingConfig, loss_and_accuracy, train
from privmesh.fl.app.spec import RunSpec
from privmesh.fl.flare.controller import NUM_EXAMPLES
from privmesh.fl.flare.kit import DATA_ENV


class LocalTrainer(Executor):  # type: ignore[misc]  # FLARE ships no type information
    def __init__(self, spec: str) -> None:
        super().__init__()
        self.spec = RunSpec.from_json(spec)

    def execute(self, task_name: str, shareable: Shareable, fl_ctx: FLContext, abort_signal: Signal) -> Shareable:
        spec = self.spec
        names = spec.architecture.tensor_names()
        model = FLModelUtils.from_shareable(shareable)
        if not model.params or any(n not in model.params for n in names):
            return make_reply(ReturnCode.BAD_TASK_DATA)
        weights = [np.asarray(model.params[n], np.float64) for n in names]
        # Read at every task: a site whose data disappears drops out of the round.
        x, y = load_csv(Path(os.environ[DATA_ENV]), spec.feature_names, spec.label_name)
        if task_name == "validate":
            loss, accuracy = loss_and_accuracy(spec.architecture, weights, x, y)
            return FLModelUtils.to_shareable(FLModel(metrics={"loss": loss, "accuracy": accuracy},
                                                     meta={NUM_EXAMPLES: len(x)}))
        if task_name != "train":
            return make_reply(ReturnCode.TASK_UNKNOWN)
        base = spec.training
        mu = float(spec.strategy_params.get("proximal_mu", 0.0)) if spec.strategy == "fedprox" else 0.0
        node = spec.flare_sites.get(fl_ctx.get_identity_name(), 0)
        seed = (spec.seed * 1_000_003 + node * 7919 + int(model.current_round or 0)) % 2**32
        local = TrainingConfig(base.epochs, base.batch_size, base.learning_rate, base.optimizer, mu, seed)
        trained, loss = train(spec.architecture, weights, x, y, local)
        if spec.dp is not None and not spec.dp.server_side:
            compute_clip_model_update(trained, weights, spec.dp.clipping_norm)
        return FLModelUtils.to_shareable(FLModel(params=dict(zip(names, trained, strict=True)),
                                                 metrics={"train_loss": loss}, meta={NUM_EXAMPLES: len(x)}))
