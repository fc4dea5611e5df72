"""The parts without processes: the RDP accountant, public-key parsing, the NumPy models, the ServerApp's
bounded wait for participants, the SuperLink's one-transaction object preregistration, and the store on SQLite
and PostgreSQL (all-or-nothing writes, unique keys, event sequences)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import text

from privmesh.fl import accountant
from privmesh.fl.app.model import Architecture, TrainingConfig, loss_and_accuracy, train
from privmesh.fl.app.noise import add_noise_share
from privmesh.fl.app.server_app import FederationClientManager, RunSession, _Stop
from privmesh.fl.app.spec import RunSpec
from privmesh.fl.coordinator import federations
from privmesh.fl.coordinator.keys import InvalidKey, parse_public_key
from privmesh.fl.coordinator.store import Conflict, CoordinatorStore
from privmesh.fl.coordinator.superlink_main import preregister_in_one_transaction
from privmesh.fl.v1 import fl_pb2 as pb
from privmesh.runtime.db import Database
from privmesh.runtime.errors import InvalidArgument


def test_rdp_without_sampling_matches_the_gaussian_closed_form() -> None:
    # Replace-one neighbours: Flower's noise multiplier z is over one clipping norm, the sensitivity is two.
    z, rounds, delta = 1.5, 4, 1e-5
    expected = min(rounds * a / (2 * (z / 2)**2) + math.log1p(-1 / a) - (math.log(delta) + math.log(a)) / (a - 1)
                   for a in accountant.ORDERS)
    assert accountant.epsilon(1.0, z, rounds, delta) == pytest.approx(expected)
    assert accountant.epsilon(1.0, z, 0, delta) == 0.0


def test_sampling_without_replacement_matches_google_dp_accounting() -> None:
    """Flower samples m of n participants without replacement: the figures are dp-accounting 0.6's
    SampledWithoutReplacementDpEvent under REPLACE_ONE (scripts/dev/dp_accounting_figures.py), capped by the
    unsampled Gaussian's, never the Poisson-subsampled bound (which is smaller and no guarantee here)."""
    figures = json.loads((Path(__file__).parent / "data" / "dp_accounting_figures.json").read_text())
    assert figures["library"] == "dp-accounting 0.6.0"
    cases = figures["cases"]
    unsampled = {(c["noise_multiplier"], c["rounds"], c["delta"]): c["epsilon"]
                 for c in cases if c["sample"] == c["population"]}
    for c in cases:
        expected = min(c["epsilon"], unsampled[(c["noise_multiplier"], c["rounds"], c["delta"])])
        ours = accountant.epsilon(c["sample"] / c["population"], c["noise_multiplier"], c["rounds"], c["delta"])
        assert ours == pytest.approx(expected, rel=1e-6), c
    # The old Poisson figure for 10 of 100 (z = 2, 50 rounds) was far below what sampling 10 without
    # replacement guarantees.
    poisson = _poisson_epsilon(0.1, 2.0, 50, 1e-5)
    assert poisson < 0.5 * accountant.epsilon(0.1, 2.0, 50, 1e-5)


def _poisson_epsilon(q: float, z: float, rounds: int, delta: float) -> float:
    """The bound the accountant used before (Poisson sampling, add/remove neighbours), for comparison."""
    from scipy.special import gammaln, logsumexp

    best = math.inf
    for a in accountant.ORDERS:
        k = np.arange(a + 1)
        terms = (gammaln(a + 1) - gammaln(k + 1) - gammaln(a - k + 1) + (a - k) * math.log1p(-q) + k * math.log(q)
                 + (k * k - k) / (2 * z**2))
        rdp = rounds * float(logsumexp(terms)) / (a - 1)
        best = min(best, rdp + math.log1p(-1 / a) - (math.log(delta) + math.log(a)) / (a - 1))
    return best


def test_epsilon_grows_with_rounds_and_shrinks_with_noise_and_sampling() -> None:
    eps = [accountant.epsilon(1.0, 1.0, t, 1e-5) for t in (1, 2, 10)]
    assert eps == sorted(eps) and eps[0] < eps[-1]
    assert accountant.epsilon(1.0, 2.0, 10, 1e-5) < eps[-1]
    assert accountant.epsilon(0.1, 1.0, 10, 1e-5) < eps[-1]


def test_keys_in_every_format_normalize_to_one_fingerprint() -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    ssh = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    raw = key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    parsed = [parse_public_key(pem, pb.PUBLIC_KEY_FORMAT_PEM), parse_public_key(ssh, pb.PUBLIC_KEY_FORMAT_SSH),
              parse_public_key(raw, pb.PUBLIC_KEY_FORMAT_RAW, pb.EC_CURVE_P256)]
    assert {p.fingerprint for p in parsed} == {parsed[0].fingerprint} and {p.curve for p in parsed} == {1}
    assert parsed[1].pem == pem
    with pytest.raises(InvalidKey, match="curve"):
        parse_public_key(raw, pb.PUBLIC_KEY_FORMAT_RAW)
    secp256k1 = ec.generate_private_key(ec.SECP256K1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(InvalidKey, match="not supported"):
        parse_public_key(secp256k1, pb.PUBLIC_KEY_FORMAT_PEM)


def _data(n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, size=(n, 4))
    y = (x @ np.array([2.0, -1.0, 1.5, 0.5]) > 0).astype(np.int64)
    return x, y


@pytest.mark.parametrize("arch", [Architecture(4, 2), Architecture(4, 2, (8,), "relu"),
                                  Architecture(4, 2, (6, 4), "square"), Architecture(4, 3, (5,), "tanh")])
def test_local_training_lowers_the_loss(arch: Architecture) -> None:
    x, y = _data()
    if arch.class_count == 3:
        y = np.where(x[:, 0] > 0.5, 2, y)
    start = arch.initial_weights(seed=1)
    trained, _ = train(arch, start, x, y, TrainingConfig(epochs=30, batch_size=32, learning_rate=0.3, seed=2))
    assert loss_and_accuracy(arch, trained, x, y)[0] < loss_and_accuracy(arch, start, x, y)[0] - 0.05
    again, _ = train(arch, start, x, y, TrainingConfig(epochs=30, batch_size=32, learning_rate=0.3, seed=2))
    assert all(np.array_equal(a, b) for a, b in zip(trained, again, strict=True))  # deterministic for a seed


def test_fedprox_keeps_local_weights_near_the_global_model() -> None:
    x, y = _data()
    arch = Architecture(4, 2)
    start = arch.initial_weights(seed=1)
    free, _ = train(arch, start, x, y, TrainingConfig(epochs=20, learning_rate=0.1, seed=1))
    prox, _ = train(arch, start, x, y, TrainingConfig(epochs=20, learning_rate=0.1, proximal_mu=5.0, seed=1))
    assert np.linalg.norm(prox[0] - start[0]) < 0.5 * np.linalg.norm(free[0] - start[0])


def test_run_spec_round_trips_and_names_the_client_app() -> None:
    f = pb.Federation(num_rounds=2, min_participants=3,
                      model=pb.ModelSpec(feature_count=6, class_count=2, mlp=pb.MlpSpec(
                          hidden_units=[4], activation=pb.MLP_ACTIVATION_SQUARE), label_name="y"),
                      strategy=pb.Strategy(fed_adam=pb.FedAdamParameters(tau=1e-3)),
                      secure_aggregation=pb.SecureAggregation(num_shares=3, reconstruction_threshold=2),
                      differential_privacy=pb.DifferentialPrivacy(
                          clipping_mode=pb.DP_CLIPPING_MODE_CLIENT_SIDE_FIXED, noise_multiplier=1.0,
                          clipping_norm=0.5, delta=1e-4))
    federations.validate("risk", f)
    spec = federations.run_spec(f, "federations/risk/runs/1", 5, [11, 12, 13])
    assert RunSpec.from_json(spec.to_json()) == spec
    assert spec.client_component() == "privmesh.fl.app.client_app:secagg_clipped"
    assert spec.strategy == "fedadam" and spec.strategy_params["tau"] == 1e-3
    assert spec.architecture.activation == "square" and spec.secagg is not None and spec.secagg.num_shares == 3

    assert spec.participant_wait_seconds == federations.DEFAULT_TIMEOUT_SECONDS


class _Node:
    def __init__(self, node_id: int) -> None:
        self.node_id = node_id
        self.cid = str(node_id)


def test_a_round_waits_for_offline_participants_only_as_long_as_the_federation_says() -> None:
    manager = FederationClientManager([1, 2, 3], wait_seconds=0.2)
    assert not manager.register(_Node(9))  # another federation's node on the shared SuperLink
    for node_id in (1, 2):
        assert manager.register(_Node(node_id))
    with pytest.raises(_Stop) as stop:  # Flower's own wait would be a day
        manager.sample(3, 3)
    assert stop.value.reason == pb.RUN_END_REASON_NOT_ENOUGH_PARTICIPANTS and "2 of the 3" in stop.value.message
    assert manager.register(_Node(3))
    assert sorted(c.node_id for c in manager.sample(3, 3)) == [1, 2, 3] == sorted(manager.last_sampled)


def test_the_superlink_preregisters_a_message_tree_in_one_transaction(tmp_path: Path) -> None:
    """Flower's own preregister commits object by object, which lets a concurrent delete remove a shared child
    between two commits; ours commits the tree at once. A tree whose last object is invalid shows which is
    which: with one transaction, nothing of it is left."""
    from flwr.proto.message_pb2 import ObjectTree
    from flwr.supercore.object_store.sql_object_store import SqlObjectStore

    def objects_left(store: SqlObjectStore) -> int:
        with store.session() as session:
            return int(session.execute(text("SELECT count(*) FROM objects")).scalar_one())

    shared, other = "a" * 64, "b" * 64
    tree = ObjectTree(object_id="not-a-sha256", children=[ObjectTree(object_id=shared), ObjectTree(object_id=other)])
    for name, preregister, left in (("flower", SqlObjectStore.preregister, 2),
                                    ("ours", preregister_in_one_transaction(SqlObjectStore.preregister), 0)):
        store = SqlObjectStore(str(tmp_path / f"{name}.db"))
        store.initialize()
        with pytest.raises(ValueError):
            preregister(store, 1, tree)
        assert objects_left(store) == left, name  # Flower's: the children stay, committed one by one


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> CoordinatorStore:
    url = (f"sqlite:///{tmp_path / 'fl.db'}" if request.param == "sqlite"
           else request.getfixturevalue("postgres_db"))
    return CoordinatorStore(Database(url))


def test_store_keeps_keys_unique_and_events_in_sequence(store: CoordinatorStore) -> None:
    store.create_federation(pb.Federation(name="federations/a"), "req-1", "d1")
    with pytest.raises(Conflict):
        store.create_federation(pb.Federation(name="federations/a"), "req-2", "d2")
    assert store.earlier_request("req-1") == ("d1", "federations/a") and store.earlier_request("req-2") is None
    p = pb.Participant(name="federations/a/participants/x", public_key_fingerprint="ff", node_id=2**63 + 5)
    store.add_participant(p, "federations/a", "", "")
    with pytest.raises(Conflict) as same_key:
        store.add_participant(pb.Participant(name="federations/a/participants/y", public_key_fingerprint="ff"),
                              "federations/a", "", "")
    assert same_key.value.what == "public_key"
    assert [q.node_id for q in store.participants("federations/a")] == [2**63 + 5]
    run = pb.Run(name="federations/a/runs/1", state=pb.RUN_STATE_PENDING)
    store.create_run(run, "federations/a", 1, "", "")
    with pytest.raises(Conflict):
        store.create_run(pb.Run(name="federations/a/runs/2", state=pb.RUN_STATE_PENDING), "federations/a", 2, "", "")
    for round_number in (1, 2):
        store.append_event(run.name, lambda seq, r=round_number: pb.RunEvent(
            sequence=seq, run=run.name, round_started=pb.RoundStarted(round=r)))
    assert [e.sequence for e in store.events(run.name, 0)] == [1, 2]
    assert store.run(run.name).last_event_sequence == 2  # type: ignore[union-attr]
    assert [r.name for r in store.active_runs()] == [run.name]


def _distributed(**secagg: Any) -> pb.Federation:
    secagg.setdefault("max_weight", 1.0)  # every update has weight 1
    return pb.Federation(
        num_rounds=2, min_participants=3, model=pb.ModelSpec(feature_count=6, class_count=2, label_name="y",
                                                             logistic_regression=pb.LogisticRegressionSpec()),
        strategy=pb.Strategy(fed_avg=pb.FedAvgParameters(), fraction_train=0.75),
        secure_aggregation=pb.SecureAggregation(**secagg),
        differential_privacy=pb.DifferentialPrivacy(
            clipping_mode=pb.DP_CLIPPING_MODE_CLIENT_SIDE_FIXED, noise_multiplier=1.0, clipping_norm=0.5,
            delta=1e-4, noise=pb.DP_NOISE_DISTRIBUTED))


def test_distributed_noise_shares_sum_to_the_central_noise() -> None:
    f = _distributed()
    federations.validate("risk", f)
    spec = federations.run_spec(f, "federations/risk/runs/1", 5, [11, 12, 13, 14])
    assert RunSpec.from_json(spec.to_json()) == spec
    assert spec.client_component() == "privmesh.fl.app.client_app:secagg_clipped_noised"
    assert spec.sample_count == 3 and spec.noise_share_stddev() == pytest.approx(1.0 * 0.5 / math.sqrt(3))
    # Summed over the 3 sampled participants, the shares have the central standard deviation z * C.
    rng = np.random.default_rng(1)
    shares = [add_noise_share([np.zeros(200_000)], spec.noise_share_stddev(), rng)[0] for _ in range(3)]
    assert float(np.std(np.sum(shares, axis=0))) == pytest.approx(0.5, rel=0.01)


@pytest.mark.parametrize(("change", "field"), [
    ({"secure_aggregation": None}, "federation.differential_privacy.noise"),
    ({"clipping_mode": pb.DP_CLIPPING_MODE_SERVER_SIDE_FIXED}, "federation.differential_privacy.clipping_mode"),
    ({"clipping_range": 1.0}, "federation.secure_aggregation.clipping_range"),  # 8 shares are 2.31
    ({"max_weight": 1000.0}, "federation.secure_aggregation.quantization_range"),  # shares scaled by 1/1000
    ({"quantization_range": 1024}, "federation.secure_aggregation.quantization_range"),
])
def test_distributed_noise_refuses_what_would_not_add_up(change: dict[str, Any], field: str) -> None:
    f = _distributed()
    for key, value in change.items():
        if key == "secure_aggregation":
            f.ClearField(key)
        elif key == "clipping_mode":
            f.differential_privacy.clipping_mode = value
        else:
            setattr(f.secure_aggregation, key, value)
    with pytest.raises(InvalidArgument) as refused:
        federations.validate("risk", f)
    assert refused.value.reason == "DP_PARAMETERS_INVALID"
    assert field in [v.field for v in refused.value.violations]


def test_a_round_with_dropouts_is_accounted_with_the_noise_that_reached_the_sum() -> None:
    f = _distributed()
    spec = federations.run_spec(f, "", 5, [11, 12, 13])
    session = RunSession(spec, None)
    # Round 1: all 3 shares; round 2: one participant dropped, 2 shares, noise multiplier sqrt(2/3).
    session.round_noise.extend([session.round_noise_multiplier(3), session.round_noise_multiplier(2)])
    assert session.round_noise == pytest.approx([1.0, math.sqrt(2 / 3)])
    assert session.epsilon_after(2) == pytest.approx(accountant.epsilon_of_rounds(1.0, [1.0, math.sqrt(2 / 3)], 1e-4))
    assert session.epsilon_after(2) > accountant.epsilon(1.0, 1.0, 2, 1e-4)  # less noise, more epsilon
    # The projection after them counts full noise for the rounds to come; central noise never shrinks.
    assert session.epsilon_after(3) == pytest.approx(
        accountant.epsilon_of_rounds(1.0, [1.0, math.sqrt(2 / 3), 1.0], 1e-4))
    central = _distributed()
    central.differential_privacy.noise = pb.DP_NOISE_CENTRAL
    assert RunSession(federations.run_spec(central, "", 5, [11, 12, 13]), None).round_noise_multiplier(2) == 1.0


@pytest.mark.parametrize("server_side", [False, True], ids=["client-side", "server-side"])
def test_under_central_dp_every_update_weighs_the_same(server_side: bool) -> None:
    """The noise covers one clipped update moving the mean by C/m: a site that reports 1000 examples against
    the others' 1 must move the aggregate exactly as much as any other (FedAvg alone would follow it), while
    the round still reports the sites' real example counts."""
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
    mode = pb.DP_CLIPPING_MODE_SERVER_SIDE_FIXED if server_side else pb.DP_CLIPPING_MODE_CLIENT_SIDE_FIXED
    f = pb.Federation(num_rounds=1, min_participants=3, model=pb.ModelSpec(
        feature_count=2, class_count=1, label_name="y", logistic_regression=pb.LogisticRegressionSpec()),
        strategy=pb.Strategy(fed_avg=pb.FedAvgParameters(), fraction_train=1.0),
        differential_privacy=pb.DifferentialPrivacy(clipping_mode=mode, noise_multiplier=1e-9, clipping_norm=100.0,
                                                    delta=1e-5))
    spec = federations.run_spec(f, "", 3, [11, 12, 13])
    assert spec.dp is not None and spec.dp.server_side == server_side
    session = RunSession(spec, None)
    initial = [np.zeros(2), np.zeros(1)]
    strategy = session.strategy(initial)
    strategy.current_round_params = initial  # type: ignore[attr-defined]  # what configure_fit would set
    updates = {11: 3.0, 12: 6.0, 13: 9.0}
    claimed = {11: 1000, 12: 1, 13: 1}
    results = [(_Node(n), FitRes(Status(Code.OK, ""), ndarrays_to_parameters([np.full(2, v), np.full(1, v)]),
                                 claimed[n], {"node": str(n), "train_loss": 1.0, "examples": 30}))
               for n, v in updates.items()]
    aggregate, _ = strategy.aggregate_fit(1, results, [])  # type: ignore[arg-type]
    assert aggregate is not None
    mean = parameters_to_ndarrays(aggregate)
    assert mean[0] == pytest.approx(np.full(2, 6.0), abs=1e-6)  # the plain mean; weighted it would be ~3.0
    assert session.fit["examples"] == 90.0
