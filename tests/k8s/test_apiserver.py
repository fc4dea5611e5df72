"""The chart on a real kube-apiserver (with etcd and kube-scheduler, built from the Kubernetes sources): node groups
as Node objects, the rendered chart applied with strict server-side apply, and where the scheduler puts each pod.

There is no kube-controller-manager: the test creates each workload's pods from its pod template (replicas of a
Deployment or StatefulSet, one per matching node for a DaemonSet) and there is no kubelet: Node objects are
written directly, their not-ready taint removed (nothing else would), their capacity set on the status."""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.k8s.chart import EXAMPLES, NAMESPACE, by_kind, render
from tests.k8s.cluster import server_side_apply

pytestmark = pytest.mark.slow

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


def _pods_for(workload: dict[str, Any], replicas: int) -> list[dict[str, Any]]:
    template = workload["spec"]["template"]
    return [{"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": f"{workload['metadata']['name']}-{i}", "labels": template["metadata"]["labels"]},
             "spec": template["spec"]} for i in range(replicas)]


def _wait_scheduled(core: client.CoreV1Api, names: set[str], timeout: float = 120.0) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        pods = core.list_namespaced_pod(NAMESPACE).items
        placed = {p.metadata.name: p.spec.node_name for p in pods if p.metadata.name in names}
        if len(placed) == len(names) and all(placed.values()):
            return placed
        if time.monotonic() > deadline:
            unscheduled = {p.metadata.name: [c.message for c in (p.status.conditions or ())]
                           for p in pods if p.metadata.name in names and not p.spec.node_name}
            raise AssertionError(f"not scheduled after {timeout} s: {unscheduled}")
        time.sleep(0.5)


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
    objects = render(EXAMPLES / "eks.yaml")
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) != CERT_MANAGER:
            server_side_apply(api, obj, NAMESPACE)
    hpas = by_kind(objects, "HorizontalPodAutoscaler")
    pods: list[dict[str, Any]] = []
    for name, workload in {**by_kind(objects, "Deployment"), **by_kind(objects, "StatefulSet")}.items():
        replicas = workload["spec"].get("replicas", hpas[name]["spec"]["minReplicas"] if name in hpas else 1)
        pods += _pods_for(workload, replicas)
    for daemonset in by_kind(objects, "DaemonSet").values():
        pods += _pods_for(daemonset, sum(1 for n in NODES.values() if n["group"] == "nitro"))
    for pod in pods:
        server_side_apply(api, pod, NAMESPACE)
    return objects, _wait_scheduled(core, {p["metadata"]["name"] for p in pods})


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
    assert seen and all(groups == {"general"} for groups in seen.values()), seen
    # Each enclave pod takes a Nitro node's one enclave device: two pods, two nodes.
    assert len({node for pod, node in placement.items() if pod.startswith("enclave-parent-")}) == 2


def test_replicas_spread_over_nodes(installed) -> None:
    _, placement = installed
    nodes = [node for pod, node in placement.items() if pod.startswith("key-broker-")]
    assert len(nodes) == 3 and len(set(nodes)) == 3  # topology spread: one per general node


def test_pdbs_network_policies_and_hpas_accepted(installed, api: Any) -> None:
    objects, _ = installed
    policy = client.PolicyV1Api(api)
    networking = client.NetworkingV1Api(api)
    autoscaling = client.AutoscalingV2Api(api)
    stored_pdbs = {p.metadata.name: p for p in policy.list_namespaced_pod_disruption_budget(NAMESPACE).items}
    assert set(stored_pdbs) == set(by_kind(objects, "PodDisruptionBudget"))
    assert stored_pdbs["token-vault"].spec.min_available == 1
    stored_policies = {p.metadata.name for p in networking.list_namespaced_network_policy(NAMESPACE).items}
    assert stored_policies == set(by_kind(objects, "NetworkPolicy"))
    assert "privmesh-default-deny" in stored_policies
    stored_hpas = {h.metadata.name for h in autoscaling.list_namespaced_horizontal_pod_autoscaler(NAMESPACE).items}
    assert stored_hpas == {"key-broker", "token-vault"}


def test_strict_apply_refuses_an_unknown_field(installed, api: Any) -> None:
    objects, _ = installed
    deployment = by_kind(objects, "Deployment")["token-vault"]
    bad = {**deployment, "spec": {**deployment["spec"], "replicaz": 3}}
    with pytest.raises(ApiException) as refused:
        server_side_apply(api, bad, NAMESPACE, dry_run=True)
    assert refused.value.status in (400, 422) and "replicaz" in str(refused.value.body)


@pytest.mark.parametrize("values", ["local.yaml", "eks.yaml"])
def test_examples_pass_a_strict_server_side_dry_run(installed, api: Any, values: str) -> None:
    for obj in render(EXAMPLES / values):
        if (obj["apiVersion"], obj["kind"]) != CERT_MANAGER:
            server_side_apply(api, obj, NAMESPACE, dry_run=True)


def test_service_account_objects_carry_irsa(installed, api: Any) -> None:
    core = client.CoreV1Api(api)
    key_broker = core.read_namespaced_service_account("key-broker", NAMESPACE)
    assert key_broker.metadata.annotations["eks.amazonaws.com/role-arn"].endswith(":role/privmesh-key-broker")
    assert core.read_namespaced_service_account("token-vault", NAMESPACE).metadata.annotations is None
