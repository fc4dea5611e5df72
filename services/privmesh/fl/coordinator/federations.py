"""Validation of a federation's configuration, whole and before anything is stored, and the run spec the Flower
apps receive. Every problem is reported by field, under the ErrorInfo reason of its area."""

from __future__ import annotations

import math
import re

from flwr.server.workflow import SecAggPlusWorkflow
from google.protobuf.duration_pb2 import Duration

from privmesh.fl import accountant
from privmesh.fl.app.model import Architecture, TrainingConfig
from privmesh.fl.app.spec import DpSpec, RunSpec, SecAggSpec
from privmesh.fl.v1 import fl_pb2
from privmesh.runtime.errors import InvalidArgument, Violations

ID_PATTERN = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
DEFAULT_TIMEOUT_SECONDS = 600
ACTIVATION_NAMES = {fl_pb2.MLP_ACTIVATION_RELU: "relu", fl_pb2.MLP_ACTIVATION_TANH: "tanh",
                    fl_pb2.MLP_ACTIVATION_SQUARE: "square"}


def seconds(value: Duration, default: float) -> float:
    """A Duration field in seconds; `default` when unset."""
    return value.ToTimedelta().total_seconds() if value.ByteSize() else default


def _model(f: fl_pb2.Federation) -> Violations:
    v, m = Violations(), f.model
    v.check(1 <= m.feature_count <= 10_000, "federation.model.feature_count", "must be in 1..10000")
    v.check(2 <= m.class_count <= 1000, "federation.model.class_count", "must be in 2..1000")
    which = m.WhichOneof("architecture")
    if which is None:
        v.add("federation.model.architecture", "logistic_regression or mlp is required")
    elif which == "logistic_regression":
        v.check(math.isfinite(m.logistic_regression.l2_penalty) and m.logistic_regression.l2_penalty >= 0,
                "federation.model.logistic_regression.l2_penalty", "must be >= 0")
    else:
        units = list(m.mlp.hidden_units)
        v.check(1 <= len(units) <= 3 and all(1 <= u <= 1024 for u in units), "federation.model.mlp.hidden_units",
                "1..3 layers of 1..1024 units")
        v.check(m.mlp.activation in ACTIVATION_NAMES, "federation.model.mlp.activation", "required")
    v.check(not m.feature_names or len(m.feature_names) == m.feature_count, "federation.model.feature_names",
            "empty or exactly feature_count names")
    v.check(len(set(m.feature_names)) == len(m.feature_names), "federation.model.feature_names", "duplicate names")
    v.check(bool(m.label_name), "federation.model.label_name", "required")
    return v


def _training(f: fl_pb2.Federation) -> Violations:
    v, t = Violations(), f.local_training
    v.check(t.epochs <= 100, "federation.local_training.epochs", "at most 100")
    v.check(t.batch_size <= 65_536, "federation.local_training.batch_size", "at most 65536")
    v.check(t.learning_rate == 0 or (math.isfinite(t.learning_rate) and t.learning_rate > 0),
            "federation.local_training.learning_rate", "must be > 0")
    return v


def _strategy(f: fl_pb2.Federation) -> Violations:
    v, s = Violations(), f.strategy
    which = s.WhichOneof("algorithm")
    if which is None:
        v.add("federation.strategy.algorithm", "fed_avg, fed_prox or fed_adam is required")
    elif which == "fed_prox":
        v.check(math.isfinite(s.fed_prox.proximal_mu) and s.fed_prox.proximal_mu > 0,
                "federation.strategy.fed_prox.proximal_mu", "must be > 0")
    elif which == "fed_adam":
        a = s.fed_adam
        if a.HasField("server_learning_rate"):
            v.check(a.server_learning_rate > 0, "federation.strategy.fed_adam.server_learning_rate", "must be > 0")
        for name in ("beta_1", "beta_2"):
            if a.HasField(name):
                v.check(0 <= getattr(a, name) < 1, f"federation.strategy.fed_adam.{name}", "must be in [0, 1)")
        if a.HasField("tau"):
            v.check(a.tau > 0, "federation.strategy.fed_adam.tau", "must be > 0")
    if s.HasField("fraction_train"):
        v.check(0 < s.fraction_train <= 1, "federation.strategy.fraction_train", "must be in (0, 1]")
    if s.HasField("fraction_evaluate"):
        v.check(0 <= s.fraction_evaluate <= 1, "federation.strategy.fraction_evaluate", "must be in [0, 1]")
    v.check(1 <= f.num_rounds <= 1000, "federation.num_rounds", "must be in 1..1000")
    least = 3 if f.HasField("secure_aggregation") else 2
    v.check(least <= f.min_participants <= 10_000, "federation.min_participants",
            f"must be at least {least}" + (" with secure aggregation" if least == 3 else ""))
    for name in ("round_timeout", "participant_wait_timeout"):
        if getattr(f, name).ByteSize():
            duration = seconds(getattr(f, name), DEFAULT_TIMEOUT_SECONDS)
            v.check(1 <= duration <= 86_400, f"federation.{name}", "must be between 1 s and 1 day")
    return v


def secagg_spec(f: fl_pb2.Federation) -> SecAggSpec | None:
    if not f.HasField("secure_aggregation"):
        return None
    s = f.secure_aggregation
    shares: float = (s.num_shares if s.WhichOneof("num_shares_value") == "num_shares"
                     else s.num_shares_fraction if s.WhichOneof("num_shares_value") else 1.0)
    threshold: float = (s.reconstruction_threshold
                        if s.WhichOneof("reconstruction_threshold_value") == "reconstruction_threshold"
                        else s.reconstruction_threshold_fraction if s.WhichOneof("reconstruction_threshold_value")
                        else 2 / 3)
    round_timeout = seconds(f.round_timeout, DEFAULT_TIMEOUT_SECONDS)
    return SecAggSpec(num_shares=shares, reconstruction_threshold=threshold,
                      clipping_range=s.clipping_range if s.HasField("clipping_range") else 8.0,
                      quantization_range=s.quantization_range if s.HasField("quantization_range") else 2**22,
                      modulus_range=s.modulus_range if s.HasField("modulus_range") else 2**32,
                      max_weight=s.max_weight if s.HasField("max_weight") else 1000.0,
                      timeout_seconds=seconds(s.timeout, round_timeout))


def _secagg(f: fl_pb2.Federation) -> Violations:
    v = Violations()
    spec = secagg_spec(f)
    if spec is None:
        return v
    s, path = f.secure_aggregation, "federation.secure_aggregation"
    if s.WhichOneof("num_shares_value") == "num_shares":
        v.check(3 <= s.num_shares <= f.min_participants, f"{path}.num_shares",
                "must be at least 3 and at most min_participants")
    elif s.WhichOneof("num_shares_value"):
        v.check(0 < s.num_shares_fraction <= 1, f"{path}.num_shares_fraction", "must be in (0, 1]")
    if s.WhichOneof("reconstruction_threshold_value") == "reconstruction_threshold":
        v.check(s.reconstruction_threshold >= 2 and (s.WhichOneof("num_shares_value") != "num_shares"
                                                     or s.reconstruction_threshold < s.num_shares),
                f"{path}.reconstruction_threshold", "must be at least 2 and less than num_shares")
    elif s.WhichOneof("reconstruction_threshold_value"):
        v.check(0 < s.reconstruction_threshold_fraction <= 1, f"{path}.reconstruction_threshold_fraction",
                "must be in (0, 1]")
    v.check(spec.clipping_range > 0 and math.isfinite(spec.clipping_range), f"{path}.clipping_range", "must be > 0")
    v.check(spec.quantization_range >= 2, f"{path}.quantization_range", "must be at least 2")
    v.check(spec.max_weight > 0 and math.isfinite(spec.max_weight), f"{path}.max_weight", "must be > 0")
    v.check(spec.modulus_range > spec.quantization_range * max(1, f.min_participants), f"{path}.modulus_range",
            "must exceed quantization_range times min_participants")
    v.check(spec.timeout_seconds > 0, f"{path}.timeout", "must be > 0")
    if not v:
        try:  # Flower's own checks of the combination
            SecAggPlusWorkflow(num_shares=_count_or_fraction(spec.num_shares),
                               reconstruction_threshold=_count_or_fraction(spec.reconstruction_threshold),
                               max_weight=spec.max_weight, clipping_range=spec.clipping_range,
                               quantization_range=spec.quantization_range, modulus_range=spec.modulus_range)
        except (ValueError, TypeError) as exc:
            v.add(path, str(exc))
    return v


def _count_or_fraction(value: float) -> int | float:
    return int(value) if value >= 2 and float(value).is_integer() else float(value)


def _dp(f: fl_pb2.Federation) -> Violations:
    v = Violations()
    if not f.HasField("differential_privacy"):
        return v
    d, path = f.differential_privacy, "federation.differential_privacy"
    if d.clipping_mode == fl_pb2.DP_CLIPPING_MODE_UNSPECIFIED:
        v.add(f"{path}.clipping_mode", "required")
    elif d.clipping_mode == fl_pb2.DP_CLIPPING_MODE_SERVER_SIDE_FIXED and f.HasField("secure_aggregation"):
        v.add(f"{path}.clipping_mode", "secure aggregation needs CLIENT_SIDE_FIXED (the server never sees an update)")
    v.check(math.isfinite(d.noise_multiplier) and d.noise_multiplier > 0, f"{path}.noise_multiplier", "must be > 0")
    v.check(math.isfinite(d.clipping_norm) and d.clipping_norm > 0, f"{path}.clipping_norm", "must be > 0")
    v.check(0 < d.delta < 1, f"{path}.delta", "must be in (0, 1)")
    if d.HasField("target_epsilon"):
        v.check(math.isfinite(d.target_epsilon) and d.target_epsilon > 0, f"{path}.target_epsilon", "must be > 0")
    if d.noise == fl_pb2.DP_NOISE_DISTRIBUTED and not v:
        _distributed_noise(f, v)
    return v


def _distributed_noise(f: fl_pb2.Federation, v: Violations) -> None:
    """Distributed noise needs SecAgg+ (else each lightly noised update is seen) and client-side clipping, and
    a share that SecAgg+ neither clips (clipping_range >= 8 shares) nor drowns in rounding (step <= share / 100),
    for the share of the fewest participants a round samples (min_participants), as SecAgg+ scales it (by
    1 / max_weight: max_weight 1 suits updates of weight 1)."""
    d, secagg, path = f.differential_privacy, secagg_spec(f), "federation.differential_privacy.noise"
    if f.engine == fl_pb2.FL_ENGINE_FLARE:
        return  # refused with the engine's other features (validate)
    if secagg is None:
        v.add(path, "distributed noise needs secure_aggregation (each update carries only a share of the noise)")
    elif d.clipping_mode != fl_pb2.DP_CLIPPING_MODE_CLIENT_SIDE_FIXED:
        v.add(path, "distributed noise needs CLIENT_SIDE_FIXED clipping")
    else:
        # SecAgg+ scales each update by its weight over max_weight (weight 1 here) before clipping and rounding.
        share = d.noise_multiplier * d.clipping_norm / math.sqrt(max(f.min_participants, 1)) / secagg.max_weight
        v.check(secagg.clipping_range >= 8 * share, "federation.secure_aggregation.clipping_range",
                f"must be at least 8 noise shares ({8 * share:.4g}) so that SecAgg+ does not clip the noise")
        step = 2 * secagg.clipping_range / secagg.quantization_range
        v.check(step <= share / 100, "federation.secure_aggregation.quantization_range",
                f"its step ({step:.3g}) must be at most 1/100 of the noise share ({share:.4g})")


def projected_epsilon(f: fl_pb2.Federation) -> float | None:
    if not f.HasField("differential_privacy"):
        return None
    d = f.differential_privacy
    q = f.strategy.fraction_train if f.strategy.HasField("fraction_train") else 1.0
    return accountant.epsilon(q, d.noise_multiplier, f.num_rounds, d.delta)


def validate(federation_id: str, f: fl_pb2.Federation) -> None:
    """Raises InvalidArgument (naming every bad field of the first failing area) unless `f` is usable."""
    if not ID_PATTERN.match(federation_id):
        raise InvalidArgument.single("federation_id", "lower-case letters, digits and '-', 1..63 characters, "
                                     "starting with a letter")
    for check, reason in ((_model, "MODEL_SPEC_INVALID"), (_training, "INVALID_FIELD"),
                          (_strategy, "STRATEGY_INVALID"), (_secagg, "SECAGG_PARAMETERS_INVALID"),
                          (_dp, "DP_PARAMETERS_INVALID")):
        check(f).raise_if_any(reason)
    v = Violations()
    v.check(not f.admission.require_attestation or bool(f.admission.attestation_policy),
            "federation.admission.attestation_policy", "required when require_attestation is true")
    v.check(f.engine in (fl_pb2.FL_ENGINE_UNSPECIFIED, fl_pb2.FL_ENGINE_FLOWER, fl_pb2.FL_ENGINE_FLARE),
            "federation.engine", "unknown engine")
    v.raise_if_any()
    if f.engine == fl_pb2.FL_ENGINE_FLARE:  # what privmesh's FLARE workflow does not do: refused, never ignored
        v.check(not f.HasField("secure_aggregation"), "federation.secure_aggregation",
                "FLARE federations have no SecAgg+; the FLARE server sees each site's update")
        v.check(f.strategy.WhichOneof("algorithm") != "fed_adam", "federation.strategy.fed_adam",
                "FLARE federations aggregate with FedAvg or FedProx")
        v.check(f.differential_privacy.noise != fl_pb2.DP_NOISE_DISTRIBUTED, "federation.differential_privacy.noise",
                "distributed noise is offered with the Flower engine only (a Flower mod adds the shares)")
        v.raise_if_any("ENGINE_FEATURE_UNSUPPORTED")
    projected = projected_epsilon(f)
    d = f.differential_privacy
    if projected is not None and d.HasField("target_epsilon") and projected > d.target_epsilon:
        error = InvalidArgument.single("federation.differential_privacy.target_epsilon",
                                       f"the accountant projects epsilon {projected:.4g} after {f.num_rounds} rounds",
                                       "DP_TARGET_UNREACHABLE")
        error.metadata["projected_epsilon"] = f"{projected:.6g}"
        raise error


def architecture(m: fl_pb2.ModelSpec) -> Architecture:
    if m.WhichOneof("architecture") == "mlp":
        return Architecture(m.feature_count, m.class_count, tuple(m.mlp.hidden_units),
                            ACTIVATION_NAMES[m.mlp.activation])
    return Architecture(m.feature_count, m.class_count, (), "relu", m.logistic_regression.l2_penalty)


def run_spec(f: fl_pb2.Federation, run_name: str, seed: int, node_ids: list[int],
             flare_sites: dict[str, int] | None = None) -> RunSpec:
    t, s = f.local_training, f.strategy
    which = s.WhichOneof("algorithm")
    params: dict[str, float] = {}
    if which == "fed_prox":
        params = {"proximal_mu": s.fed_prox.proximal_mu}
    elif which == "fed_adam":
        a = s.fed_adam
        params = {"server_learning_rate": a.server_learning_rate if a.HasField("server_learning_rate") else 0.1,
                  "beta_1": a.beta_1 if a.HasField("beta_1") else 0.9,
                  "beta_2": a.beta_2 if a.HasField("beta_2") else 0.99, "tau": a.tau if a.HasField("tau") else 1e-9}
    dp = None
    if f.HasField("differential_privacy"):
        d = f.differential_privacy
        dp = DpSpec(d.clipping_mode == fl_pb2.DP_CLIPPING_MODE_SERVER_SIDE_FIXED, d.noise_multiplier, d.clipping_norm,
                    d.delta, d.target_epsilon if d.HasField("target_epsilon") else None,
                    distributed=d.noise == fl_pb2.DP_NOISE_DISTRIBUTED)
    return RunSpec(
        run=run_name, architecture=architecture(f.model),
        training=TrainingConfig(t.epochs or 1, t.batch_size or 32, t.learning_rate or 0.01,
                                "adam" if t.optimizer == fl_pb2.LOCAL_OPTIMIZER_ADAM else "sgd"),
        feature_names=tuple(f.model.feature_names), label_name=f.model.label_name,
        strategy={"fed_prox": "fedprox", "fed_adam": "fedadam"}.get(which or "", "fedavg"), strategy_params=params,
        num_rounds=f.num_rounds, min_participants=f.min_participants,
        fraction_train=s.fraction_train if s.HasField("fraction_train") else 1.0,
        fraction_evaluate=s.fraction_evaluate if s.HasField("fraction_evaluate") else 1.0,
        round_timeout_seconds=seconds(f.round_timeout, DEFAULT_TIMEOUT_SECONDS),
        participant_wait_seconds=seconds(f.participant_wait_timeout, DEFAULT_TIMEOUT_SECONDS), seed=seed,
        node_ids=tuple(node_ids), secagg=secagg_spec(f), dp=dp, flare_sites=dict(flare_sites or {}))
