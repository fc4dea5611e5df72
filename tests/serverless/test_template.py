"""The SAM template validates offline with cfn-lint (SAM transform included), each function's role reaches
only its own table, key and bucket prefixes, the image installs from the pinned constraints, and the example
policy is one the runtime loads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from cfnlint.decode import decode_str

from privmesh.fhe.settings import FheSettings
from privmesh.runtime.authz import Authorizer

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "serverless" / "template.yaml"


def _template() -> Any:
    template, problems = decode_str(TEMPLATE.read_text())
    assert not problems
    return template


def test_cfn_lint_passes() -> None:
    done = subprocess.run([str(Path(sys.executable).parent / "cfn-lint"), str(TEMPLATE)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_each_role_reaches_only_its_table_key_and_prefixes() -> None:
    resources = _template()["Resources"]
    table, key = {"Fn::GetAtt": ["VaultTable", "Arn"]}, {"Fn::GetAtt": ["VaultKey", "Arn"]}
    allowed = {"TokenVaultRole": {"dynamodb": [table], "kms": [key]},
               "BatchRole": {"dynamodb": [table], "kms": [key], "s3": [
                   {"Fn::Sub": "arn:${AWS::Partition}:s3:::${BatchBucketName}/incoming/*"},
                   {"Fn::Sub": "arn:${AWS::Partition}:s3:::${BatchBucketName}/tokenized/*"},
                   {"Fn::Sub": "arn:${AWS::Partition}:s3:::${BatchBucketName}/failed/*"}]},
               "FheRole": {"elasticfilesystem": ["*"]},  # mounts only the key directory's access point:
               "FheJobRole": {"elasticfilesystem": ["*"], "s3": [  # only the state directory's, and its prefixes
                   {"Fn::Sub": f"arn:${{AWS::Partition}}:s3:::${{JobBucketName}}/fhe-jobs/{prefix}/*"}
                   for prefix in ("incoming", "inputs", "results", "submitted", "failed")]}}
    access_points = {"FheRole": {"Ref": "FheKeysAccessPointArn"}, "FheJobRole": {"Ref": "FheStateAccessPointArn"}}
    roles = {name for name, r in resources.items() if r["Type"] == "AWS::IAM::Role"}
    assert roles == set(allowed)
    for name, limits in allowed.items():
        statements = [s for p in resources[name]["Properties"]["Policies"] for s in p["PolicyDocument"]["Statement"]]
        for statement in statements:
            assert statement["Effect"] == "Allow" and "*" not in str(statement["Action"])
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            services = {a.split(":")[0] for a in actions}
            assert len(services) == 1
            reachable = limits[services.pop()]
            targets = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            assert all(t in reachable for t in targets), (name, statement)
            if actions[0].startswith("elasticfilesystem:"):
                assert statement["Condition"]["StringEquals"]["elasticfilesystem:AccessPointArn"] == \
                    access_points[name]
            if actions[0].startswith("kms:"):
                assert statement["Condition"]["StringEquals"]["kms:EncryptionContext:service"] == "token-vault"
            if actions[0] == "s3:GetObject" and name == "FheJobRole":  # reads inputs only, writes no input
                assert all("/incoming/" in t["Fn::Sub"] or "/inputs/" in t["Fn::Sub"] for t in targets)
            if actions[0] == "s3:PutObject" and name == "FheJobRole":
                assert not any("/incoming/" in t["Fn::Sub"] or "/inputs/" in t["Fn::Sub"] for t in targets)
    functions = {n: r for n, r in resources.items() if r["Type"] == "AWS::Serverless::Function"}
    assert {f["Properties"]["Role"]["Fn::GetAtt"][0] for f in functions.values()} == set(allowed)
    assert resources["VaultTable"]["Properties"]["TimeToLiveSpecification"] == {"AttributeName": "expires_at",
                                                                                "Enabled": True}


def test_image_installs_from_the_pinned_constraints_and_the_policy_loads() -> None:
    dockerfile = (ROOT / "serverless" / "Dockerfile").read_text()
    for config in ("fhe-service.yaml", "fhe-jobs.yaml"):  # the functions' service settings are valid FheSettings
        assert f"COPY serverless/{config}" in dockerfile
        FheSettings.model_validate(yaml.safe_load((ROOT / "serverless" / config).read_text()))
    assert "--constraint /tmp/privmesh/constraints.txt" in dockerfile and "ARG EXTRAS=serverless" in dockerfile
    Authorizer.from_file(ROOT / "serverless" / "policy.yaml")
