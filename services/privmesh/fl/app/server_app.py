"""The ServerApp of every federation: Flower's legacy strategy path (FedAvg / FedProx / FedAdam), SecAgg+ through
SecAggPlusWorkflow, DP through Flower's fixed-clipping wrappers, restricted to the federation's SuperNodes.

It reports each round (metrics, the RDP accountant's epsilon, which nodes completed or dropped) and uploads each
round's aggregate to the coordinator, which encrypts it; it stops before a round when StopRun was called or when
the round would take epsilon above the federation's target.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any, cast

from flwr.common import Context, FitRes, Metrics, Parameters, Scalar, ndarrays_to_parameters
from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig, SimpleClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.criterion import Criterion
from flwr.server.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideFixedClipping,
    FedAdam,
    FedAvg,
    FedProx,
    Strategy,
)
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
from flwr.server.workflow.default_workflows import default_evaluate_workflow, default_fit_workflow
from google.protobuf.timestamp_pb2 import Timestamp
from numpy.typing import NDArray

from privmesh.fl import accountant
from privmesh.fl.app.report import Reporter
from privmesh.fl.app.spec import RUN_SPEC_KEY, RunSpec
from privmesh.fl.v1 import fl_pb2


class FederationClientManager(SimpleClientManager):
    """Admits only the federation's SuperNodes (one SuperLink serves every federation), waits for them no longer
    than the federation's participant wait (Flower's own wait is a day, which would stall a run whose node went
    offline), and remembers whom it sampled last, so a round can report who completed and who dropped."""

    def __init__(self, node_ids: Sequence[int], wait_seconds: float) -> None:
        super().__init__()
        self.allowed = set(node_ids)
        self.wait_seconds = wait_seconds
        self.last_sampled: list[int] = []

    def register(self, client: ClientProxy) -> bool:
        return client.node_id in self.allowed and super().register(client)

    def wait_for(self, num_clients: int, timeout: int = 0) -> bool:
        """Ends the run when the participants are not online in time (Flower's `sample` waits through this)."""
        if not super().wait_for(num_clients, timeout=self.wait_seconds):  # type: ignore[arg-type]
            raise _Stop(fl_pb2.RUN_END_REASON_NOT_ENOUGH_PARTICIPANTS,
                        f"{len(self)} of the {num_clients} participants a round needs were online after "
                        f"{self.wait_seconds:g} s")
        return True

    def sample(self, num_clients: int, min_num_clients: int | None = None,
               criterion: Criterion | None = None) -> list[ClientProxy]:
        chosen = super().sample(num_clients, min_num_clients, criterion)
        self.last_sampled = [c.node_id for c in chosen]
        return chosen


class DistributedNoiseClipping(DifferentialPrivacyClientSideFixedClipping):
    """Distributed noise: the participants clip (the clipping norm goes out in each round's config, as with central
    DP) and add the noise before masking (app/noise.py), so the aggregate is released as SecAgg+ unmasks it. A
    failure does not void the round (Flower's wrappers drop it, as their central noise assumes m updates): the
    sum holds the shares of the k participants whose masked updates arrived, and the round is accounted so."""

    def aggregate_fit(self, server_round: int, results: list[tuple[ClientProxy, FitRes]],
                      failures: list[tuple[ClientProxy, FitRes] | BaseException]
                      ) -> tuple[Parameters | None, dict[str, Scalar]]:
        return self.strategy.aggregate_fit(server_round, results, failures)


class _EqualWeights:
    """Central DP's noise (std z*C/m) covers one clipped update moving the mean by C/m: true only if every update
    weighs 1/m. FedAvg weights by the example counts the sites report, so the server sets every weight to 1
    before aggregating (privmesh's ClientApp already sends 1 under DP; this holds against one that does not)."""

    def aggregate_fit(self, server_round: int, results: list[tuple[ClientProxy, FitRes]],
                      failures: list[tuple[ClientProxy, FitRes] | BaseException]
                      ) -> tuple[Parameters | None, dict[str, Scalar]]:
        for _, res in results:
            res.num_examples = 1
        return super().aggregate_fit(server_round, results, failures)  # type: ignore[misc,no-any-return]


class ClientSideClipping(_EqualWeights, DifferentialPrivacyClientSideFixedClipping):
    """Flower's client-side fixed clipping with central noise, every update weighing the same."""


class ServerSideClipping(_EqualWeights, DifferentialPrivacyServerSideFixedClipping):
    """Flower's server-side fixed clipping with central noise, every update weighing the same."""


class _TimedGrid:
    """The grid with the federation's round timeout on every exchange, so a silent node cannot stall a round."""

    def __init__(self, grid: Grid, timeout: float) -> None:
        self._grid = grid
        self._timeout = timeout

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> Any:
        return self._grid.send_and_receive(messages, timeout=timeout if timeout is not None else self._timeout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)


class _Stop(Exception):
    def __init__(self, reason: int, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _weighted(results: list[tuple[int, Metrics]], key: str) -> float | None:
    pairs = [(n, float(cast(float, m[key]))) for n, m in results if key in m]
    total = sum(n for n, _ in pairs)
    return sum(n * v for n, v in pairs) / total if total else None


class RunSession:
    """One run: builds the strategy and workflow from the spec, executes the rounds, reports them."""

    def __init__(self, spec: RunSpec, reporter: Reporter | None) -> None:
        self.spec = spec
        self.reporter = reporter
        self.clients = FederationClientManager(spec.node_ids, spec.participant_wait_seconds)
        self.fit: dict[str, float] = {}
        self.evaluation: dict[str, float] = {}
        self.completed_nodes: set[int] = set()
        self.started = Timestamp()
        self.sample_count = spec.sample_count
        self.round_noise: list[float] = []  # the noise multiplier of each completed round, as accounted

    def _aggregate_fit(self, results: list[tuple[int, Metrics]]) -> Metrics:
        # Under DP each update weighs 1; the sites' example counts then come as a metric (none under SecAgg+).
        examples = sum(int(cast(int, m.get("examples", n))) for n, m in results)
        self.fit = {"completed": float(len(results)), "examples": float(examples)}
        self.completed_nodes = {int(str(m["node"])) for _, m in results if "node" in m}
        loss = _weighted(results, "train_loss")
        if loss is not None:
            self.fit["train_loss"] = loss
        return {k: v for k, v in self.fit.items() if k == "train_loss"}

    def _aggregate_evaluate(self, results: list[tuple[int, Metrics]]) -> Metrics:
        accuracy = _weighted(results, "accuracy")
        self.evaluation = {} if accuracy is None else {"accuracy": accuracy}
        return dict(self.evaluation)

    def strategy(self, initial: list[NDArray[Any]]) -> Strategy:
        spec = self.spec
        common: dict[str, Any] = dict(
            fraction_fit=spec.fraction_train, fraction_evaluate=spec.fraction_evaluate,
            min_fit_clients=spec.min_participants, min_evaluate_clients=spec.min_participants,
            min_available_clients=spec.min_participants, initial_parameters=ndarrays_to_parameters(initial),
            on_fit_config_fn=lambda r: {"round": r}, on_evaluate_config_fn=lambda r: {"round": r},
            fit_metrics_aggregation_fn=self._aggregate_fit,
            evaluate_metrics_aggregation_fn=self._aggregate_evaluate)
        params = spec.strategy_params
        base: Strategy
        if spec.strategy == "fedprox":
            base = FedProx(proximal_mu=params["proximal_mu"], **common)
        elif spec.strategy == "fedadam":
            base = FedAdam(eta=params["server_learning_rate"], beta_1=params["beta_1"], beta_2=params["beta_2"],
                           tau=params["tau"], **common)
        else:
            base = FedAvg(**common)
        if spec.dp is None:
            return base
        wrapper = (DistributedNoiseClipping if spec.dp.distributed
                   else ServerSideClipping if spec.dp.server_side else ClientSideClipping)
        return wrapper(base, noise_multiplier=spec.dp.noise_multiplier, clipping_norm=spec.dp.clipping_norm,
                       num_sampled_clients=self.sample_count)

    def round_noise_multiplier(self, completed: int) -> float:
        """The noise multiplier a round carried: with distributed noise only the completed participants' shares
        reached the sum (z * sqrt(k / m)); central noise is added whole by the ServerApp."""
        dp = self.spec.dp
        assert dp is not None
        if not dp.distributed:
            return dp.noise_multiplier
        return dp.noise_multiplier * math.sqrt(min(completed, self.sample_count) / self.sample_count)

    def epsilon_after(self, rounds: int) -> float | None:
        """Epsilon after the completed rounds, and full-noise rounds up to `rounds` (the projection)."""
        dp = self.spec.dp
        if dp is None:
            return None
        q = min(1.0, self.sample_count / max(1, len(self.spec.node_ids)))
        planned = [dp.noise_multiplier] * max(0, rounds - len(self.round_noise))
        return accountant.epsilon_of_rounds(q, [*self.round_noise, *planned][:rounds], dp.delta)

    def fit_round(self, inner: Any) -> Any:
        def workflow(grid: Grid, context: Context) -> None:
            round_number = int(cast(int, context.state.config_records[MAIN_CONFIGS_RECORD][Key.CURRENT_ROUND]))
            self._before_round(round_number)
            self.started.GetCurrentTime()
            self.fit, self.evaluation, self.completed_nodes = {}, {}, set()
            inner(grid, context)  # the strategy aggregates (and fills self.fit) only when updates arrived
            if not self.fit:
                self._after_round(round_number, context)
        return workflow

    def evaluate_round(self, grid: Grid, context: Context) -> None:
        default_evaluate_workflow(grid, context)
        self._after_round(int(cast(int, context.state.config_records[MAIN_CONFIGS_RECORD][Key.CURRENT_ROUND])),
                          context)

    def _before_round(self, round_number: int) -> None:
        dp = self.spec.dp
        if dp is not None and dp.target_epsilon is not None:
            projected = self.epsilon_after(round_number)
            if projected is not None and projected > dp.target_epsilon:
                raise _Stop(fl_pb2.RUN_END_REASON_PRIVACY_BUDGET_EXHAUSTED,
                            f"round {round_number} would take epsilon to {projected:.3f}")
        if self.reporter and self.reporter.round_started(round_number, sorted(self.clients.allowed)):
            raise _Stop(fl_pb2.RUN_END_REASON_STOPPED_BY_USER, "stopped by StopRun")

    def _after_round(self, round_number: int, context: Context) -> None:
        completed = bool(self.fit)
        sampled = list(self.clients.last_sampled)
        done = int(self.fit.get("completed", 0))
        ended = Timestamp()
        ended.GetCurrentTime()
        metrics = fl_pb2.RoundMetrics(
            round=round_number, state=fl_pb2.ROUND_STATE_COMPLETED if completed else fl_pb2.ROUND_STATE_ABANDONED,
            start_time=self.started, end_time=ended, participants_selected=len(sampled),
            participants_completed=done, participants_dropped=len(sampled) - done,
            num_examples=int(self.fit.get("examples", 0)))
        if "train_loss" in self.fit:
            metrics.train_loss = self.fit["train_loss"]
        metrics.metrics.update(self.evaluation)
        if completed and self.spec.dp is not None:
            self.round_noise.append(self.round_noise_multiplier(done))
            metrics.epsilon = cast(float, self.epsilon_after(round_number))
        stop = False
        if self.reporter is not None:
            if completed:
                arrays = context.state.array_records[MAIN_PARAMS_RECORD].to_numpy_ndarrays()
                self.reporter.upload(round_number, self.spec.architecture.tensor_names(), arrays)
            completed_nodes = [n for n in sampled if n in self.completed_nodes]
            stop = self.reporter.round_ended(metrics, completed_nodes,
                                             [n for n in sampled if n not in self.completed_nodes])
        if not completed:
            raise _Stop(fl_pb2.RUN_END_REASON_TOO_MANY_DROPOUTS,
                        f"round {round_number} could not be aggregated ({len(sampled)} sampled)")
        if stop:
            raise _Stop(fl_pb2.RUN_END_REASON_STOPPED_BY_USER, "stopped by StopRun")

    def run(self, grid: Grid, context: Context) -> tuple[int, str]:
        spec = self.spec
        initial = spec.architecture.initial_weights(spec.seed)
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=spec.num_rounds,
                                                                    round_timeout=spec.round_timeout_seconds),
                               strategy=self.strategy(initial), client_manager=self.clients)
        if spec.secagg is not None:
            s = spec.secagg
            inner: Any = SecAggPlusWorkflow(
                num_shares=int(s.num_shares) if s.num_shares >= 2 else s.num_shares,
                reconstruction_threshold=(int(s.reconstruction_threshold) if s.reconstruction_threshold >= 2
                                          else s.reconstruction_threshold),
                max_weight=s.max_weight, clipping_range=s.clipping_range, quantization_range=s.quantization_range,
                modulus_range=s.modulus_range, timeout=s.timeout_seconds)
        else:
            inner = default_fit_workflow
        workflow = DefaultWorkflow(fit_workflow=self.fit_round(inner), evaluate_workflow=self.evaluate_round)
        try:
            workflow(cast(Grid, _TimedGrid(grid, spec.round_timeout_seconds)), legacy)
        except _Stop as stop:
            return stop.reason, stop.message
        return fl_pb2.RUN_END_REASON_COMPLETED, f"{spec.num_rounds} rounds completed"


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    spec = RunSpec.from_json(str(context.run_config[RUN_SPEC_KEY]))
    reporter = Reporter.from_environment(spec.run)
    reason: int = fl_pb2.RUN_END_REASON_INTERNAL
    message = "the ServerApp failed"
    started = time.monotonic()
    try:
        reason, message = RunSession(spec, reporter).run(grid, context)
    finally:
        if reporter is not None:
            reporter.run_ended(reason, f"{message} ({time.monotonic() - started:.1f} s)")
            reporter.close()
