"""dp-gateway's Spark engine in the chart, offline: off by default; on (examples/eks.yaml), the gateway pods are
Spark drivers whose configuration, ports and executor pod template agree with each other, the driver's rights are
one namespaced Role, and the NetworkPolicies leave executors no path to the mesh's other services."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from privmesh.mesh.catalog import CATALOG
from tests.k8s.chart import EXAMPLES, NAMESPACE, by_kind, executor_template, render, render_text

EXECUTOR = "dp-gateway-spark-executor"
GATEWAY = "dp-gateway"


@pytest.fixture(scope="module")
def eks() -> list[dict[str, Any]]:
    return render(EXAMPLES / "eks.yaml")


def _spark_values() -> dict[str, Any]:
    return dict(yaml.safe_load((EXAMPLES / "eks.yaml").read_text())["services"]["dpGateway"]["spark"])


def _defaults(objects: list[dict[str, Any]]) -> dict[str, str]:
    text = by_kind(objects, "ConfigMap")["dp-gateway-spark"]["data"]["spark-defaults.conf"]
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return {key: value.strip() for key, _, value in (line.partition(" ") for line in lines)}


def _gateway(objects: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    pod = by_kind(objects, "Deployment")[GATEWAY]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    config = yaml.safe_load(by_kind(objects, "ConfigMap")[f"{GATEWAY}-config"]["data"]["config.yaml"])
    return pod, container, config


@pytest.mark.parametrize("values", ["local.yaml", None], ids=["local", "defaults"])
def test_off_by_default(values: str | None) -> None:
    objects = render(*([EXAMPLES / values] if values else []))
    names = {o["metadata"]["name"] for o in objects}
    assert not {n for n in names if "spark" in n}
    assert not by_kind(objects, "Role") and not by_kind(objects, "RoleBinding")
    pod, container, config = _gateway(objects)
    assert "spark_python" not in config["service"] and "spark_master" not in config["service"]
    assert container["image"].split(":")[0] == "privmesh/services"
    token_auth = bool(yaml.safe_load((EXAMPLES / values).read_text()).get("tokenAuth", {}).get("enabled")) \
        if values else False
    assert pod["automountServiceAccountToken"] is token_auth  # the token only for TokenReview
    assert not {p["name"] for p in container["ports"]} & {"spark-driver", "spark-blockmgr"}


def test_gateway_pods_are_spark_drivers_in_client_mode(eks: list[dict[str, Any]]) -> None:
    spark = _spark_values()
    pod, container, config = _gateway(eks)
    conf = _defaults(eks)
    assert config["service"]["spark_python"] == "/opt/spark-engine/bin/python"
    assert config["service"]["spark_master"] == "k8s://https://kubernetes.default.svc:443"
    assert container["image"] == f"{spark['image']['repository']}:{spark['image']['tag']}"
    assert conf["spark.kubernetes.container.image"] == container["image"]  # executors run the driver's image
    assert conf["spark.submit.deployMode"] == "client" and conf["spark.kubernetes.namespace"] == NAMESPACE
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert (ports["spark-driver"], ports["spark-blockmgr"]) == (7078, 7079)
    assert conf["spark.driver.port"] == "7078" and conf["spark.port.maxRetries"] == "0"  # fixed: no fallback
    assert conf["spark.driver.blockManager.port"] == conf["spark.blockManager.port"] == "7079"
    assert (conf["spark.executor.instances"], conf["spark.executor.cores"], conf["spark.executor.memory"]) == (
        "2", "2", "4g")
    assert conf["spark.authenticate"] == conf["spark.network.crypto.enabled"] == "true"
    provider = conf["spark.hadoop.fs.s3a.aws.credentials.provider"]
    assert provider == "com.amazonaws.auth.DefaultAWSCredentialsProviderChain"  # IRSA's web identity included
    assert conf["spark.hadoop.fs.s3a.endpoint.region"] == "eu-west-1"
    env = {e["name"]: e for e in container["env"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert env["SPARK_CONF_DIR"]["value"] == mounts["spark-conf"] == "/etc/privmesh/spark"
    assert conf["spark.kubernetes.executor.podTemplateFile"].startswith(mounts["spark-conf"] + "/")
    # Each replica is its own driver: executors dial the pod's IP; they are owned by (deleted with) its pod.
    assert env["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    submit = env["PYSPARK_SUBMIT_ARGS"]["value"]
    assert "spark.driver.host=$(POD_IP)" in submit and "spark.kubernetes.driver.pod.name=$(POD_NAME)" in submit
    assert submit.endswith("pyspark-shell")
    assert pod["automountServiceAccountToken"] is True and pod["serviceAccountName"] == GATEWAY
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["spark-conf"]["configMap"]["name"] == "dp-gateway-spark"


def test_executor_template_on_its_node_group_non_root_with_irsa(eks: list[dict[str, Any]]) -> None:
    spark = _spark_values()
    template = executor_template(eks)
    conf = _defaults(eks)
    spec = template["spec"]
    assert template["metadata"]["labels"]["app.kubernetes.io/name"] == EXECUTOR
    (term,) = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    group = spark["executor"]["nodeGroup"]
    assert term["matchExpressions"] == [{"key": group["label"]["key"], "operator": "In",
                                         "values": [group["label"]["value"]]}]
    assert spec["tolerations"] == [{**group["taint"], "operator": "Equal"}]
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == 10001
    (container,) = spec["containers"]
    assert container["name"] == conf["spark.kubernetes.executor.podTemplateContainerName"]
    sc = container["securityContext"]
    assert (sc["runAsNonRoot"], sc["readOnlyRootFilesystem"], sc["allowPrivilegeEscalation"], sc["capabilities"]) == (
        True, True, False, {"drop": ["ALL"]})
    assert spec["serviceAccountName"] == conf["spark.kubernetes.authenticate.executor.serviceAccountName"] == EXECUTOR
    assert spec["automountServiceAccountToken"] is False  # executors have no business with the API server
    account = by_kind(eks, "ServiceAccount")[EXECUTOR]
    assert account["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": spark["executor"]["roleArn"]}
    assert account["automountServiceAccountToken"] is False


def test_driver_rbac_is_one_namespaced_role_for_the_gateway(eks: list[dict[str, Any]]) -> None:
    assert not by_kind(eks, "ClusterRole")
    assert all(b["roleRef"]["name"] == "system:auth-delegator"  # tokenAuth's TokenReview, not Spark's
               for b in by_kind(eks, "ClusterRoleBinding").values())
    (role,) = by_kind(eks, "Role").values()
    assert role["rules"] == [{"apiGroups": [""],
                              "resources": ["pods", "services", "configmaps", "persistentvolumeclaims"],
                              "verbs": ["create", "get", "list", "watch", "delete", "deletecollection"]}]
    (binding,) = by_kind(eks, "RoleBinding").values()
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": GATEWAY, "namespace": NAMESPACE}]


def _selects(peer: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a NetworkPolicyPeer of this namespace's policies selects pods with these labels."""
    if set(peer) != {"podSelector"}:
        return False
    wanted = peer["podSelector"].get("matchLabels", {})
    assert not peer["podSelector"].get("matchExpressions")
    return all(labels.get(k) == v for k, v in wanted.items())


def _pod_labels(objects: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    workloads = {**by_kind(objects, "Deployment"), **by_kind(objects, "StatefulSet"), **by_kind(objects, "DaemonSet")}
    labels = {name: w["spec"]["template"]["metadata"]["labels"] for name, w in workloads.items()}
    labels[EXECUTOR] = executor_template(objects)["metadata"]["labels"]
    return labels


def _rules_for(objects: list[dict[str, Any]], labels: dict[str, str], direction: str) -> list[dict[str, Any]]:
    rules = []
    for policy in by_kind(objects, "NetworkPolicy").values():
        spec = policy["spec"]
        if direction.capitalize() in spec["policyTypes"] and all(
                labels.get(k) == v for k, v in spec["podSelector"].get("matchLabels", {}).items()):
            rules += spec.get(direction, [])
    return rules


def test_executors_have_no_network_path_to_the_mesh(eks: list[dict[str, Any]]) -> None:
    """Egress of the executors (every policy that selects them) and ingress of every other pod: a connection
    needs both; no pod of the mesh but the gateway, and the gateway only on the driver's two ports."""
    pods = _pod_labels(eks)
    executor = pods[EXECUTOR]
    egress = _rules_for(eks, executor, "egress")
    cluster = _spark_values()["executor"]["clusterCidrs"]
    for rule in egress:
        ports = {p["port"] for p in rule["ports"]}
        peers = rule.get("to")
        assert peers, f"an egress rule of the executors to anywhere: {rule}"
        for peer in peers:
            if "ipBlock" in peer:  # S3: outside the cluster only
                assert ports == {443} and peer["ipBlock"]["cidr"] == "0.0.0.0/0"
                assert peer["ipBlock"]["except"] == cluster
                continue
            if "namespaceSelector" in peer:  # DNS (privmesh-dns) or the OTLP collector (not enabled here)
                assert ports == {53}, rule
                continue
            reached = {name for name, labels in pods.items() if _selects(peer, labels)}
            assert reached in ({GATEWAY}, {EXECUTOR}), reached
            assert ports == ({7078, 7079} if reached == {GATEWAY} else {7079}), rule
    assert any(r.get("to") and "ipBlock" in r["to"][0] for r in egress)
    # Ingress side: only the gateway admits executors, on the Spark ports, never on its gRPC port.
    mesh = {spec.name for spec in CATALOG}
    for name in mesh | {"enclave-parent"}:
        if name not in pods:
            continue
        admitted = {p["port"] for r in _rules_for(eks, pods[name], "ingress")
                    for peer in r.get("from", ()) if _selects(peer, executor) for p in r["ports"]}
        assert admitted == ({7078, 7079} if name == GATEWAY else set()), (name, admitted)
    # And executors are reached by their driver and each other only, on the block manager port.
    ingress = _rules_for(eks, executor, "ingress")
    sources = {name for r in ingress for peer in r["from"] for name, labels in pods.items() if _selects(peer, labels)}
    assert sources == {GATEWAY, EXECUTOR} and {p["port"] for r in ingress for p in r["ports"]} == {7079}


def test_s3_cidrs_replace_the_open_egress(tmp_path: Path) -> None:
    path = tmp_path / "s3.yaml"
    path.write_text(yaml.safe_dump({"services": {"dpGateway": {"spark": {
        "enabled": True, "executor": {"s3Cidrs": ["10.0.128.0/24"]}}}}}))
    policy = by_kind(render(path), "NetworkPolicy")[EXECUTOR]["spec"]
    s3 = [r for r in policy["egress"] if r["ports"] == [{"protocol": "TCP", "port": 443}]]
    assert [r["to"] for r in s3] == [[{"ipBlock": {"cidr": "10.0.128.0/24"}}]]


BAD = [
    ({"enabled": True}, "services.dpGateway.spark.executor.clusterCidrs (or s3Cidrs) is required"),
    ({"enabled": True, "executor": {"memory": "4GB"}}, "/services/dpGateway/spark/executor/memory"),
    ({"enabled": True, "executor": {"roleArn": "privmesh-spark"}}, "/services/dpGateway/spark/executor/roleArn"),
    ({"enabled": True, "master": "yarn"}, "/services/dpGateway/spark/master"),
    ({"enabled": True, "executorz": {}}, "executorz"),
]


@pytest.mark.parametrize(("spark", "message"), BAD, ids=[m for _, m in BAD])
def test_bad_spark_values_are_refused(spark: dict[str, Any], message: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"services": {"dpGateway": {"spark": spark}}}))
    result = render_text(path)
    assert result.returncode != 0 and message in result.stderr, result.stderr
