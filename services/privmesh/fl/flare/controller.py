"""The FLARE server workflow of every FLARE federation: rounds of FedAvg (FedProx's proximal term is local) over
the federation's sites through FLARE's ModelController, reported to the coordinator as the Flower ServerApp does.

DP is central, as on Flower: updates are clipped (on the server, or by each site's executor for client-side
clipping) and Gaussian noise of std noise_multiplier * clipping_norm / k is added to the unweighted mean of the k
clipped updates received (Flower's dp helpers), so the RDP accountant's sensitivity holds whatever the sites'
example counts and dropouts. There is no secure aggregation on FLARE:
the server sees every site's update (the coordinator refuses SecAgg+ for FLARE federations).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np
from flwr.common.differential_privacy import add_gaussian_noise_inplace, compute_clip_model_update, compute_stdv
from google.protobuf.timestamp_pb2 import Timestamp
from nvflare.app_common.abstract.fl_model import FLModel
from nvflare.app_common.workflows.model_controller import ModelController

from privmesh.fl import accountant
from privmesh.fl.app.model import Arrays
from privmesh.fl.app.report import Reporter
from privmesh.fl.app.spec import RunSpec
from privmesh.fl.v1 import fl_pb2

NUM_EXAMPLES = "num_examples"


class _Stop(Exception):
    def __init__(self, reason: int, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _now() -> Timestamp:
    stamp = Timestamp()
    stamp.GetCurrentTime()
    return stamp


def _weighted(results: Sequence[FLModel], key: str, metrics_of: str = "metrics") -> float | None:
    pairs = [(int(r.meta.get(NUM_EXAMPLES, 0)), float(getattr(r, metrics_of)[key])) for r in results
             if getattr(r, metrics_of) and key in getattr(r, metrics_of)]
    total = sum(n for n, _ in pairs)
    return sum(n * v for n, v in pairs) / total if total else None


def aggregate(spec: RunSpec, current: Arrays, updates: Sequence[tuple[Arrays, int]], rng: np.random.Generator
              ) -> Arrays:
    """FedAvg (example-weighted) without DP; with DP the unweighted mean of clipped updates plus central noise."""
    if spec.dp is None:
        total = sum(n for _, n in updates)
        return [np.sum([w[i] * n for w, n in updates], axis=0) / total for i in range(len(current))]
    clipped = []
    for weights, _ in updates:
        copy = [w.copy() for w in weights]
        if spec.dp.server_side:
            compute_clip_model_update(copy, current, spec.dp.clipping_norm)
        clipped.append(copy)
    mean = [np.mean([c[i] for c in clipped], axis=0) for i in range(len(current))]
    np.random.seed(int(rng.integers(2**31)))  # Flower's helper draws from NumPy's global generator
    add_gaussian_noise_inplace(mean, compute_stdv(spec.dp.noise_multiplier, spec.dp.clipping_norm,
                                                  len(updates)))
    return mean


class RunController(ModelController):  # type: ignore[misc]  # FLARE ships no type information
    """Runs the spec's rounds and reports each to the coordinator (when the environment names it)."""

    def __init__(self, spec: str) -> None:
        super().__init__(persistor_id="")
        self.spec_text = spec

    def run(self) -> None:
        spec = RunSpec.from_json(self.spec_text)
        reporter = Reporter.from_environment(spec.run)
        reason: int = fl_pb2.RUN_END_REASON_INTERNAL
        message = "the FLARE workflow failed"
        started = time.monotonic()
        try:
            reason, message = self._rounds(spec, reporter)
        finally:
            if reporter is not None:
                reporter.run_ended(reason, f"{message} ({time.monotonic() - started:.1f} s)")
                reporter.close()

    def _rounds(self, spec: RunSpec, reporter: Reporter | None) -> tuple[int, str]:
        names = spec.architecture.tensor_names()
        weights = spec.architecture.initial_weights(spec.seed)
        sites = sorted(spec.flare_sites)
        sampled = max(spec.min_participants, math.ceil(spec.fraction_train * len(sites)))
        q = min(1.0, sampled / max(1, len(sites)))
        rng = np.random.default_rng(spec.seed)
        for round_number in range(1, spec.num_rounds + 1):
            dp = spec.dp
            epsilon = accountant.epsilon(q, dp.noise_multiplier, round_number, dp.delta) if dp else None
            if dp is not None and dp.target_epsilon is not None and epsilon is not None \
                    and epsilon > dp.target_epsilon:
                return fl_pb2.RUN_END_REASON_PRIVACY_BUDGET_EXHAUSTED, \
                    f"round {round_number} would take epsilon to {epsilon:.3f}"
            targets = sorted(rng.choice(sites, size=min(sampled, len(sites)), replace=False).tolist())
            node_ids = [spec.flare_sites[s] for s in targets]
            if reporter is not None and reporter.round_started(round_number, node_ids):
                return fl_pb2.RUN_END_REASON_STOPPED_BY_USER, "stopped by StopRun"
            start = _now()
            results = self.send_model_and_wait(
                "train", FLModel(params=dict(zip(names, weights, strict=True)), current_round=round_number,
                                 total_rounds=spec.num_rounds), targets=targets,
                min_responses=spec.min_participants, timeout=int(spec.round_timeout_seconds))
            results = [r for r in results if r.params and all(n in r.params for n in names)]
            done = {str(r.meta.get("client_name")) for r in results}
            completed = len(results) >= spec.min_participants
            metrics = fl_pb2.RoundMetrics(
                round=round_number, state=fl_pb2.ROUND_STATE_COMPLETED if completed else fl_pb2.ROUND_STATE_ABANDONED,
                start_time=start, participants_selected=len(targets), participants_completed=len(results),
                participants_dropped=len(targets) - len(results),
                num_examples=sum(int(r.meta.get(NUM_EXAMPLES, 0)) for r in results))
            if completed:
                weights = aggregate(spec, weights, [([np.asarray(r.params[n], np.float64) for n in names],
                                                     int(r.meta.get(NUM_EXAMPLES, 1))) for r in results], rng)
                loss = _weighted(results, "train_loss")
                if loss is not None:
                    metrics.train_loss = loss
                if spec.fraction_evaluate > 0:
                    evaluations = self.send_model_and_wait(
                        "validate", FLModel(params=dict(zip(names, weights, strict=True)),
                                            current_round=round_number), targets=targets,
                        min_responses=spec.min_participants, timeout=int(spec.round_timeout_seconds))
                    accuracy = _weighted(evaluations, "accuracy")
                    if accuracy is not None:
                        metrics.metrics["accuracy"] = accuracy
                if epsilon is not None:
                    metrics.epsilon = epsilon
            metrics.end_time.CopyFrom(_now())
            stop = False
            if reporter is not None:
                if completed:
                    reporter.upload(round_number, names, weights)
                stop = reporter.round_ended(metrics, [spec.flare_sites[s] for s in targets if s in done],
                                            [spec.flare_sites[s] for s in targets if s not in done])
            if not completed:
                return fl_pb2.RUN_END_REASON_TOO_MANY_DROPOUTS, \
                    f"round {round_number}: {len(results)} of {len(targets)} sites replied"
            if stop:
                return fl_pb2.RUN_END_REASON_STOPPED_BY_USER, "stopped by StopRun"
        return fl_pb2.RUN_END_REASON_COMPLETED, f"{spec.num_rounds} rounds completed"
