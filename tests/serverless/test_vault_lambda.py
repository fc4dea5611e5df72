"""The serverless vault's handlers under the Lambda runtime emulator, against moto's KMS, DynamoDB and S3:
tokenize, detokenize allowed and refused, a deterministic field's join, one token for concurrent writers of
one value, TTL, erasure, malformed events and oversized batches (nothing written), and S3 batch files."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from privmesh.serverless.local import Emulator
from privmesh.tokenvault.dynamo import DynamoStore
from tests.serverless.conftest import REGION, ROOT, Aws, Stack, http_event, make_stack, principal

TENANT = "tenants/acme"


def _field(emulator: Any, stack: Stack, field_id: str, profile: dict[str, Any], **extra: Any) -> None:
    body = {"parent": TENANT, "fieldId": field_id, "field": {
        "profile": profile, "key": f"aliases/{stack.table}",
        "detokenizePolicy": {"rules": [{"principals": [principal("vault-admin")], "view": "DETOKENIZE_VIEW_VALUE"}]},
        **extra}}
    reply = emulator.invoke(http_event("CreateField", body))
    assert reply["statusCode"] == 200, reply


def _ok(reply: dict[str, Any]) -> dict[str, Any]:
    assert reply["statusCode"] == 200, reply
    return json.loads(reply["body"]) if isinstance(reply["body"], str) else reply["body"]


def _error(reply: dict[str, Any]) -> tuple[int, str, list[str]]:
    body = json.loads(reply["body"]) if isinstance(reply["body"], str) else reply["body"]
    details = body["error"]["details"]
    reason = next(d["reason"] for d in details if d["@type"].endswith("ErrorInfo"))
    fields = [v["field"] for d in details if d["@type"].endswith("BadRequest") for v in d["fieldViolations"]]
    return reply["statusCode"], reason, fields


def _store(stack: Stack) -> DynamoStore:
    return DynamoStore(stack.table, REGION, stack.aws.endpoint)


@pytest.fixture(scope="module")
def stack(aws: Aws, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    """One deployment for the module; each test uses fields of its own."""
    return make_stack(aws, tmp_path_factory.mktemp("stack"), "vault")


@pytest.fixture(scope="module")
def vault(stack: Stack, rie: Path) -> Iterator[Emulator]:
    """The vault function's execution environment, warm after its first test."""
    with Emulator(rie, "privmesh.serverless.handler.tokenvault", stack.env, stack.tmp / "rie.log",
                  cwd=ROOT) as emulator:
        yield emulator


def _items(field: str, values: list[str], subject: str = "") -> list[dict[str, str]]:
    return [{"field": field, "value": v, **({"subjectId": subject} if subject else {})} for v in values]


def test_tokenize_detokenize_and_refusals_are_audited(stack: Stack, vault: Emulator) -> None:
    _field(vault, stack, "email", {"random": {}})
    batch = {"parent": TENANT, "items": _items("email", ["a@x.org", "b@x.org"])}
    tokenized = _ok(vault.invoke(http_event("Tokenize", batch, caller="analyst")))
    tokens = [r["token"] for r in tokenized["results"]]
    assert len(tokens) == 2 and "a@x.org" not in tokens
    # The field's detokenize policy allows the admin only: the analyst (allowed the method) is refused, 403.
    refs = {"parent": TENANT, "items": [{"field": "email", "token": t} for t in tokens]}
    status, reason, _ = _error(vault.invoke(http_event("Detokenize", refs, caller="analyst")))
    assert (status, reason) == (403, "DETOKENIZE_DENIED")
    # A caller the policy does not know, and one without an IAM identity: refused, 403.
    assert _error(vault.invoke(http_event("Detokenize", refs, caller="stranger")))[:2] == \
        (403, "PERMISSION_DENIED_BY_POLICY")
    assert _error(vault.invoke(http_event("Detokenize", refs, caller=None)))[:2] == (403, "UNKNOWN_CALLER")
    values = [r["value"] for r in _ok(vault.invoke(http_event("Detokenize", refs)))["results"]]
    assert values == ["a@x.org", "b@x.org"]
    audit = stack.audit()
    assert ("Detokenize", "DENIED") in {(op, outcome) for _, op, outcome, _ in audit}
    assert (principal("vault-admin"), "Detokenize", "SUCCESS") in {(p, op, o) for p, op, o, _ in audit}
    assert {p for p, op, o, _ in audit if o == "DENIED"} >= {principal("analyst"), principal("stranger")}
    assert not any("a@x.org" in json.dumps(d) for *_, d in audit)


def test_deterministic_join_and_direct_invocation(stack: Stack, vault: Emulator) -> None:
    _field(vault, stack, "ssn", {"deterministic": {}})
    first = _ok(vault.invoke(http_event("Tokenize", {"parent": TENANT, "items": _items("ssn", ["111", "222"])},
                                        caller="pipeline")))["results"]
    # A direct invocation (Step Functions) as the configured pipeline principal joins on the same tokens.
    second = _ok(vault.invoke({"method": "Tokenize", "request": {"parent": TENANT,
                                                                 "items": _items("ssn", ["222", "111", "111"])}}))
    assert [r["token"] for r in second["results"]] == [first[1]["token"], first[0]["token"], first[0]["token"]]
    assert _store(stack).count_entries("acme", "ssn") == 2


def test_concurrent_invocations_on_one_value_make_one_token(stack: Stack, vault: Emulator, emulators: Any) -> None:
    functions = [vault, emulators(stack)]  # two execution environments, as two concurrent invocations get
    _field(functions[0], stack, "card", {"deterministic": {}})
    event = http_event("Tokenize", {"parent": TENANT, "items": _items("card", ["4111", "4222", "4333"])},
                       caller="pipeline")
    for _ in range(2):
        with ThreadPoolExecutor(len(functions)) as pool:
            replies = list(pool.map(lambda f: f.invoke(event), functions))
        assert len({json.dumps(_ok(r)["results"]) for r in replies}) == 1
    assert _store(stack).count_entries("acme", "card") == 3


def test_ttl_expiry_and_erasure_by_subject(stack: Stack, vault: Emulator) -> None:
    _field(vault, stack, "name", {"random": {}})
    short = _ok(vault.invoke(http_event("Tokenize", {"parent": TENANT, "items": [
        {"field": "name", "value": "Ada", "subjectId": "p-1", "ttl": "1s"}]})))["results"][0]
    kept = _ok(vault.invoke(http_event("Tokenize", {"parent": TENANT, "items": _items("name", ["Bo"], "p-1")})))
    other = _ok(vault.invoke(http_event("Tokenize", {"parent": TENANT, "items": _items("name", ["Cy"], "p-2")})))
    assert "expireTime" in short
    store = _store(stack)
    items = store.client.scan(TableName=stack.table)["Items"]
    assert any("expires_at" in i for i in items)  # DynamoDB's TTL attribute on the expiring entry
    time.sleep(1.2)
    status, reason, _ = _error(vault.invoke(http_event("Detokenize", {"parent": TENANT, "items": [
        {"field": "name", "token": short["token"]}]})))
    assert (status, reason) == (404, "TOKEN_NOT_FOUND")
    erased = _ok(vault.invoke(http_event("ForgetSubject", {"parent": TENANT, "subjectId": "p-1"})))
    assert erased["deletedCount"] == "2"
    gone = vault.invoke(http_event("Detokenize", {"parent": TENANT, "items": [
        {"field": "name", "token": kept["results"][0]["token"]}]}))
    assert _error(gone)[:2] == (404, "TOKEN_NOT_FOUND")
    left = _ok(vault.invoke(http_event("Detokenize", {"parent": TENANT, "items": [
        {"field": "name", "token": other["results"][0]["token"]}]})))
    assert left["results"][0]["value"] == "Cy" and store.count_entries("acme", "name") == 1


def test_malformed_events_and_oversized_batches_write_nothing(stack: Stack, vault: Emulator) -> None:
    _field(vault, stack, "ssn2", {"deterministic": {}})
    before = _store(stack).client.scan(TableName=stack.table)["Count"]
    cases = [
        (http_event("Tokenize", None, raw="{not json"), 400, "BODY_INVALID", ["body"]),
        (http_event("Tokenize", {"parent": TENANT, "items": [{"field": "ssn2", "value": "1", "bogus": 1}]}), 400,
         "BODY_INVALID", ["body"]),
        (http_event("Tokenize", {"parent": TENANT, "items": _items("ssn2", ["1"] * 201)}), 400, "BATCH_TOO_LARGE",
         ["items"]),
        (http_event("Tokenize", {"parent": TENANT, "items": _items("ssn2", ["1", ""])}), 400, "VALUE_EMPTY",
         ["items[1].value"]),
        (http_event("Tokenize", {"parent": "acme", "items": _items("ssn2", ["1"])}), 400, "INVALID_FIELD",
         ["parent"]),
        ({"method": "Tokenize"}, 400, "EVENT_INVALID", ["event"]),
        (["not", "an", "event"], 400, "EVENT_INVALID", ["event"]),
    ]
    for event, status, reason, fields in cases:
        reply = vault.invoke(event)
        assert _error(reply) == (status, reason, fields), event
        assert "Traceback" not in json.dumps(reply)
    assert _store(stack).client.scan(TableName=stack.table)["Count"] == before


def test_s3_batch_file_tokenizes_a_column(stack: Stack, vault: Emulator, emulators: Any) -> None:
    _field(vault, stack, "ssn3", {"deterministic": {}})
    files = emulators(stack, "privmesh.serverless.handler.s3_batch")
    rows = ["id,ssn,city"] + [f"{n},{100 + n % 7},Paris" for n in range(450)] + ["450,,Lyon"]
    s3 = stack.aws.s3
    s3.put_object(Bucket=stack.bucket, Key="incoming/acme/ssn3/ssn/day1.csv", Body="\n".join(rows).encode())
    s3.put_object(Bucket=stack.bucket, Key="incoming/acme/ssn3/nope/day2.csv", Body=b"id,ssn\n1,2\n")
    big = b"ssn\n" + b"123456789\n" * 8000
    s3.put_object(Bucket=stack.bucket, Key="incoming/acme/ssn3/ssn/big.csv", Body=big)
    event = {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": {
        "bucket": {"name": stack.bucket}, "object": {"key": key, "size": size}}}
        for key, size in (("incoming/acme/ssn3/ssn/day1.csv", 100), ("incoming/acme/ssn3/nope/day2.csv", 12),
                          ("incoming/acme/ssn3/ssn/big.csv", len(big)))]}
    outcome = files.invoke(event)["files"]
    assert outcome[0] == {"output": "tokenized/acme/ssn3/ssn/day1.csv"}
    assert outcome[1]["error"] == "COLUMN_NOT_FOUND" and outcome[2]["error"] == "FILE_TOO_LARGE"
    out = s3.get_object(Bucket=stack.bucket, Key="tokenized/acme/ssn3/ssn/day1.csv")["Body"].read().decode()
    lines = [line.split(",") for line in out.splitlines()]
    assert lines[0] == ["id", "ssn", "city"] and len(lines) == 452 and lines[-1] == ["450", "", "Lyon"]
    by_value = {}
    for (_, ssn, _), (_, token, _) in zip((r.split(",") for r in rows[1:-1]), lines[1:-1], strict=True):
        assert token != ssn
        assert by_value.setdefault(ssn, token) == token  # deterministic: one token per value across batches
    report = json.loads(s3.get_object(Bucket=stack.bucket, Key="failed/acme/ssn3/nope/day2.csv.json")["Body"].read())
    assert report["error"]["code"] == 400
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=stack.bucket)["Contents"]}
    assert "tokenized/acme/ssn3/ssn/big.csv" not in keys and "tokenized/acme/ssn3/nope/day2.csv" not in keys
