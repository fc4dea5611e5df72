"""fhe-inference's job function under the Lambda runtime emulator, against moto's S3, beside the gRPC service on
the same state (job store, job directory, key directory, audit chain), whose runner runs what the function
submits: an input object created under fhe-jobs/incoming/ becomes a job (a redelivered event the same job), the
result written to S3 decrypts to the plaintext model's scores, bad or oversized inputs get 400 with nothing
stored, the per-principal queue bound answers 429, and a principal the policy does not know gets 403, audited."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import numpy as np

from privmesh.fhe import server as fhe_server
from privmesh.fhe.client import register_keys, submit_job
from privmesh.fhe.model import load_model
from privmesh.fhe.v1 import fhe_pb2_grpc
from privmesh.runtime.client import secure_channel
from privmesh.runtime.pki import DevPki
from privmesh.serverless.fhejobs import job_object, result_outputs
from privmesh.serverless.local import Emulator
from tests.conftest import identity, server_config, spiffe
from tests.fhe.conftest import RULES, fhe_settings, keys_for, small_model_files
from tests.serverless.conftest import REGION, ROOT, Aws, http_event

BUCKET = "fhe-jobs-test"
MAX_OBJECT = 4 << 20


def _env(tmp: Path, aws: Aws) -> dict[str, str]:
    config = tmp / "fhe-job-function.yaml"  # the service's settings, with a queue bound of one per principal
    config.write_text(json.dumps(fhe_settings(tmp, jobs={"max_queued_per_principal": 1})))
    return {"PRIVMESH_FHE_CONFIG": str(config), "PRIVMESH_AUTHZ_POLICY": str(tmp / "policy.yaml"),
            "PRIVMESH_AUDIT_DATABASE": f"sqlite:///{tmp / 'audit.db'}",
            "PRIVMESH_AUDIT_SIGNING_KEY": (tmp / "audit-signing.pem").read_text(),
            "PRIVMESH_DIRECT_PRINCIPAL": spiffe("bob"), "PRIVMESH_S3_PRINCIPAL": spiffe("bob"),
            "PRIVMESH_BUCKET": BUCKET, "PRIVMESH_REGION": REGION, "PRIVMESH_S3_ENDPOINT": aws.endpoint,
            "PRIVMESH_MAX_OBJECT_BYTES": str(MAX_OBJECT), "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}


def _stored(tmp: Path) -> tuple[list[Any], list[str]]:
    """The job rows and the job directories (staging excluded)."""
    with sqlite3.connect(tmp / "fhe.db") as conn:
        rows = conn.execute("SELECT job_id, owner, state FROM fhe_jobs ORDER BY job_id").fetchall()
    jobs = tmp / "jobs"
    return rows, sorted(p.name for p in jobs.iterdir() if not p.name.startswith(".")) if jobs.exists() else []


def _audit(tmp: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(tmp / "audit.db") as conn:
        return conn.execute("SELECT principal, operation, outcome FROM audit_entries ORDER BY sequence").fetchall()


def _reason(reply: dict[str, Any]) -> str:
    body = reply["body"] if isinstance(reply["body"], dict) else json.loads(reply["body"])
    assert "Traceback" not in json.dumps(reply)
    return str(next(d for d in body["error"]["details"] if d["@type"].endswith("ErrorInfo"))["reason"])


def _created(key: str) -> dict[str, Any]:
    return {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                         "s3": {"bucket": {"name": BUCKET}, "object": {"key": key}}}]}


async def test_jobs_with_inputs_and_results_in_s3(start_server, tmp_path: Path, pki: DevPki,  # type: ignore[no-untyped-def]
                                                  aws: Aws, rie: Path) -> None:
    # The service's runner looks for jobs others queued once a minute: the function's jobs stay queued until a
    # submission of the service's own wakes it, so the queue bound is seen deterministically.
    settings = fhe_settings(tmp_path, jobs={"poll_seconds": 60})
    server = await start_server(fhe_server.DEFINITION, server_config(tmp_path, pki, RULES, settings))
    aws.s3.create_bucket(Bucket=BUCKET)
    async with secure_channel(f"127.0.0.1:{server.port}", identity(pki, "bob"), peer=spiffe("server")) as channel:
        bob = fhe_pb2_grpc.FHEInferenceStub(channel)
        keys = await keys_for(bob, "linear")
        session = await register_keys(bob, keys)
        raw = np.random.default_rng(5).normal(0, 1, (3, 6))
        ciphertext = keys.encrypt(keys.preprocess(raw))
        good = job_object(session.name, [(ciphertext, 3)], 1)
        with Emulator(rie, "privmesh.serverless.handler.fhe_job", _env(tmp_path, aws), tmp_path / "rie.log",
                      cwd=ROOT, start_timeout=60) as function:
            async def invoke(event: dict[str, Any]) -> Any:
                return await asyncio.to_thread(function.invoke, event, 300)

            bad = {"fhe-jobs/inputs/garbage.bin": (b"\x01\x00\x00\x00\x05hello", "OBJECT_MALFORMED"),
                   "fhe-jobs/inputs/big.bin": (b"\x00" * (MAX_OBJECT + 1), "OBJECT_TOO_LARGE"),
                   "fhe-jobs/inputs/shape.bin": (job_object(session.name, [(ciphertext, 0)], 1),
                                                 "INPUT_SHAPE_MISMATCH"),
                   "fhe-jobs/inputs/truncated.bin": (good[:-7], "OBJECT_MALFORMED"),
                   "fhe-jobs/incoming/elsewhere.bin": (good, "INVALID_FIELD")}
            for key, (data, reason) in bad.items():
                aws.s3.put_object(Bucket=BUCKET, Key=key, Body=data)
                reply = await invoke({"action": "submit", "input": key})
                assert (reply["statusCode"], _reason(reply)) == (400, reason), (key, reply)
            missing = await invoke({"action": "submit", "input": "fhe-jobs/inputs/none.bin"})
            assert (missing["statusCode"], _reason(missing)) == (404, "OBJECT_NOT_FOUND")
            aws.s3.put_object(Bucket=BUCKET, Key="fhe-jobs/incoming/bad.bin", Body=good[:-7])
            failed = (await invoke(_created("fhe-jobs/incoming/bad.bin")))["files"][0]
            assert failed == {"error": "OBJECT_MALFORMED", "report": "fhe-jobs/failed/bad.bin.json"}
            report = json.loads(aws.s3.get_object(Bucket=BUCKET, Key=failed["report"])["Body"].read())
            assert report["error"]["code"] == 400 and report["source"] == "fhe-jobs/incoming/bad.bin"
            assert _stored(tmp_path) == ([], [])  # nothing stored, staging included
            assert list((tmp_path / "jobs" / ".incoming").iterdir()) == []

            # An input object created under incoming/ is submitted; a redelivered event is the same job.
            aws.s3.put_object(Bucket=BUCKET, Key="fhe-jobs/incoming/a.bin", Body=good)
            submitted = await invoke(_created("fhe-jobs/incoming/a.bin"))
            name = submitted["files"][0]["job"]
            receipt = json.loads(aws.s3.get_object(Bucket=BUCKET, Key="fhe-jobs/submitted/a.bin.json")["Body"].read())
            assert receipt["job"]["name"] == name and receipt["job"]["state"] == "JOB_STATE_QUEUED"
            assert (await invoke(_created("fhe-jobs/incoming/a.bin")))["files"][0]["job"] == name
            assert [(r[1], r[2]) for r in _stored(tmp_path)[0]] == [(spiffe("bob"), "QUEUED")]

            # The queue bound (one unfinished job per principal here): 429, nothing stored.
            aws.s3.put_object(Bucket=BUCKET, Key="fhe-jobs/inputs/b.bin", Body=good)
            full = await invoke({"action": "submit", "input": "fhe-jobs/inputs/b.bin"})
            assert (full["statusCode"], _reason(full)) == (429, "JOB_QUEUE_FULL")
            assert len(_stored(tmp_path)[0]) == 1

            # A principal the policy does not know: 403, audited with its mapped identity.
            refused = await invoke(http_event("fhe/jobs/get", {"job": name}, caller="mallory"))
            assert (refused["statusCode"], _reason(refused)) == (403, "PERMISSION_DENIED_BY_POLICY")
            assert any(p.endswith("/sa/mallory") and (o, r) == ("GetJob", "DENIED") for p, o, r in _audit(tmp_path))
            early = await invoke({"action": "result", "job": name})
            assert (early["statusCode"], _reason(early)) == (400, "JOB_NOT_SUCCEEDED")

            # A submission of the service's own wakes its runner, which runs both jobs.
            await submit_job(bob, session.name, [(ciphertext, 3)])
            deadline = time.monotonic() + 180
            while (state := (await invoke({"action": "get", "job": name}))["body"]["job"]["state"]) \
                    != "JOB_STATE_SUCCEEDED":
                assert state in ("JOB_STATE_QUEUED", "JOB_STATE_RUNNING") and time.monotonic() < deadline, state
                await asyncio.sleep(0.5)
            result = await invoke({"action": "result", "job": name})
            assert result["statusCode"] == 200, result
            key = result["body"]["result"]
            assert key == f"fhe-jobs/results/{name.removeprefix('jobs/')}.bin"
            outputs = await result_outputs(aws.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
            expected = load_model("linear", small_model_files()["linear"]).predict(keys.preprocess(raw))
            assert len(outputs) == 1 and np.allclose(keys.decrypt(outputs[0], 3), expected, atol=1e-3)

    bobs = [(o, r) for p, o, r in _audit(tmp_path) if p == spiffe("bob")]
    assert bobs.count(("SubmitJob", "SUCCESS")) == 2  # the function's job (once) and the service's
    assert ("SubmitJob", "DENIED") in bobs and ("GetJobResult", "SUCCESS") in bobs
