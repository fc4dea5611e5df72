"""fl-coordinator's FLARE server in the chart, offline: off, it renders nothing new; on (examples/eks.yaml), the
FLARE port is a container port, a Service of its own (an NLB) and a NetworkPolicy rule for the sites only, the admin
port is none of these, the workspace is a PersistentVolumeClaim, and the coordinator's configuration (read by its
own settings model) binds the configured interface and ports under the load balancer's name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from privmesh.fl.settings import FlareSettings
from tests.k8s.chart import CHART, EXAMPLES, NAMESPACE, by_kind, helm, render, render_text

COORDINATOR = "fl-coordinator"
FLARE = "fl-coordinator-flare"
OFF = ("services.flCoordinator.flare.enabled=false",)


def _values() -> dict[str, Any]:
    return dict(yaml.safe_load((EXAMPLES / "eks.yaml").read_text())["services"]["flCoordinator"]["flare"])


def _coordinator(objects: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(pod spec, container, the `service:` section of its configuration)."""
    pod = by_kind(objects, "Deployment")[COORDINATOR]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    config = yaml.safe_load(by_kind(objects, "ConfigMap")[f"{COORDINATOR}-config"]["data"]["config.yaml"])
    return pod, container, config["service"]


def _ports(rule: dict[str, Any]) -> set[Any]:
    return {p["port"] for p in rule.get("ports", ())}


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


@pytest.fixture(scope="module")
def eks() -> list[dict[str, Any]]:
    return render(EXAMPLES / "eks.yaml")


@pytest.mark.parametrize("values", ["local.yaml", None], ids=["local", "defaults"])
def test_off_by_default(values: str | None) -> None:
    objects = render(*([EXAMPLES / values] if values else []))
    assert not [o for o in objects if "flare" in o["metadata"]["name"]]
    assert not by_kind(objects, "PersistentVolumeClaim")
    pod, container, service = _coordinator(objects)
    assert "flare" not in service
    assert "flare" not in {p["name"] for p in container["ports"]}
    assert "flare" not in {v["name"] for v in pod["volumes"]}
    assert not any("flare" in _ports(r) for r in by_kind(objects, "NetworkPolicy")[COORDINATOR]["spec"]["ingress"])


def test_turning_it_off_removes_exactly_what_it_adds(eks: list[dict[str, Any]]) -> None:
    """FLARE off renders nothing new: the same objects less its Service and claim, and only the coordinator's
    Deployment, configuration and NetworkPolicy differ."""
    off = {_key(o): o for o in render(EXAMPLES / "eks.yaml", sets=OFF)}
    on = {_key(o): o for o in eks}
    assert set(on) - set(off) == {("Service", FLARE), ("PersistentVolumeClaim", FLARE)}
    assert set(off) <= set(on)
    changed = {k for k in off if off[k] != on[k]}
    assert changed == {("Deployment", COORDINATOR), ("ConfigMap", f"{COORDINATOR}-config"),
                       ("NetworkPolicy", COORDINATOR)}
    pod_off, container_off, _ = _coordinator(list(off.values()))
    pod_on, container_on, _ = _coordinator(eks)
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):  # probes unchanged
        assert container_on[probe] == container_off[probe]
    assert container_on["securityContext"] == container_off["securityContext"]
    assert pod_on["securityContext"] == pod_off["securityContext"]


def test_the_coordinator_binds_the_configured_interface_and_ports(eks: list[dict[str, Any]]) -> None:
    values = _values()
    pod, container, service = _coordinator(eks)
    settings = FlareSettings.model_validate(service["flare"])  # the coordinator's own validator
    assert settings.address == f"{values['advertisedHost']}:{values['port']}"  # the name sites dial, in every kit
    assert (settings.bind_host, settings.admin_port) == (values["bindAddress"], values["adminPort"])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert str(settings.directory).startswith(mounts["flare"] + "/")  # the workspace is on the claim
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["flare"]["persistentVolumeClaim"] == {"claimName": FLARE}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["flare"] == values["port"] and values["adminPort"] not in ports.values()
    assert container["resources"] == values.get("resources", _default_resources())
    assert by_kind(eks, "Deployment")[COORDINATOR]["spec"]["strategy"] == {"type": "Recreate"}  # one RWO claim


def _default_resources() -> Any:
    return yaml.safe_load((CHART / "values.yaml").read_text())["services"]["flCoordinator"]["flare"]["resources"]


def test_the_flare_port_is_a_service_of_its_own_and_the_admin_port_is_nowhere(eks: list[dict[str, Any]]) -> None:
    values = _values()
    flare = by_kind(eks, "Service")[FLARE]
    deployment = by_kind(eks, "Deployment")[COORDINATOR]
    assert flare["spec"]["type"] == "LoadBalancer"
    assert flare["metadata"]["annotations"] == values["service"]["annotations"]
    assert flare["spec"]["loadBalancerSourceRanges"] == values["service"]["loadBalancerSourceRanges"]
    assert flare["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert flare["spec"]["ports"] == [{"name": "flare", "port": values["port"], "targetPort": "flare",
                                       "protocol": "TCP"}]
    for service in by_kind(eks, "Service").values():
        assert values["adminPort"] not in {p["port"] for p in service["spec"]["ports"]}
    claim = by_kind(eks, "PersistentVolumeClaim")[FLARE]["spec"]
    assert claim == {"accessModes": ["ReadWriteOnce"], "storageClassName": "gp3",
                     "resources": {"requests": {"storage": "2Gi"}}}


def test_network_policy_admits_the_sites_on_the_flare_port_only(eks: list[dict[str, Any]]) -> None:
    values = _values()
    ingress = by_kind(eks, "NetworkPolicy")[COORDINATOR]["spec"]["ingress"]
    flare_rules = [r for r in ingress if "flare" in _ports(r)]
    assert flare_rules == [{"from": values["from"], "ports": [{"protocol": "TCP", "port": "flare"}]}]
    admin = values["adminPort"]
    for policy in by_kind(eks, "NetworkPolicy").values():
        for rule in [*policy["spec"].get("ingress", []), *(policy["spec"].get("egress") or [])]:
            assert admin not in _ports(rule)


def test_sites_reach_the_admission_services_on_grpc_only(eks: list[dict[str, Any]]) -> None:
    """The sites' admission path (IssueChallenge, RegisterParticipant, GetStartupKit): an external Service for the
    grpc port of attestation-verifier and fl-coordinator, and a NetworkPolicy rule for the sites there only."""
    services = yaml.safe_load((EXAMPLES / "eks.yaml").read_text())["services"]
    external = {n: s for n, s in by_kind(eks, "Service").items() if n.endswith("-external")}
    assert set(external) == {"attestation-verifier-external", "fl-coordinator-external"}
    for name, service in external.items():
        selector = by_kind(eks, "Deployment")[name.removesuffix("-external")]["spec"]["selector"]["matchLabels"]
        assert service["spec"]["selector"] == selector and service["spec"]["type"] == "LoadBalancer"
        assert [(p["name"], p["targetPort"]) for p in service["spec"]["ports"]] == [("grpc", "grpc")]
        assert service["spec"]["loadBalancerSourceRanges"] == ["198.51.100.0/28", "203.0.113.64/28"]
    sites = services["flCoordinator"]["external"]["from"]
    for name, policy in by_kind(eks, "NetworkPolicy").items():
        rules = [r for r in policy["spec"].get("ingress", []) if r.get("from") == sites]
        if name == "attestation-verifier":
            assert [_ports(r) for r in rules] == [{"grpc"}]
        elif name == COORDINATOR:
            assert sorted(sorted(_ports(r)) for r in rules) == [["flare"], ["grpc"]]
        else:
            assert not rules, name
    assert not [o for o in render() if o["metadata"]["name"].endswith("-external")]  # off by default


def test_cluster_only_defaults_and_an_existing_claim() -> None:
    objects = render(sets=("services.flCoordinator.flare.enabled=true",
                           "services.flCoordinator.flare.persistence.existingClaim=flare-ws"))
    _, _, service = _coordinator(objects)
    assert service["flare"]["address"] == f"{FLARE}.{NAMESPACE}.svc:8002"  # sites inside the cluster
    flare = by_kind(objects, "Service")[FLARE]["spec"]
    assert flare["type"] == "ClusterIP" and "loadBalancerSourceRanges" not in flare
    assert not by_kind(objects, "PersistentVolumeClaim")
    pod, _, _ = _coordinator(objects)
    assert {v["name"]: v for v in pod["volumes"]}["flare"]["persistentVolumeClaim"] == {"claimName": "flare-ws"}
    # No `from`: no NetworkPolicy rule admits the FLARE port (deny by default).
    assert not [r for r in by_kind(objects, "NetworkPolicy")[COORDINATOR]["spec"]["ingress"] if "flare" in _ports(r)]


def test_helm_lint_with_flare_on() -> None:
    result = helm("lint", "--strict", str(CHART), "--namespace", NAMESPACE,
                  "--set", "services.flCoordinator.flare.enabled=true")
    assert result.returncode == 0, result.stdout + result.stderr


BAD = [
    ({"port": 70000}, "/services/flCoordinator/flare/port"),
    ({"adminPort": 0}, "/services/flCoordinator/flare/adminPort"),
    ({"advertisedHost": "flare.example.com:8002"}, "/services/flCoordinator/flare/advertisedHost"),
    ({"bindAddress": "0.0.0.0:8002"}, "/services/flCoordinator/flare/bindAddress"),
    ({"service": {"type": "ExternalName"}}, "/services/flCoordinator/flare/service/type"),
    ({"service": {"loadBalancerSourceRanges": ["hospital-a"]}},
     "/services/flCoordinator/flare/service/loadBalancerSourceRanges/0"),
    ({"persistence": {"size": "lots"}}, "/services/flCoordinator/flare/persistence/size"),
    ({"tls": True}, "/services/flCoordinator/flare"),
    ({"ccPolicy": "Flare Sites"}, "/services/flCoordinator/flare/ccPolicy"),
]


@pytest.mark.parametrize(("flare", "field"), BAD, ids=[f.rsplit("/", 1)[1] for _, f in BAD])
def test_bad_flare_values_are_refused_with_the_field_named(flare: dict[str, Any], field: str,
                                                          tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"services": {"flCoordinator": {"flare": {"enabled": True, **flare}}}}))
    result = render_text(path)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert field in result.stderr, result.stderr


def test_the_admin_port_must_differ_from_the_flare_port() -> None:
    result = render_text(sets=("services.flCoordinator.flare.enabled=true", "services.flCoordinator.flare.port=8003",
                               "services.flCoordinator.flare.adminPort=8003"))
    assert result.returncode != 0 and "adminPort must differ from flare.port" in result.stderr


def test_the_sites_evidence_policy_reaches_the_coordinator(eks: list[dict[str, Any]]) -> None:
    """ccPolicy turns on FLARE's CC checks with privmesh's Nitro authorizer; absent, FLARE checks no evidence;
    without an attestation-verifier to judge the evidence the chart refuses to render."""
    _, _, service = _coordinator(eks)
    assert FlareSettings.model_validate(service["flare"]).cc_policy == _values()["ccPolicy"] == "flare-sites"
    assert service["attestation_verifier_target"]
    _, _, without = _coordinator(render(EXAMPLES / "eks.yaml", sets=("services.flCoordinator.flare.ccPolicy=",)))
    assert "cc_policy" not in without["flare"]
    result = render_text(EXAMPLES / "eks.yaml", sets=("services.attestationVerifier.enabled=false",))
    assert result.returncode != 0 and "ccPolicy needs attestation-verifier enabled" in result.stderr
