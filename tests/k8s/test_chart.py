"""The Helm chart offline: helm lint and template of every example, every rendered service config accepted by
the service's own validator, the values schema current and strict, every object valid against the OpenAPI
schemas of two Kubernetes minor versions, and the placement, security and network rules the chart promises."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from privmesh.attestation.policy_files import load_policy_file
from privmesh.mesh.catalog import CATALOG
from privmesh.runtime.authz import Authorizer
from privmesh.runtime.config import load_config
from privmesh.runtime.identity import SpiffeId
from tests.k8s.chart import CHART, EXAMPLES, NAMESPACE, TOOLS, by_kind, helm, render, render_text
from tests.k8s.openapi import KubernetesSchemas

ROOT = Path(__file__).resolve().parents[2]
VALUES = Path(__file__).resolve().parent / "values"
EXAMPLE_FILES = [EXAMPLES / "local.yaml", EXAMPLES / "eks.yaml", VALUES / "only-token-vault.yaml"]
SCHEMA_VERSIONS = ("v1.33.13", "v1.34.4")  # scripts/dev/k8s-tools.sh SCHEMA_VERSIONS
NOT_KUBERNETES = {("cert-manager.io/v1", "Certificate")}  # a CRD: checked by the tests below, not by OpenAPI
SPECS = {spec.name: spec for spec in CATALOG}


def spiffe(sa: str) -> str:
    return f"spiffe://privmesh.local/ns/{NAMESPACE}/sa/{sa}"


@pytest.fixture(scope="module", params=EXAMPLE_FILES, ids=lambda p: p.stem)
def rendered(request: pytest.FixtureRequest) -> tuple[Path, list[dict[str, Any]]]:
    return request.param, render(request.param)


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


@pytest.mark.parametrize("values", [None, *EXAMPLE_FILES], ids=lambda p: p.stem if p else "defaults")
def test_helm_lint(values: Path | None) -> None:
    args = ["lint", "--strict", str(CHART), "--namespace", NAMESPACE]
    result = helm(*args, *(["-f", str(values)] if values else []))
    assert result.returncode == 0, result.stdout + result.stderr


def test_values_schema_is_generated_from_the_settings_models() -> None:
    sys.path.insert(0, str(ROOT / "scripts" / "dev"))
    try:
        chart_schema = importlib.import_module("chart_schema")
    finally:
        sys.path.pop(0)
    assert chart_schema.main(["--check"]) == 0


def _files_under_mounts(value: Any, mounts: list[str], found: list[str]) -> None:
    if isinstance(value, dict):
        for item in value.values():
            _files_under_mounts(item, mounts, found)
    elif isinstance(value, list):
        for item in value:
            _files_under_mounts(item, mounts, found)
    elif isinstance(value, str) and value.startswith("/"):
        assert any(value == m or value.startswith(m.rstrip("/") + "/") for m in mounts), \
            f"{value} is not on a volume the pod mounts ({mounts})"
        found.append(value)


def _relocate(value: Any, root: Path) -> Any:
    if isinstance(value, dict):
        return {k: _relocate(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [_relocate(v, root) for v in value]
    if isinstance(value, str) and value.startswith("/"):
        return str(root / value.lstrip("/"))
    return value


def test_every_service_config_passes_the_services_own_validator(rendered, tmp_path: Path) -> None:
    """The ConfigMap of each service, on the paths its pod mounts, read by runtime.config + the service's model."""
    _, objects = rendered
    configs = by_kind(objects, "ConfigMap")
    deployments = by_kind(objects, "Deployment")
    checked = []
    for name, spec in SPECS.items():
        if name not in deployments:
            assert f"{name}-config" not in configs
            continue
        c = container(deployments[name])
        assert c["args"] == ["python", "-m", spec.module, "--config", "/etc/privmesh/config/config.yaml"]
        mounts = [m["mountPath"] for m in c["volumeMounts"]]
        data = yaml.safe_load(configs[f"{name}-config"]["data"]["config.yaml"])
        paths: list[str] = []
        # The Spark engine's Python is a file of the image (images/dp-gateway-spark.Dockerfile), not of a volume.
        in_image = {k: v for k, v in data["service"].items() if k != "spark_python"}
        _files_under_mounts({**data, "service": in_image}, mounts, paths)
        root = tmp_path / name
        volumes = {v["name"]: v for v in deployments[name]["spec"]["template"]["spec"]["volumes"]}
        for mount in c["volumeMounts"]:  # what the pod's volumes put there: ConfigMaps as rendered
            directory = root / mount["mountPath"].lstrip("/")
            directory.mkdir(parents=True, exist_ok=True)
            source = volumes[mount["name"]].get("configMap")
            for file, text in (configs[source["name"]]["data"].items() if source else ()):
                (directory / file).write_text(text)
        for path in paths:  # and Secrets: certificates and keys (not parsed by the validator)
            target = root / path.lstrip("/")
            if path.endswith((".crt", ".key", ".pem")):
                target.write_text("-----BEGIN PLACEHOLDER-----\n")
        config_file = root / "config.yaml"
        config_file.write_text(yaml.safe_dump(_relocate(data, root)))
        definition = importlib.import_module(f"{spec.module}.server").DEFINITION
        env = {e["name"]: e.get("value", "") for e in c.get("env", ())}
        server, settings = load_config(config_file, definition.settings_model, environ=env)
        Authorizer.from_file(server.authz_policy)
        for policy_file in getattr(settings, "policy_files", ()):
            assert load_policy_file(policy_file).name == "prod-enclave"
        assert server.health_listen == f"0.0.0.0:{c['readinessProbe']['grpc']['port']}"
        assert server.trust_domain == yaml.safe_load((rendered[0]).read_text()).get("trustDomain", "privmesh.local")
        checked.append(name)
    assert checked


def test_mesh_peer_rules_are_the_catalogs() -> None:
    objects = render(EXAMPLES / "local.yaml")
    policy = yaml.safe_load(by_kind(objects, "ConfigMap")["privmesh-authz-policy"]["data"]["authz-policy.yaml"])
    rendered_peers = {(r["name"], r["principals"][0], tuple(r["methods"])) for r in policy["rules"]
                      if "-to-" in r["name"]}
    expected = {(f"{peer}-to-{spec.name}", spiffe(peer), tuple(methods))
                for spec in CATALOG for peer, methods in spec.peer_methods.items()}
    assert rendered_peers == expected


def test_only_one_service() -> None:
    objects = render(VALUES / "only-token-vault.yaml")
    assert set(by_kind(objects, "Deployment")) == {"token-vault"}
    data = yaml.safe_load(by_kind(objects, "ConfigMap")["token-vault-config"]["data"]["config.yaml"])
    assert data["service"]["key_broker_target"] == ""
    policy = yaml.safe_load(by_kind(objects, "ConfigMap")["privmesh-authz-policy"]["data"]["authz-policy.yaml"])
    assert policy == {"rules": []}  # no peer is deployed: nobody may call (deny by default)


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_objects_valid_against_kubernetes_openapi(rendered, version: str) -> None:
    schemas = KubernetesSchemas.for_release(TOOLS / "k8s-openapi" / version)
    _, objects = rendered
    problems = []
    for obj in objects:
        key = (obj["apiVersion"], obj["kind"])
        if key in NOT_KUBERNETES:
            continue
        assert schemas.knows(*key), f"{key} is not a kind of Kubernetes {version}"
        problems += [f"{obj['kind']}/{obj['metadata']['name']}: {e}" for e in schemas.errors(obj)]
    assert problems == []


def test_openapi_validation_is_strict() -> None:
    """The schema check would catch what a strict API server refuses: an unknown field, a wrong type."""
    schemas = KubernetesSchemas.for_release(TOOLS / "k8s-openapi" / SCHEMA_VERSIONS[-1])
    deployment = by_kind(render(EXAMPLES / "local.yaml"), "Deployment")["token-vault"]
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["tls"] = True
    deployment["spec"]["replicas"] = "two"
    errors = schemas.errors(deployment)
    assert any("tls" in e for e in errors) and any(e.startswith("spec.replicas") for e in errors), errors


BAD_VALUES = [
    ({"replicaCount": 3}, "replicaCount"),
    ({"services": {"tokenVault": {"replicas": "two"}}}, "/services/tokenVault/replicas"),
    ({"services": {"keyBroker": {"settings": {"min_deletion_waiting_secs": 0}}}}, "min_deletion_waiting_secs"),
    ({"services": {"tokenVault": {"settings": {"max_batch_items": 5000}}}},
     "/services/tokenVault/settings/max_batch_items"),
    ({"services": {"flCoordinator": {"replicas": 2}}}, "/services/flCoordinator/replicas"),
    ({"enclave": {"pcrs": {"pcr0": "zz"}}}, "/enclave/pcrs/pcr0"),
    ({"enclave": {"hugepages": "4Mi"}}, "/enclave/hugepages"),
    ({"fhe": {"evaluator": {"backend": "cuda"}}}, "/fhe/evaluator/backend"),
    ({"fhe": {"sandbox": {"uid": 65534, "gid": 10001}}}, "/fhe/sandbox/gid"),
    ({"fhe": {"sandbox": {"uid": 0, "gid": 65534}}}, "/fhe/sandbox/uid"),
    ({"tls": {"mode": "vault"}}, "/tls/mode"),
    ({"aws": {"kms": {"roleArn": "role/key-broker"}}}, "/aws/kms/roleArn"),
    ({"authz": {"rules": [{"name": "x", "principals": ["alice"], "methods": ["*"]}]}},
     "/authz/rules/0/principals/0"),
    ({"nodeGroups": {"gpu": {"taint": {"key": "nvidia.com/gpu", "effect": "NoExecuteNow"}}}},
     "/nodeGroups/gpu/taint/effect"),
]


@pytest.mark.parametrize(("values", "field"), BAD_VALUES, ids=[f for _, f in BAD_VALUES])
def test_bad_values_are_refused_with_the_field_named(values: dict[str, Any], field: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(values))
    result = render_text(path)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert field in result.stderr, result.stderr


def _placement(pod: dict[str, Any]) -> tuple[set[str], set[str], set[str]]:
    """(node-group values required with In, values excluded with NotIn, tolerated taint keys)."""
    required: set[str] = set()
    excluded: set[str] = set()
    terms = pod.get("affinity", {}).get("nodeAffinity", {}).get("requiredDuringSchedulingIgnoredDuringExecution",
                                                                {}).get("nodeSelectorTerms", [])
    for term in terms:
        for expr in term["matchExpressions"]:
            (required if expr["operator"] == "In" else excluded).update(expr["values"])
    return required, excluded, {t["key"] for t in pod.get("tolerations", ())}


def test_eks_placement_enclave_on_nitro_fhe_on_gpu_nothing_else() -> None:
    objects = render(EXAMPLES / "eks.yaml")
    for name, obj in {**by_kind(objects, "Deployment"), **by_kind(objects, "DaemonSet"),
                      **by_kind(objects, "StatefulSet")}.items():
        pod = obj["spec"]["template"]["spec"]
        required, excluded, tolerated = _placement(pod)
        limits = pod["containers"][0]["resources"].get("limits", {})
        if name in ("enclave-parent", "nitro-enclaves-device-plugin"):
            assert (required, tolerated) == ({"nitro"}, {"aws.ec2.nitro/nitro_enclaves"}), name
        elif name == "fhe-inference":
            assert (required, tolerated) == ({"gpu"}, {"nvidia.com/gpu"})
            assert limits["nvidia.com/gpu"] == 1
        else:
            assert (required, tolerated, excluded) == (set(), set(), {"nitro", "gpu"}), name
            assert "nvidia.com/gpu" not in limits
    parent = by_kind(objects, "Deployment")["enclave-parent"]["spec"]["template"]["spec"]["containers"][0]
    assert parent["resources"]["limits"] == {"memory": "256Mi", "hugepages-2Mi": "1024Mi",
                                             "aws.ec2.nitro/nitro_enclaves": "1"}
    assert parent["resources"]["requests"]["cpu"] == "2250m"  # 2 enclave vCPUs + the parent's 250m
    policy = yaml.safe_load(by_kind(objects, "ConfigMap")["privmesh-attestation-policy"]["data"]["prod-enclave.yaml"])
    pcrs = yaml.safe_load((EXAMPLES / "eks.yaml").read_text())["enclave"]["pcrs"]
    assert policy["allowed_pcr_sets"][0]["pcrs"] == {0: pcrs["pcr0"], 1: pcrs["pcr1"], 2: pcrs["pcr2"]}


def test_fhe_evaluator_backend_is_passed_through() -> None:
    """fhe.evaluator renders service.evaluator (the GPU evaluator's settings); device defaults to cuda on GPUs."""
    def evaluator(*sets: str) -> Any:
        objects = render(EXAMPLES / "eks.yaml", sets=sets)
        return yaml.safe_load(by_kind(objects, "ConfigMap")["fhe-inference-config"]["data"]["config.yaml"])[
            "service"].get("evaluator")

    assert evaluator() == {"backend": "torch", "device": "cuda"}  # the EKS example: torch on the GPUs
    assert evaluator("fhe.evaluator.backend=") is None  # empty backend: the service's default
    assert evaluator("fhe.evaluator.device=") == {"backend": "torch", "device": "cuda"}  # GPUs on: cuda
    assert evaluator("fhe.evaluator.device=", "fhe.gpu.enabled=false") == {"backend": "torch", "device": "auto"}
    assert evaluator("fhe.evaluator.backend=openfhe", "fhe.evaluator.device=cpu") == {"backend": "openfhe",
                                                                                     "device": "cpu"}


def test_local_has_no_aws_nitro_or_gpu() -> None:
    objects = render(EXAMPLES / "local.yaml")
    text = yaml.safe_dump_all(objects)
    for absent in ("nvidia.com/gpu:", "aws.ec2.nitro/nitro_enclaves:", "eks.amazonaws.com/role-arn", "aws_kms"):
        assert absent not in text
    fhe = yaml.safe_load(by_kind(objects, "ConfigMap")["fhe-inference-config"]["data"]["config.yaml"])
    assert "evaluator" not in fhe["service"]


def _assert_sandbox_context(deployment: dict[str, Any], config_map: dict[str, Any]) -> None:
    """fhe-inference starts as root with CAP_SETUID/CAP_SETGID only, to run its OpenFHE workers as another user
    outside the group that may read the mounted secrets (root-owned, group fsGroup)."""
    pod = deployment["spec"]["template"]["spec"]
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["fsGroup"]) == (0, 10001)
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert (sc["runAsUser"], sc["readOnlyRootFilesystem"], sc["allowPrivilegeEscalation"], sc["capabilities"],
            sc["seccompProfile"]) == (0, True, False, {"drop": ["ALL"], "add": ["SETUID", "SETGID"]},
                                      {"type": "RuntimeDefault"})
    modes = {v["name"]: v["secret"]["defaultMode"] for v in pod["volumes"] if "secret" in v}
    assert modes and all(mode & 0o007 == 0 for mode in modes.values()), modes  # nothing for other users
    sandbox = yaml.safe_load(config_map["data"]["config.yaml"])["service"]["sandbox"]
    assert sandbox["uid"] not in (0, 10001) and sandbox["gid"] not in (0, 10001)


def test_restricted_pods_native_grpc_probes_and_graceful_termination(rendered) -> None:
    path, objects = rendered
    values = yaml.safe_load(path.read_text())
    for name, deployment in by_kind(objects, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        if name == "fhe-inference":
            _assert_sandbox_context(deployment, by_kind(objects, "ConfigMap")[f"{name}-config"])
        else:
            assert pod["securityContext"]["runAsNonRoot"] is True
            for c in pod["containers"]:
                sc = c["securityContext"]
                assert (sc["runAsNonRoot"], sc["readOnlyRootFilesystem"], sc["allowPrivilegeEscalation"],
                        sc["capabilities"]) == (True, True, False, {"drop": ["ALL"]}), name
        if name not in SPECS:
            continue
        c = container(deployment)
        health_port = next(p["containerPort"] for p in c["ports"] if p["name"] == "health")
        assert c["readinessProbe"]["grpc"] == {"port": health_port, "service": SPECS[name].grpc_service}
        assert c["livenessProbe"]["grpc"] == {"port": health_port}
        config = yaml.safe_load(by_kind(objects, "ConfigMap")[f"{name}-config"]["data"]["config.yaml"])
        drain = config["server"]["drain_seconds"]
        assert pod["terminationGracePeriodSeconds"] >= drain + c["lifecycle"]["preStop"]["sleep"]["seconds"]
        tls = next(v for v in pod["volumes"] if v["name"] == "tls")
        assert "subPath" not in str(c["volumeMounts"])  # a subPath mount would never see a renewed certificate
        if values.get("tls", {}).get("mode", "certManager") == "certManager":
            certificate = by_kind(objects, "Certificate")[name]
            spiffe_id = SpiffeId(values.get("trustDomain", "privmesh.local"), NAMESPACE, name)
            assert certificate["spec"]["uris"] == [spiffe_id.uri]
            assert spiffe_id.dns_name in certificate["spec"]["dnsNames"]  # what mesh clients pin
            assert tls["secret"]["secretName"] == certificate["spec"]["secretName"]
            assert pod["serviceAccountName"] == name
        if name in by_kind(objects, "HorizontalPodAutoscaler"):
            assert "replicas" not in deployment["spec"] and name != "fl-coordinator"
        assert by_kind(objects, "PodDisruptionBudget")[name]["spec"]["selector"]["matchLabels"] == \
            deployment["spec"]["selector"]["matchLabels"]


def test_network_policies_default_deny_then_the_mesh_flows() -> None:
    objects = render(EXAMPLES / "eks.yaml")
    policies = by_kind(objects, "NetworkPolicy")
    deny = policies["privmesh-default-deny"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}

    def peers(rule: dict[str, Any]) -> set[str]:
        return {p["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for p in rule.get("from", rule.get("to", ()))
                if "podSelector" in p}

    for spec in CATALOG:
        policy = policies[spec.name]["spec"]
        # peer_methods of a service: who may call it (and what).
        callers = set(spec.peer_methods)
        spark = {"dp-gateway-spark-executor"}  # the Spark engine's own flows: tests/k8s/test_spark_chart.py
        mesh_ingress = set().union(*(peers(r) for r in policy["ingress"])) - spark
        assert mesh_ingress == callers, spec.name
        callees = {callee.name for callee in CATALOG if spec.name in callee.peer_methods} - {spec.name}
        mesh_egress = set().union(*(peers(r) for r in policy["egress"])) - {"postgresql"} - spark
        assert mesh_egress == callees, spec.name
    kms = [r for r in policies["key-broker"]["spec"]["egress"] if r["ports"] == [{"protocol": "TCP", "port": 443}]]
    assert kms and kms[0]["to"] == [{"ipBlock": {"cidr": "10.0.96.0/20"}}]
