"""A real Kubernetes control plane on loopback for the tests: etcd, kube-apiserver and kube-scheduler built by
scripts/dev/k8s-tools.sh. No kubelet and no kube-controller-manager: the tests create Node objects themselves
and the pods of the workloads from their pod templates, and read the scheduler's decisions (spec.nodeName)."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from privmesh.runtime.ports import free_loopback_port
from tests.k8s.chart import tool

ADMIN_TOKEN = "privmesh-test-admin-token"
NOBODY_TOKEN = "privmesh-test-nobody-token"
ISSUER = "https://kubernetes.default.svc.cluster.local"


class ControlPlane:
    """etcd + kube-apiserver + kube-scheduler as child processes, logs in `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_loopback_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.signing_key_file = root / "sa.key"
        self.processes: list[subprocess.Popen[bytes]] = []

    def kubeconfig(self, token: str = ADMIN_TOKEN, name: str = "admin") -> Path:
        path = self.root / f"kubeconfig-{name}"
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {
                "server": self.url, "certificate-authority": str(self.root / "certs" / "apiserver.crt")}}],
            "users": [{"name": name, "user": {"token": token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": name}}],
        }))
        return path

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = (self.root / f"{name}.log").open("wb")
        process = subprocess.Popen([str(tool(name)), *args], stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        self.processes.append(process)
        return process

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.root / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def _wait_ready(self, timeout: float) -> None:
        request = urllib.request.Request(f"{self.url}/readyz", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        deadline = time.monotonic() + timeout
        while True:
            try:
                # The serving certificate kube-apiserver made itself in --cert-dir (with its CA after it).
                context = ssl.create_default_context(cafile=str(self.root / "certs" / "apiserver.crt"))
                with urllib.request.urlopen(request, context=context, timeout=5) as reply:
                    if reply.read() == b"ok":
                        return
            except OSError:
                pass
            if any(process.poll() is not None for process in self.processes):
                raise RuntimeError(f"etcd or kube-apiserver exited:\n{self.log_tail('etcd')}\n"
                                   f"{self.log_tail('kube-apiserver')}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"kube-apiserver not ready after {timeout} s:\n{self.log_tail('kube-apiserver')}")
            time.sleep(0.5)

    def start(self, timeout: float = 180.0) -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.signing_key_file.write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        (self.root / "sa.pub").write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        (self.root / "tokens.csv").write_text(f'{ADMIN_TOKEN},admin,admin-uid,"system:masters"\n'
                                              f"{NOBODY_TOKEN},nobody,nobody-uid\n")
        etcd_port, peer_port = free_loopback_port(), free_loopback_port()
        self._spawn("etcd", [
            "--name", "test", "--data-dir", str(self.root / "etcd"), "--unsafe-no-fsync",
            "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-cluster", f"test=http://127.0.0.1:{peer_port}",
        ])
        self._spawn("kube-apiserver", [
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={self.port}",
            f"--cert-dir={self.root / 'certs'}",
            f"--service-account-issuer={ISSUER}",
            f"--service-account-key-file={self.root / 'sa.pub'}",
            f"--service-account-signing-key-file={self.signing_key_file}",
            f"--token-auth-file={self.root / 'tokens.csv'}",
            "--authorization-mode=RBAC", "--service-cluster-ip-range=10.96.0.0/16",
            "--enable-priority-and-fairness=false",
        ])
        self._wait_ready(timeout)
        kubeconfig = self.kubeconfig()
        scheduler_port = free_loopback_port()
        self._spawn("kube-scheduler", [
            f"--kubeconfig={kubeconfig}", f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}", "--bind-address=127.0.0.1",
            f"--secure-port={scheduler_port}", "--leader-elect=false",
        ])

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.processes.clear()


def api_client(kubeconfig: Path) -> Any:
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    return client.ApiClient(configuration=configuration)


_DYNAMIC: dict[int, Any] = {}


def _dynamic(api: Any) -> Any:
    from kubernetes.dynamic import DynamicClient

    if id(api) not in _DYNAMIC:
        _DYNAMIC[id(api)] = DynamicClient(api)
    return _DYNAMIC[id(api)]


def server_side_apply(api: Any, obj: dict[str, Any], namespace: str | None, dry_run: bool = False) -> Any:
    """`kubectl apply --server-side --validate=strict` of one object: unknown or duplicate fields are refused."""
    dynamic = _dynamic(api)
    resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    path = resource.path(name=obj["metadata"]["name"], namespace=namespace if resource.namespaced else None)
    query = [("fieldManager", "privmesh-test"), ("fieldValidation", "Strict"), ("force", "true")]
    if dry_run:
        query.append(("dryRun", "All"))
    return dynamic.request("patch", path, body=obj, query_params=query, content_type="application/apply-patch+yaml")


def get(api: Any, path: str) -> Any:
    """GET `path` of the API as plain JSON (dicts and lists)."""
    return _dynamic(api).request("get", path).to_dict()
