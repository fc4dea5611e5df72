"""The chart on a real kube-apiserver (with etcd and kube-scheduler, built from the Kubernetes sources): node groups
as Node objects, the rendered chart applied with strict server-side apply, and where the scheduler puts each pod.

There is no kube-controller-manager: the test creates each workload's pods from its pod template (replicas of a
Deployment or StatefulSet, one per matching node for a DaemonSet) and there is no kubelet: Node objects are
written directly, their not-ready taint removed (nothing else would), their capacity set on the status."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from privmesh.runtime.ports import free_loopback_port
from tests.k8s.chart import EXAMPLES, NAMESPACE, by_kind, executor_template, render
from tests.k8s.cluster import ISSUER, get, server_side_apply

pytestmark = pytest.mark.slow
SPARK_ENV = Path(__file__).resolve().parents[2] / ".tools" / "spark-env"  # scripts/dev/spark-env.sh

CPU_MEMORY = {"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"}
NODES: dict[str, dict[str, Any]] = {
    # name: (node group, extra capacity, taint)
    "general-a": {"group": "general", "zone": "eu-west-1a", "capacity": {}, "taint": None},
    "general-b": {"group": "general", "zone": "eu-west-1b", "capacity": {}, "taint": None},
    "general-c": {"group": "general", "zone": "eu-west-1c", "capacity": {}, "taint": None},
    "nitro-a": {"group": "nitro", "zone": "eu-west-1a",
                "capacity": {"aws.ec2.nitro/nitro_enclaves": "1", "hugepages-2Mi": "2Gi"},
                "taint": {"key": "aws.ec2.nitro/nitro_enclaves", "value": "true", "effect": "NoSchedule"}},
    "nitro-b": {"group": "nitro", "zone": "eu-west-1b",
                "capacity": {"aws.ec2.nitro/nitro_enclaves": "1", "hugepages-2Mi": "2Gi"},
                "taint": {"key": "aws.ec2.nitro/nitro_enclaves", "value": "true", "effect": "NoSchedule"}},
    "gpu-a": {"group": "gpu", "zone": "eu-west-1a", "capacity": {"nvidia.com/gpu": "1"},
              "taint": {"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}},
    "gpu-b": {"group": "gpu", "zone": "eu-west-1b", "capacity": {"nvidia.com/gpu": "1"},
              "taint": {"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}},
    # dp-gateway's Spark executors (eks.yaml services.dpGateway.spark.executor.nodeGroup).
    "spark-a": {"group": "spark", "zone": "eu-west-1a", "capacity": {},
                "taint": {"key": "privmesh.dev/spark", "value": "true", "effect": "NoSchedule"}},
    "spark-b": {"group": "spark", "zone": "eu-west-1b", "capacity": {},
                "taint": {"key": "privmesh.dev/spark", "value": "true", "effect": "NoSchedule"}},
}
CERT_MANAGER = ("cert-manager.io/v1", "Certificate")  # a CRD of cert-manager, which this control plane lacks


def _create_nodes(core: client.CoreV1Api) -> None:
    for name, node in NODES.items():
        labels = {"kubernetes.io/hostname": name, "topology.kubernetes.io/zone": node["zone"],
                  "privmesh.dev/node-group": node["group"]}
        core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=name, labels=labels)))
        # The not-ready taint the API server adds at creation would keep every pod off: the node lifecycle
        # controller (absent here) removes it from a ready node; this is what it would leave.
        core.patch_node(name, {"spec": {"taints": [node["taint"]] if node["taint"] else None}})
        capacity = {**CPU_MEMORY, **node["capacity"]}
        core.patch_node_status(name, {"status": {
            "capacity": capacity, "allocatable": capacity,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "test",
                            "lastHeartbeatTime": None, "lastTransitionTime": None}]}})


def _bound_claim(core: client.CoreV1Api, name: str, claim: dict[str, Any] | None = None) -> None:
    """A claim bound to its volume, as the PV controller (absent here) would leave them: a ReadWriteMany claim made
    here, or `claim`, one the chart made (its access modes, class and size)."""
    spec = (claim or {}).get("spec", {"accessModes": ["ReadWriteMany"], "storageClassName": "",
                                      "resources": {"requests": {"storage": "10Gi"}}})
    size = spec["resources"]["requests"]["storage"]
    core.create_persistent_volume({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"{name}-pv"},
        "spec": {"capacity": {"storage": size}, "accessModes": spec["accessModes"],
                 "storageClassName": spec.get("storageClassName", ""),
                 "nfs": {"server": "fs.example.internal", "path": "/"},
                 "claimRef": {"namespace": NAMESPACE, "name": name}}})
    bound: dict[str, dict[str, Any]] = {"metadata": {"annotations": {"pv.kubernetes.io/bind-completed": "yes"}},
             "spec": {"volumeName": f"{name}-pv"}}
    if claim is None:
        core.create_namespaced_persistent_volume_claim(NAMESPACE, {
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, **bound["metadata"]}, "spec": {**spec, **bound["spec"]}})
    else:
        core.patch_namespaced_persistent_volume_claim(name, NAMESPACE, bound)
    core.patch_persistent_volume_status(f"{name}-pv", {"status": {"phase": "Bound"}})
    core.patch_namespaced_persistent_volume_claim_status(name, NAMESPACE, {"status": {
        "phase": "Bound", "accessModes": spec["accessModes"], "capacity": {"storage": size}}})


def _pods_for(workload: dict[str, Any], replicas: int) -> list[dict[str, Any]]:
    template = workload["spec"]["template"]
    return [{"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": f"{workload['metadata']['name']}-{i}", "labels": template["metadata"]["labels"]},
             "spec": template["spec"]} for i in range(replicas)]


def _wait_scheduled(api: Any, names: set[str], timeout: float = 120.0) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        pods = [p for p in get(api, f"/api/v1/namespaces/{NAMESPACE}/pods")["items"]
                if p["metadata"]["name"] in names]
        placed = {p["metadata"]["name"]: p["spec"].get("nodeName") for p in pods}
        if len(placed) == len(names) and all(placed.values()):
            return {pod: str(node) for pod, node in placed.items()}
        if time.monotonic() > deadline:
            unscheduled = {p["metadata"]["name"]: [c.get("message") for c in p.get("status", {}).get("conditions", ())]
                           for p in pods if not p["spec"].get("nodeName")}
            raise AssertionError(f"not scheduled after {timeout} s: {unscheduled}")
        time.sleep(0.5)


def _spark_executors(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The executor pods Spark's scheduler would create from the chart's template: its pod, the image of
    spark.kubernetes.container.image, the instance count of spark.executor.instances."""
    template = executor_template(objects)
    text = by_kind(objects, "ConfigMap")["dp-gateway-spark"]["data"]["spark-defaults.conf"]
    conf = dict(line.split(None, 1) for line in text.splitlines() if not line.lstrip().startswith("#"))
    template["spec"]["containers"][0]["image"] = conf["spark.kubernetes.container.image"].strip()
    return [{**template, "metadata": {**template["metadata"], "name": f"dp-gateway-spark-executor-{i}"}}
            for i in range(int(conf["spark.executor.instances"]))]


@pytest.fixture(scope="module")
def installed(api: Any) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """eks.yaml rendered and applied; the workloads' pods created and scheduled: (objects, pod -> node)."""
    core = client.CoreV1Api(api)
    _create_nodes(core)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE)))
    # Pods of the workloads that name no service account (the dev PostgreSQL, the device plugin) use `default`,
    # which only kube-controller-manager would create.
    core.create_namespaced_service_account(NAMESPACE, client.V1ServiceAccount(
        metadata=client.V1ObjectMeta(name="default")))
    _bound_claim(core, "fhe-keys-efs")  # eks.yaml's shared evaluation keys (EFS in the docs)
    objects = render(EXAMPLES / "eks.yaml")
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) != CERT_MANAGER:
            server_side_apply(api, obj, NAMESPACE)
    for name, claim in by_kind(objects, "PersistentVolumeClaim").items():  # the chart's (fl-coordinator's FLARE)
        _bound_claim(core, name, claim)
    hpas = by_kind(objects, "HorizontalPodAutoscaler")
    pods: list[dict[str, Any]] = []
    for name, workload in {**by_kind(objects, "Deployment"), **by_kind(objects, "StatefulSet")}.items():
        replicas = workload["spec"].get("replicas", hpas[name]["spec"]["minReplicas"] if name in hpas else 1)
        pods += _pods_for(workload, replicas)
    for daemonset in by_kind(objects, "DaemonSet").values():
        pods += _pods_for(daemonset, sum(1 for n in NODES.values() if n["group"] == "nitro"))
    pods += _spark_executors(objects)
    for pod in pods:
        server_side_apply(api, pod, NAMESPACE)
    return objects, _wait_scheduled(api, {p["metadata"]["name"] for p in pods})


def _group(node: str) -> str:
    return str(NODES[node]["group"])


def test_enclave_pods_only_on_nitro_fhe_only_on_gpu_nothing_else_there(installed) -> None:
    objects, placement = installed
    workloads = {**by_kind(objects, "Deployment"), **by_kind(objects, "DaemonSet")}
    assert {"enclave-parent", "fhe-inference", "key-broker", "nitro-enclaves-device-plugin"} <= set(workloads)
    seen: dict[str, set[str]] = {}
    for pod, node in placement.items():
        workload = pod.rsplit("-", 1)[0]
        seen.setdefault(workload, set()).add(_group(node))
    assert seen.pop("enclave-parent") == {"nitro"}
    assert seen.pop("nitro-enclaves-device-plugin") == {"nitro"}
    assert seen.pop("fhe-inference") == {"gpu"}
    assert seen.pop("dp-gateway-spark-executor") == {"spark"}
    assert seen and all(groups == {"general"} for groups in seen.values()), seen
    # Each enclave pod takes a Nitro node's one enclave device: two pods, two nodes.
    assert len({node for pod, node in placement.items() if pod.startswith("enclave-parent-")}) == 2


def test_replicas_spread_over_nodes(installed) -> None:
    _, placement = installed
    nodes = [node for pod, node in placement.items() if pod.startswith("key-broker-")]
    assert len(nodes) == 3 and len(set(nodes)) == 3  # topology spread: one per general node


def test_pdbs_network_policies_and_hpas_accepted(installed, api: Any) -> None:
    objects, _ = installed

    def names(group_version: str, plural: str) -> dict[str, Any]:
        items = get(api, f"/apis/{group_version}/namespaces/{NAMESPACE}/{plural}")["items"]
        return {o["metadata"]["name"]: o for o in items}

    pdbs = names("policy/v1", "poddisruptionbudgets")
    assert set(pdbs) == set(by_kind(objects, "PodDisruptionBudget"))
    assert pdbs["token-vault"]["spec"]["minAvailable"] == 1
    policies = names("networking.k8s.io/v1", "networkpolicies")
    assert set(policies) == set(by_kind(objects, "NetworkPolicy"))
    assert policies["privmesh-default-deny"]["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert set(names("autoscaling/v2", "horizontalpodautoscalers")) == {"key-broker", "token-vault"}


def test_flare_service_and_workspace_claim_accepted(installed, api: Any) -> None:
    """fl-coordinator's FLARE objects (eks.yaml): the NLB Service, the workspace claim its pod was scheduled with."""
    _, placement = installed
    service = get(api, f"/api/v1/namespaces/{NAMESPACE}/services/fl-coordinator-flare")
    assert service["spec"]["type"] == "LoadBalancer"
    assert [(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [("flare", 8002, "flare")]
    assert service["spec"]["loadBalancerSourceRanges"] == ["198.51.100.0/28", "203.0.113.64/28"]
    for name in ("attestation-verifier-external", "fl-coordinator-external"):  # the sites' admission path
        assert get(api, f"/api/v1/namespaces/{NAMESPACE}/services/{name}")["spec"]["type"] == "LoadBalancer"
    claim = get(api, f"/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims/fl-coordinator-flare")
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"] and claim["status"]["phase"] == "Bound"
    (node,) = [node for pod, node in placement.items() if pod.startswith("fl-coordinator-")]
    assert _group(node) == "general"


def test_strict_apply_refuses_an_unknown_field(installed, api: Any) -> None:
    objects, _ = installed
    deployment = by_kind(objects, "Deployment")["token-vault"]
    bad = {**deployment, "spec": {**deployment["spec"], "replicaz": 3}}
    with pytest.raises(ApiException) as refused:
        server_side_apply(api, bad, NAMESPACE, dry_run=True)
    # Server-side apply answers an unknown field with "failed to create typed patch object ... field not declared
    # in schema" (an InternalError, 500, for apply patches), naming the field.
    body = str(refused.value.body)
    assert ".spec.replicaz: field not declared in schema" in body, body


@pytest.mark.parametrize("values", ["local.yaml", "eks.yaml"])
def test_examples_pass_a_strict_server_side_dry_run(installed, api: Any, values: str) -> None:
    for obj in render(EXAMPLES / values):
        if (obj["apiVersion"], obj["kind"]) != CERT_MANAGER:
            server_side_apply(api, obj, NAMESPACE, dry_run=True)


def test_service_account_objects_carry_irsa(installed, api: Any) -> None:
    accounts = {a["metadata"]["name"]: a for a in get(api, f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts")["items"]}
    role = accounts["key-broker"]["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert role.endswith(":role/privmesh-key-broker")
    assert "annotations" not in accounts["token-vault"]["metadata"]


def _allowed(api: Any, user: str, namespace: str, verb: str, resource: str, group: str = "") -> bool:
    """The API server's own RBAC decision (a SubjectAccessReview), for a service account of the release."""
    review = client.AuthorizationV1Api(api).create_subject_access_review(client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(user=user, resource_attributes=client.V1ResourceAttributes(
            namespace=namespace, verb=verb, resource=resource, group=group))))
    return bool(review.status.allowed)


def test_spark_driver_rights_are_its_namespace_only(installed, api: Any) -> None:
    """The gateway (Spark's driver) may manage pods and the like in its namespace, nowhere else and nothing more;
    the executors' service account may do nothing with the API."""
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="elsewhere")))
    driver = f"system:serviceaccount:{NAMESPACE}:dp-gateway"
    executor = f"system:serviceaccount:{NAMESPACE}:dp-gateway-spark-executor"
    for resource in ("pods", "services", "configmaps", "persistentvolumeclaims"):
        for verb in ("create", "get", "list", "watch", "delete"):
            assert _allowed(api, driver, NAMESPACE, verb, resource), (verb, resource)
            assert not _allowed(api, driver, "elsewhere", verb, resource), (verb, resource)
            assert not _allowed(api, executor, NAMESPACE, verb, resource), (verb, resource)
    for verb, resource, group in (("get", "secrets", ""), ("update", "pods", ""), ("patch", "configmaps", ""),
                                  ("create", "deployments", "apps"), ("create", "rolebindings",
                                                                      "rbac.authorization.k8s.io")):
        assert not _allowed(api, driver, NAMESPACE, verb, resource, group), (verb, resource)
    assert not _allowed(api, driver, "", "list", "nodes")
    roles = get(api, "/apis/rbac.authorization.k8s.io/v1/clusterroles")["items"]
    assert not [r["metadata"]["name"] for r in roles if "spark" in r["metadata"]["name"]]


def test_spark_executor_account_carries_irsa(installed, api: Any) -> None:
    account = get(api, f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/dp-gateway-spark-executor")
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith(":role/privmesh-spark-executor")
    assert account["automountServiceAccountToken"] is False


DRIVER = """
import os, sys
from pyspark.sql import SparkSession
spark = SparkSession.builder.master(os.environ["MASTER"]).appName("privmesh-dp-engine").getOrCreate()
print("ready", flush=True)
sys.stdin.read()
spark.stop()
print("stopped", flush=True)
"""


def _executor_pods(api: Any) -> list[dict[str, Any]]:
    pods = get(api, f"/api/v1/namespaces/{NAMESPACE}/pods?labelSelector=spark-role%3Dexecutor")["items"]
    return list(pods)


@pytest.mark.timeout(600)
def test_a_spark_driver_with_the_charts_configuration_places_its_executors(
        installed, api: Any, control_plane: Any, tmp_path: Path) -> None:
    """A real Spark driver (the pinned pyspark, client mode), configured as the gateway pod is (the rendered
    spark-defaults.conf, the pod template, PYSPARK_SUBMIT_ARGS with the pod's IP and name), authenticated as the
    dp-gateway service account: its executor pods are accepted by the API server, carry the template (node group,
    non-root, executor account), are owned by the gateway pod, scheduled on the spark node group, and deleted
    when the driver stops. Loopback stand-ins: the API server's address and CA, free ports for the driver."""
    objects, _ = installed
    python = SPARK_ENV / "bin" / "python"
    assert python.exists(), f"{python} is missing: run scripts/dev/spark-env.sh (scripts/dev/test.sh does)"
    core = client.CoreV1Api(api)
    token = core.create_namespaced_service_account_token("dp-gateway", NAMESPACE, client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[ISSUER], expiration_seconds=600))).status.token
    (tmp_path / "token").write_text(token)
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    data = by_kind(objects, "ConfigMap")["dp-gateway-spark"]["data"]
    (conf_dir / "executor-pod-template.yaml").write_text(data["executor-pod-template.yaml"])
    (conf_dir / "spark-defaults.conf").write_text(data["spark-defaults.conf"] + "\n".join([
        f"spark.kubernetes.executor.podTemplateFile {conf_dir / 'executor-pod-template.yaml'}",
        f"spark.kubernetes.authenticate.oauthTokenFile {tmp_path / 'token'}",
        f"spark.kubernetes.authenticate.caCertFile {control_plane.root / 'certs' / 'apiserver.crt'}",
        "spark.driver.bindAddress 127.0.0.1",
        f"spark.driver.port {free_loopback_port()}", f"spark.driver.blockManager.port {free_loopback_port()}",
        "spark.scheduler.maxRegisteredResourcesWaitingTime 1s", ""]))
    container = by_kind(objects, "Deployment")["dp-gateway"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    submit = str(env["PYSPARK_SUBMIT_ARGS"]).replace("$(POD_IP)", "127.0.0.1").replace("$(POD_NAME)", "dp-gateway-0")
    config = yaml.safe_load(by_kind(objects, "ConfigMap")["dp-gateway-config"]["data"]["config.yaml"])
    assert config["service"]["spark_master"] == "k8s://https://kubernetes.default.svc:443"
    driver = subprocess.Popen(
        [str(python), "-c", DRIVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=(tmp_path / "log").open("w"),
        text=True, env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), "SPARK_CONF_DIR": str(conf_dir),
                        "PYSPARK_SUBMIT_ARGS": submit, "PYSPARK_PYTHON": str(python),
                        "MASTER": f"k8s://{control_plane.url}"})
    try:
        assert driver.stdout is not None and driver.stdin is not None
        assert driver.stdout.readline() == "ready\n", (tmp_path / "log").read_text()[-3000:]
        deadline = time.monotonic() + 120
        while len(pods := _executor_pods(api)) < 2 or not all(p["spec"].get("nodeName") for p in pods):
            assert time.monotonic() < deadline, ((tmp_path / "log").read_text()[-3000:], pods)
            time.sleep(0.5)
        assert len(pods) == 2  # spark.executor.instances
        for pod in pods:
            spec = pod["spec"]
            assert _group(spec["nodeName"]) == "spark"
            assert spec["serviceAccountName"] == "dp-gateway-spark-executor"
            assert spec["securityContext"]["runAsUser"] == 10001
            assert pod["metadata"]["labels"]["app.kubernetes.io/name"] == "dp-gateway-spark-executor"
            assert [o["name"] for o in pod["metadata"]["ownerReferences"]] == ["dp-gateway-0"]
            (executor,) = spec["containers"]
            assert executor["name"] == "spark-executor" and executor["securityContext"]["runAsNonRoot"] is True
            assert executor["image"].endswith("/privmesh/dp-gateway-spark:0.1.0")
            assert executor["args"] == ["executor"]  # what images/spark-entrypoint.sh dispatches on
            variables = {e["name"] for e in executor["env"]}
            assert {"SPARK_DRIVER_URL", "SPARK_EXECUTOR_ID", "SPARK_EXECUTOR_CORES", "SPARK_APPLICATION_ID",
                    "SPARK_EXECUTOR_POD_IP", "SPARK_RESOURCE_PROFILE_ID", "SPARK_EXECUTOR_POD_NAME",
                    "SPARK_EXECUTOR_MEMORY"} <= variables  # each one the entry point reads
        driver.stdin.close()
        assert driver.stdout.readline() == "stopped\n", (tmp_path / "log").read_text()[-3000:]
        deadline = time.monotonic() + 60
        while not all(p["metadata"].get("deletionTimestamp") for p in _executor_pods(api)):  # no kubelet: Terminating
            assert time.monotonic() < deadline, "executor pods not deleted"
            time.sleep(0.5)
    finally:
        driver.kill()
        driver.wait()
