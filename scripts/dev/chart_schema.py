"""Writes charts/privmesh/values.schema.json: the chart's values schema, strict (additionalProperties false
everywhere). Each service's `settings` block is generated from that service's own pydantic settings model (the
validator it runs at start), less the fields the chart sets itself, so the two cannot drift apart.

    .venv/bin/python scripts/dev/chart_schema.py [--check]

--check exits 1 when the file on disk differs from what would be written (tests/k8s runs it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from privmesh.attestation.settings import AttestationSettings
from privmesh.dpgateway.settings import DPGatewaySettings
from privmesh.fhe.settings import FheSettings
from privmesh.fl.settings import FlSettings
from privmesh.keybroker.settings import KeyBrokerSettings
from privmesh.tokenvault.settings import TokenVaultSettings

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "charts" / "privmesh" / "values.schema.json"

# values key -> (settings model, the fields the chart renders itself: database, file locations, peer addresses).
SERVICES: dict[str, tuple[type[BaseModel], set[str]]] = {
    "attestationVerifier": (AttestationSettings, {"database", "token_signing_key_file", "dev_root_files",
                                                  "policy_files"}),
    "keyBroker": (KeyBrokerSettings, {"database", "keystore_file", "root_key_file", "root_key_env", "aws_kms",
                                      "default_backend"}),
    "tokenVault": (TokenVaultSettings, {"database", "key_broker_target"}),
    "fheInference": (FheSettings, {"database", "key_dir", "model_files", "evaluator", "sandbox"}),
    "dpGateway": (DPGatewaySettings, {"database", "cache_dir", "s3_region", "spark_python", "spark_master"}),
    "flCoordinator": (FlSettings, {"database", "superlink_dir", "fleet_address", "advertised_fleet_address",
                                   "superlink_tls", "report_address", "key_broker_target",
                                   "attestation_verifier_target", "flare"}),
}
PATH_FORMATS = {"path", "file-path", "directory-path"}


def _strict(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": props}
    if required:
        schema["required"] = required
    return schema


def _clean(node: Any) -> Any:
    """Pydantic's JSON schema without titles and path formats (helm's validator would not know them)."""
    if isinstance(node, dict):
        return {k: _clean(v) for k, v in node.items()
                if k != "title" and not (k == "format" and v in PATH_FORMATS)}
    if isinstance(node, list):
        return [_clean(v) for v in node]
    return node


def _settings(key: str, defs: dict[str, Any]) -> dict[str, Any]:
    model, managed = SERVICES[key]
    schema = model.model_json_schema(ref_template=f"#/$defs/{key}.{{model}}")
    own = {f"{key}.{name}": _clean(sub) for name, sub in schema.pop("$defs", {}).items()}
    props = {k: _clean(v) for k, v in schema["properties"].items() if k not in managed}
    pending = json.dumps(props)
    while refs := [r for r in own if f'"#/$defs/{r}"' in pending and r not in defs]:  # only the referenced ones
        for ref in refs:
            defs[ref] = own[ref]
        pending = json.dumps([own[r] for r in refs])
    # Every field has a default or is set by the chart, so nothing is required here.
    return {"type": "object", "additionalProperties": False, "properties": props,
            "description": f"{model.__module__}.{model.__name__} options (less what the chart sets)"}


def build() -> dict[str, Any]:
    defs: dict[str, Any] = {}
    string = {"type": "string"}
    port = {"type": "integer", "minimum": 1, "maximum": 65535}
    quantity = {"oneOf": [{"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?(m|[KMGTPE]i?|e[0-9]+)?$"},
                          {"type": "number", "minimum": 0}]}
    resources = _strict({"requests": {"type": "object", "additionalProperties": quantity},
                         "limits": {"type": "object", "additionalProperties": quantity}})
    label = _strict({"key": {"type": "string", "minLength": 1}, "value": string}, ["key", "value"])
    taint = _strict({"key": {"type": "string", "minLength": 1}, "value": string,
                     "effect": {"enum": ["NoSchedule", "PreferNoSchedule", "NoExecute"]}}, ["key", "effect"])
    selector = {"type": "object", "description": "a Kubernetes LabelSelector",
                "additionalProperties": False,
                "properties": {"matchLabels": {"type": "object", "additionalProperties": string},
                               "matchExpressions": {"type": "array", "items": {"type": "object"}}}}
    peers = {"type": "array", "items": {"type": "object", "description": "a NetworkPolicyPeer"}}
    cidrs = {"type": "array", "items": {"type": "string", "pattern": r"^[0-9a-fA-F:.]+/[0-9]{1,3}$"}}
    image = _strict({"repository": {"type": "string", "minLength": 1}, "tag": string,
                     "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]}}, ["repository"])
    pcr = {"type": "string", "pattern": "^([0-9a-f]{96})?$", "description": "SHA-384, 96 lower-case hex digits"}
    duration = {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"}
    labels = {"type": "object", "additionalProperties": string}

    role_arn = {"type": "string", "pattern": r"^(arn:aws[a-z-]*:iam::[0-9]{12}:role/.+)?$"}
    service_type = {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]}

    def service(key: str, extra: dict[str, Any] | None = None, max_replicas: int = 100) -> dict[str, Any]:
        props = {
            "enabled": {"type": "boolean"},
            "replicas": {"type": "integer", "minimum": 1, "maximum": max_replicas},
            "resources": resources,
            "pdb": _strict({"minAvailable": {"type": "integer", "minimum": 0}}, ["minAvailable"]),
            "autoscaling": _strict({"enabled": {"type": "boolean"},
                                    "minReplicas": {"type": "integer", "minimum": 1},
                                    "maxReplicas": {"type": "integer", "minimum": 1},
                                    "targetCPUUtilizationPercentage": {"type": "integer", "minimum": 1,
                                                                       "maximum": 100}}),
            "keySecret": string,
            "settings": _settings(key, defs),
            **(extra or {}),
        }
        return _strict(props, ["enabled"])

    external = {"external": _strict({
        "enabled": {"type": "boolean"}, "type": service_type, "annotations": labels,
        "loadBalancerSourceRanges": cidrs, "from": peers})}
    services = _strict({
        "attestationVerifier": service("attestationVerifier", external),
        "keyBroker": service("keyBroker"),
        "tokenVault": service("tokenVault"),
        "dpGateway": service("dpGateway", {"spark": _strict({
            "enabled": {"type": "boolean"},
            "image": image,
            "python": {"type": "string", "pattern": "^/"},
            "master": {"type": "string", "pattern": r"^(k8s://https?://.+|local(\[[0-9*]+\])?)$"},
            "driverPort": port, "blockManagerPort": port, "apiServerCidrs": cidrs,
            "executor": _strict({
                "instances": {"type": "integer", "minimum": 1, "maximum": 1000},
                "cores": {"type": "integer", "minimum": 1, "maximum": 64},
                "memory": {"type": "string", "pattern": "^[0-9]+[kmgt]$", "description": "a JVM size: 512m, 4g"},
                "nodeGroup": _strict({"label": label, "taint": taint}, ["label", "taint"]),
                "roleArn": role_arn, "s3Cidrs": cidrs, "clusterCidrs": cidrs}),
        }, ["enabled"])}),
        "fheInference": service("fheInference", {"keysClaim": string}),
        "flCoordinator": service("flCoordinator", {**external, "fleet": _strict({
            "port": port, "serviceType": service_type,
            "advertisedAddress": string, "from": peers}), "flare": _strict({
                "enabled": {"type": "boolean"}, "port": port, "adminPort": port,
                "bindAddress": {"type": "string", "pattern": r"^[^:\s]+$",
                                "description": "an interface (IP) of the pod"},
                "advertisedHost": {"type": "string", "pattern": r"^([A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)?$",
                                   "description": "a DNS name or IPv4 address, without port"},
                "ccPolicy": {"type": "string", "pattern": r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)?$",
                             "description": "an attestation-verifier policy name; empty: no FLARE CC checks"},
                "service": _strict({"type": service_type, "annotations": labels, "loadBalancerSourceRanges": cidrs}),
                "from": peers,
                "persistence": _strict({"size": quantity, "storageClassName": string, "existingClaim": string}),
                "resources": resources}, ["enabled"])}, max_replicas=1),
    })
    aws_access = {"enabled": {"type": "boolean"}, "roleArn": role_arn, "cidrs": cidrs}
    root = _strict({
        "trustDomain": {"type": "string", "pattern": r"^[a-z0-9.\-_]{1,255}$"},
        "image": image,
        "imagePullSecrets": {"type": "array", "items": string},
        "ports": _strict({"grpc": port, "health": port, "token": port, "metrics": port}),
        "tls": _strict({
            "mode": {"enum": ["certManager", "existingSecrets"]},
            "certManager": _strict({
                "issuerRef": _strict({"name": {"type": "string", "minLength": 1},
                                      "kind": {"enum": ["Issuer", "ClusterIssuer"]}, "group": string}, ["name"]),
                "duration": {"type": "string", "pattern": r"^([0-9]+(h|m|s))+$"},
                "renewBefore": {"type": "string", "pattern": r"^([0-9]+(h|m|s))+$"},
                "privateKeyAlgorithm": {"enum": ["ECDSA", "RSA", "Ed25519"]},
                "privateKeySize": {"type": "integer"}}),
            "existingSecrets": {"type": "object", "additionalProperties": string,
                                "propertyNames": {"enum": ["attestation-verifier", "key-broker", "token-vault",
                                                           "dp-gateway", "fhe-inference", "fl-coordinator"]}},
        }, ["mode"]),
        "authz": _strict({"meshPeerRules": {"type": "boolean"}, "rules": {"type": "array", "items": _strict({
            "name": {"type": "string", "minLength": 1, "maxLength": 128},
            "principals": {"type": "array", "minItems": 1,
                           "items": {"type": "string", "pattern": r"^(\*|spiffe://.+)$"}},
            "methods": {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": r"^(\*|.+/.*)$"}},
            "resources": {"type": "array", "items": string}}, ["name", "principals", "methods"])}}),
        "tokenAuth": _strict({"enabled": {"type": "boolean"}, "audience": {"type": "string", "minLength": 1},
                              "cacheSeconds": {"type": "number", "minimum": 0, "maximum": 300}}),
        "termination": _strict({"preStopSeconds": {"type": "integer", "minimum": 0, "maximum": 60},
                                "drainSeconds": {"type": "integer", "minimum": 0, "maximum": 300}}),
        "audit": _strict({"witnesses": {"type": "boolean"},
                          "cosignIntervalSeconds": {"type": "number", "minimum": 0, "maximum": 86400}}),
        "logLevel": {"enum": ["DEBUG", "INFO", "WARNING", "ERROR"]},
        "postgresql": _strict({
            "mode": {"enum": ["none", "dev", "external"]},
            "external": _strict({
                "host": string, "port": port, "user": {"type": "string", "minLength": 1},
                "sslmode": {"enum": ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]},
                "databasePrefix": {"type": "string", "pattern": "^[a-z_][a-z0-9_]*$"},
                "passwordSecret": _strict({"name": string, "key": {"type": "string", "minLength": 1}}),
                "cidrs": cidrs}),
            "dev": _strict({"image": {"type": "string", "minLength": 1}, "password": {"type": "string", "minLength": 1},
                            "databasePrefix": {"type": "string", "pattern": "^[a-z_][a-z0-9_]*$"}}),
        }, ["mode"]),
        "aws": _strict({"region": {"type": "string", "pattern": "^([a-z]{2}(-[a-z]+)+-[0-9])?$"},
                        "kms": _strict({**aws_access, "defaultBackend": {"type": "boolean"}}),
                        "s3": _strict(aws_access)}),
        "nodeGroups": _strict({
            "general": _strict({"nodeSelector": {"type": "object", "additionalProperties": string}}),
            "nitro": _strict({"label": label, "taint": taint}, ["label", "taint"]),
            "gpu": _strict({"label": label, "taint": taint}, ["label", "taint"]),
        }),
        "metrics": _strict({
            "scrapeNamespaceSelector": selector,
            "serviceMonitor": _strict({"enabled": {"type": "boolean"}, "interval": duration,
                                       "scrapeTimeout": duration, "labels": labels}),
            "prometheusRule": _strict({"enabled": {"type": "boolean"}, "labels": labels}),
            "dashboards": _strict({"enabled": {"type": "boolean"}, "labels": labels}),
        }),
        "tracing": _strict({"exporter": {"enum": ["none", "otlp"]},
                            "otlpEndpoint": {"type": "string", "pattern": "^(https?://[^\\s]+)?$"},
                            "otlpProtocol": {"enum": ["grpc", "http/protobuf"]},
                            "sampleRatio": {"type": "number", "minimum": 0, "maximum": 1},
                            "collector": _strict({"peers": peers, "port": port})}),
        "networkPolicy": _strict({"enabled": {"type": "boolean"}, "clients": peers, "kubeletCidrs": cidrs,
                                  "dns": _strict({"namespaceSelector": selector, "podSelector": selector})}),
        "services": services,
        "fhe": _strict({
            "evaluator": _strict({"backend": {"enum": ["", "openfhe", "torch"]},
                                  "device": {"enum": ["", "auto", "cpu", "cuda"]}}),
            "gpu": _strict({"enabled": {"type": "boolean"}, "count": {"type": "integer", "minimum": 1, "maximum": 16}}),
            # Not 0 and not the pod's fsGroup (10001), whose members may read the mounted secrets.
            "sandbox": _strict({key: {"type": "integer", "minimum": 1, "maximum": 2**31 - 1, "not": {"const": 10001}}
                                for key in ("uid", "gid")}, ["uid", "gid"]),
        }),
        "enclave": _strict({
            "enabled": {"type": "boolean"},
            "replicas": {"type": "integer", "minimum": 1},
            "image": image,
            "eifPath": {"type": "string", "pattern": "^/"},
            "cpuCount": {"type": "integer", "minimum": 2, "maximum": 64,
                         "description": "Nitro needs at least 2 (one full core)"},
            "memoryMiB": {"type": "integer", "minimum": 64},
            "hugepages": {"enum": ["2Mi", "1Gi"]},
            "parent": _strict({"cpuMillis": {"type": "integer", "minimum": 10},
                               "memory": quantity}, ["cpuMillis", "memory"]),
            "command": {"type": "array", "items": string},
            "policyName": {"type": "string", "pattern": "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"},
            "pcrs": _strict({"pcr0": pcr, "pcr1": pcr, "pcr2": pcr}),
            "devicePlugin": _strict({"enabled": {"type": "boolean"}, "image": {"type": "string", "minLength": 1}}),
        }),
    })
    root["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    root["title"] = "privmesh chart values"
    root["$defs"] = dict(sorted(defs.items()))
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the file is not current")
    args = parser.parse_args(argv)
    text = json.dumps(build(), indent=2) + "\n"
    if args.check:
        if not SCHEMA_FILE.exists() or SCHEMA_FILE.read_text() != text:
            print(f"{SCHEMA_FILE} is stale: run scripts/dev/chart_schema.py", file=sys.stderr)
            return 1
        return 0
    SCHEMA_FILE.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
