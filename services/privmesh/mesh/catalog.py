"""The implemented services, and what the local mesh needs to know to run each one.

A service appears here only once it is real: nothing that answers UNIMPLEMENTED is ever started.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from privmesh.runtime.ports import free_loopback_port


@dataclass(frozen=True)
class ServiceSpec:
    name: str  # process, audit chain and SPIFFE service-account name
    module: str  # run as `python -m <module>`
    grpc_service: str  # the full name its health status is reported under
    local_settings: Callable[[Path], dict[str, Any]]  # the `service:` section for a local state directory
    client_methods: tuple[str, ...] = ()  # what the demo client may call (authorization policy globs)
    peer_methods: dict[str, tuple[str, ...]] = field(default_factory=dict)  # other service -> methods it may call
    # Stronger views the local operator (admin) is granted by name (no wildcard or default resource grants one).
    admin_views: tuple[str, ...] = ()


def peer_target(state_dir: Path, service: str) -> str | None:
    """The address of a service listed earlier in CATALOG: its config is written first, with the port it will use."""
    import yaml

    config = state_dir / "config" / f"{service}.yaml"
    return str(yaml.safe_load(config.read_text())["server"]["listen"]) if config.exists() else None


def enclave_simulator_dir(state_dir: Path) -> Path:
    """Where the local mesh keeps the enclave simulator's development CA (root.pem beside it)."""
    return state_dir / "enclave-sim"


def _attestation_settings(state_dir: Path) -> dict[str, Any]:
    from privmesh.enclave.simulator import ROOT_FILE, DevCa

    sim = enclave_simulator_dir(state_dir)
    DevCa.load_or_create(sim)
    data = state_dir / "data" / "attestation-verifier"
    return {
        "database": f"sqlite:///{data / 'attestation.db'}",
        "token_signing_key_file": str(data / "token-signing-key.pem"),
        # Local mode only: the simulator's development root is trusted explicitly, beside the pinned AWS root.
        "dev_root_files": [str(sim / ROOT_FILE)],
    }


def _keybroker_settings(state_dir: Path) -> dict[str, Any]:
    data = state_dir / "data" / "key-broker"
    settings: dict[str, Any] = {
        "database": f"sqlite:///{data / 'keybroker.db'}",
        "keystore_file": str(data / "keystore.bin"),
        "root_key_file": str(data / "root-key.bin"),
        # Local mode only: deletion may be scheduled with no waiting period, so the demo can show crypto-shredding.
        "min_deletion_waiting_seconds": 0,
    }
    verifier = peer_target(state_dir, "attestation-verifier")
    if verifier is not None:
        settings["attestation"] = {"verifier_target": verifier}
    return settings


def _tokenvault_settings(state_dir: Path) -> dict[str, Any]:
    data = state_dir / "data" / "token-vault"
    return {"database": f"sqlite:///{data / 'tokenvault.db'}",
            "key_broker_target": peer_target(state_dir, "key-broker") or "",
            # Local mode only, as key-broker's minimum there: ForgetSubject destroys subject keys at once.
            "subject_key_deletion_waiting_seconds": 0}


def _fhe_settings(state_dir: Path) -> dict[str, Any]:
    data = state_dir / "data" / "fhe-inference"
    # Production models only (HEStd_128_classic); the demo registers its model at run time with CreateModel.
    # A short job lease: one node, so a job whose process was killed is resumed seconds after the restart.
    return {"database": f"sqlite:///{data / 'fhe.db'}", "key_dir": str(data / "keys"),
            "jobs": {"lease_seconds": 3, "poll_seconds": 0.5}}


def _dpgateway_settings(state_dir: Path) -> dict[str, Any]:
    data = state_dir / "data" / "dp-gateway"
    return {"database": f"sqlite:///{data / 'dpgateway.db'}", "cache_dir": str(data / "source-cache")}


LOCAL_FLARE_ENV = "PRIVMESH_LOCAL_FLARE"


def _fl_settings(state_dir: Path) -> dict[str, Any]:
    fleet_port = free_loopback_port()  # the SuperLink keeps one Fleet port across restarts
    data = state_dir / "data" / "fl-coordinator"
    settings: dict[str, Any] = {
        "database": f"sqlite:///{data / 'fl.db'}", "superlink_dir": str(data / "superlink"),
        "fleet_address": f"127.0.0.1:{fleet_port}", "key_broker_target": peer_target(state_dir, "key-broker") or "",
        "attestation_verifier_target": peer_target(state_dir, "attestation-verifier") or ""}
    if os.environ.get(LOCAL_FLARE_ENV) == "1":  # `privmesh demo --fl-engine flare`: a FLARE server on loopback
        settings["flare"] = {"address": "localhost:0", "directory": str(data / "flare")}
    return settings


ATTESTATION = "privmesh.attestation.v1.AttestationVerifier"
KEYBROKER = "privmesh.keybroker.v1.KeyBroker"
TOKENVAULT = "privmesh.tokenvault.v1.TokenVault"
FHE = "privmesh.fhe.v1.FHEInference"
DPGATEWAY = "privmesh.dpgateway.v1.DPGateway"
FL = "privmesh.fl.v1.FLCoordinator"
FL_REPORTER = "privmesh.fl.v1.FLRunReporter"

CATALOG: tuple[ServiceSpec, ...] = (
    ServiceSpec(
        name="attestation-verifier", module="privmesh.attestation", grpc_service=ATTESTATION,
        local_settings=_attestation_settings,
        client_methods=(f"{ATTESTATION}/IssueChallenge", f"{ATTESTATION}/VerifyAttestation",
                        f"{ATTESTATION}/GetVerificationKeys", f"{ATTESTATION}/GetPolicy"),
        peer_methods={"key-broker": (f"{ATTESTATION}/VerifyAttestation", f"{ATTESTATION}/GetVerificationKeys"),
                      "fl-coordinator": (f"{ATTESTATION}/VerifyAttestation", f"{ATTESTATION}/GetPolicy")},
    ),
    ServiceSpec(
        name="key-broker", module="privmesh.keybroker", grpc_service=KEYBROKER,
        local_settings=_keybroker_settings,
        client_methods=(f"{KEYBROKER}/*",),  # the key policies decide per key (deny by default)
        peer_methods={"token-vault": (f"{KEYBROKER}/*",), "fl-coordinator": (f"{KEYBROKER}/*",)},
    ),
    ServiceSpec(
        name="token-vault", module="privmesh.tokenvault", grpc_service=TOKENVAULT,
        local_settings=_tokenvault_settings,
        # Per-field detokenize policies decide what the demo client sees (masks, by the demo's fields).
        client_methods=(f"{TOKENVAULT}/Tokenize", f"{TOKENVAULT}/Detokenize", f"{TOKENVAULT}/GetField",
                        f"{TOKENVAULT}/ListFields"),
        admin_views=("tenants/*/fields/*:plaintext",),
    ),
    ServiceSpec(
        name="fhe-inference", module="privmesh.fhe", grpc_service=FHE, local_settings=_fhe_settings,
        client_methods=(f"{FHE}/ListModels", f"{FHE}/GetModel", f"{FHE}/RegisterKeys", f"{FHE}/GetSession",
                        f"{FHE}/DeleteSession", f"{FHE}/Infer", f"{FHE}/SubmitJob", f"{FHE}/GetJob",
                        f"{FHE}/ListJobs", f"{FHE}/GetJobResult", f"{FHE}/CancelJob"),
    ),
    ServiceSpec(
        name="dp-gateway", module="privmesh.dpgateway", grpc_service=DPGATEWAY,
        local_settings=_dpgateway_settings,
        client_methods=(f"{DPGATEWAY}/Query", f"{DPGATEWAY}/QuerySql", f"{DPGATEWAY}/GetBudget",
                        f"{DPGATEWAY}/GetDataset", f"{DPGATEWAY}/ListDatasets"),
        admin_views=("datasets/*:analysts",),
    ),
    ServiceSpec(
        name="fl-coordinator", module="privmesh.fl", grpc_service=FL,
        local_settings=_fl_settings,
        client_methods=(f"{FL}/GetFederation", f"{FL}/ListFederations", f"{FL}/ListParticipants", f"{FL}/GetRun",
                        f"{FL}/ListRuns", f"{FL}/WatchRun"),
        peer_methods={"fl-coordinator": (f"{FL_REPORTER}/*",)},  # its own ServerApps report runs
        admin_views=("federations/*/runs/*/model:decrypted",),
    ),
)
