"""fhe-inference's asynchronous jobs as a Lambda function, inputs and results in S3.

Where jobs run: not in the function (Lambda stops an invocation at 15 minutes and keeps no worker between calls).
The function only submits and reads jobs, through the service's own FHEInference servicer and jobs domain
(SubmitJob's framing and checks, the per-principal queue bound, request_id idempotence, the audit), on the
service's own state: its `service:` settings name the mesh's database (the job store) and key_dir, beside which
the job directory lives (an EFS access point mounted on the function). The fhe-inference service's JobRunner
claims a submitted job at its next poll (`jobs.poll_seconds`) and runs it on its sandboxed workers.

Objects in the function's bucket:
  fhe-jobs/incoming/{name}        created: submitted (S3 event) as PRIVMESH_S3_PRINCIPAL; the receipt is
                                  fhe-jobs/submitted/{name}.json ({"job": ...}), or fhe-jobs/failed/{name}.json
                                  (the error model)
  fhe-jobs/inputs/{name}          submitted by a request that names it
  fhe-jobs/results/{job_id}.bin   a succeeded job's outputs, written by the `result` action

An input object is SubmitJob's request stream (privmesh.fhe.client.job_requests: JobStart, then each InferInput
and its chunks); a result object is GetJobResult's response stream. Both use gRPC's length-prefixed message
framing (a 0 flag byte, a 4-byte big-endian length, the message), written by hand since no library exposes it for
files. A submission's request_id, unless its JobStart has one, is derived from the object's key and ETag, so a
redelivered event or a retried request is the same job.

Requests (HTTP API: POST /v1/fhe/jobs/{action}, the JSON body; direct invocation: {"action": ..., ...}):
  submit {"input": "fhe-jobs/inputs/..."} -> {"job": Job}
  get    {"job": "jobs/{id}"}             -> {"job": Job}
  result {"job": "jobs/{id}"}             -> {"job": "jobs/{id}", "result": "fhe-jobs/results/{id}.bin"}
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import struct
import tempfile
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar, cast

import boto3
import grpc
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from privmesh.fhe.client import collect_outputs, job_requests
from privmesh.fhe.inference_service import MAX_CHUNK_BYTES
from privmesh.fhe.server import job_service
from privmesh.fhe.servicer import FheServicer
from privmesh.fhe.v1 import fhe_pb2 as pb
from privmesh.runtime.errors import InvalidArgument, NotFound, ServiceError, Unavailable
from privmesh.runtime.requests import check_request
from privmesh.serverless.errors import error_body
from privmesh.serverless.fhe import ServerlessFhe
from privmesh.serverless.settings import FheJobSettings
from privmesh.serverless.vault import admitted, run

SERVICE = pb.DESCRIPTOR.services_by_name["FHEInference"].full_name
DOMAIN = "fhe.privmesh.dev"
PREFIX = "fhe-jobs/"
INCOMING, INPUTS, RESULTS = f"{PREFIX}incoming/", f"{PREFIX}inputs/", f"{PREFIX}results/"
SUBMITTED, FAILED = f"{PREFIX}submitted/", f"{PREFIX}failed/"
ACTIONS = {"submit": "SubmitJob", "get": "GetJob", "result": "GetJobResult"}
MAX_FRAME = MAX_CHUNK_BYTES + 65_536  # a chunk with its header; start and input headers are far smaller
_HEADER = struct.Struct(">BI")
_KEY = re.compile(r"^[\w!.*'()/=+-]{1,1024}$")
_JOB = re.compile(r"^jobs/[A-Za-z0-9]{1,64}$")
M = TypeVar("M", bound=Message)


def _bad(field: str, description: str, reason: str = "INVALID_FIELD") -> InvalidArgument:
    return InvalidArgument.single(field, description, reason)


def frame(message: Message) -> bytes:
    data = message.SerializeToString()
    return _HEADER.pack(0, len(data)) + data


def job_object(session: str, inputs: Iterable[tuple[bytes, int]], count: int, request_id: str = "") -> bytes:
    """An input object: inputs (ciphertext, sample count) for `session` ("sessions/{id}")."""
    start = pb.JobStart(session=session, input_count=count, request_id=request_id)
    return b"".join(frame(request) for request in job_requests(start, inputs))


def read_frames(read: Callable[[int], bytes], message_type: type[M], size: int) -> Iterator[M]:
    """The messages of a framed object of `size` bytes; each frame's length is checked before it is read."""
    consumed = 0
    while consumed < size:
        header = read(_HEADER.size)
        if len(header) != _HEADER.size:
            raise _bad("object", "truncated frame header", "OBJECT_MALFORMED")
        flag, length = _HEADER.unpack(header)
        if flag != 0 or length > MAX_FRAME or consumed + _HEADER.size + length > size:
            raise _bad("object", f"a frame must be uncompressed and at most {MAX_FRAME} bytes", "OBJECT_MALFORMED")
        data = read(length)
        if len(data) != length:
            raise _bad("object", "truncated frame", "OBJECT_MALFORMED")
        message = message_type()
        try:
            message.ParseFromString(data)
        except DecodeError:
            raise _bad("object", f"a frame is not a {message_type.DESCRIPTOR.name}", "OBJECT_MALFORMED") from None
        consumed += _HEADER.size + length
        yield message


async def result_outputs(data: bytes) -> list[bytes]:
    """The output ciphertexts (one per input, in order) of a result object."""
    offset = 0

    def read(count: int) -> bytes:
        nonlocal offset
        offset += count
        return data[offset - count:offset]

    async def responses() -> AsyncIterator[pb.GetJobResultResponse]:
        for response in read_frames(read, pb.GetJobResultResponse, len(data)):
            yield response

    return await collect_outputs(responses())


def _exactly(body: Any) -> Callable[[int], bytes]:
    """`read(n)` of an S3 body that returns n bytes unless the object ended."""

    def read(count: int) -> bytes:
        parts, left = [], count
        while left:
            part = bytes(body.read(left))
            if not part:
                break
            parts.append(part)
            left -= len(part)
        return b"".join(parts)

    return read


class ServerlessJobs:
    """Built once per cold start: the scoring function's service objects, the jobs domain over the service's job
    store and directory, the service's servicer, and an S3 client."""

    def __init__(self, settings: FheJobSettings) -> None:
        self.settings = settings
        self.fhe = ServerlessFhe(settings)
        self.jobs = job_service(self.fhe.fhe_settings, self.fhe.db, self.fhe.service, self.fhe.audit)
        self.servicer = FheServicer(self.fhe.service, self.jobs, self.fhe.authorizer)
        self.s3 = boto3.client("s3", region_name=settings.region, endpoint_url=settings.s3_endpoint,
                               config=Config(connect_timeout=settings.timeout_seconds,
                                             read_timeout=settings.timeout_seconds))

    async def call(self, principal: str | None, action: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """One request as `principal` (None: no verifiable caller); ServiceError on any refusal or failure."""
        method = ACTIONS.get(action)
        if method is None:
            raise NotFound("METHOD_NOT_FOUND", f"no action {action!r} here (submit, get, result)")
        expected = "input" if action == "submit" else "job"
        if set(body) != {expected} or not isinstance(body[expected], str):
            raise _bad("body", f"must be {{\"{expected}\": ...}}", "BODY_INVALID")
        value = str(body[expected])

        async def serve(_: str) -> dict[str, Any]:
            if action == "submit":
                if not value.startswith(INPUTS) or not _KEY.match(value) or ".." in value:
                    raise _bad("input", f"must be an object key under {INPUTS}")
                return {"job": _json(await self._submit(value))}
            if not _JOB.match(value):
                raise _bad("job", "must be jobs/{job_id}")
            if action == "get":
                request = pb.GetJobRequest(name=value)
                self._admit(request)
                return {"job": _json((await self.servicer.GetJob(request, _NO_CONTEXT)).job)}
            return {"job": value, "result": await self._result(value)}

        return cast(dict[str, Any], await admitted(self.fhe.audit, self.fhe.authorizer, principal,
                                                   f"{SERVICE}/{method}", serve))

    def _admit(self, request: Message) -> None:
        check_request(request)
        self.fhe.authorizer.authorize_request(request)

    async def _submit(self, key: str) -> pb.Job:
        body, size, etag = await asyncio.to_thread(self._open, key)
        try:
            request_id = hashlib.sha256(f"{key}\n{etag}".encode()).hexdigest()[:32]
            reply = await self.servicer.SubmitJob(self._requests(body, size, request_id), _NO_CONTEXT)
        finally:
            body.close()
        return reply.job

    def _open(self, key: str) -> tuple[Any, int, str]:
        """The object's body, unread, once its size is known to be within the limit."""
        try:
            found = self.s3.get_object(Bucket=self.settings.bucket, Key=key)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise NotFound("OBJECT_NOT_FOUND", f"no object {key}") from None
            raise Unavailable("S3_UNAVAILABLE", "the input could not be read") from None
        except BotoCoreError:
            raise Unavailable("S3_UNAVAILABLE", "the input could not be read") from None
        size, limit = int(found["ContentLength"]), self.settings.max_object_bytes
        if size > limit:
            found["Body"].close()
            raise _bad("input", f"at most {limit} bytes", "OBJECT_TOO_LARGE")
        return found["Body"], size, str(found.get("ETag", ""))

    async def _requests(self, body: Any, size: int, request_id: str) -> AsyncIterator[pb.SubmitJobRequest]:
        frames = read_frames(_exactly(body), pb.SubmitJobRequest, size)
        first = True
        while True:
            try:
                request = await asyncio.to_thread(next, frames, None)
            except (ClientError, BotoCoreError):
                raise Unavailable("S3_UNAVAILABLE", "the input could not be read") from None
            if request is None:
                return
            if first and request.WhichOneof("payload") == "start" and not request.start.request_id:
                request.start.request_id = request_id
            first = False
            yield request

    async def _result(self, name: str) -> str:
        """Copies the succeeded job's outputs (GetJobResult's stream, audited by it) to its result object."""
        request = pb.GetJobResultRequest(name=name)
        self._admit(request)
        key = f"{RESULTS}{name.removeprefix('jobs/')}.bin"
        with tempfile.SpooledTemporaryFile(max_size=8 << 20) as spool:
            async for response in self.servicer.GetJobResult(request, _NO_CONTEXT):
                spool.write(frame(response))
            spool.seek(0)
            try:
                await asyncio.to_thread(self.s3.upload_fileobj, spool, self.settings.bucket, key,
                                        ExtraArgs={"ContentType": "application/octet-stream"})
            except (ClientError, BotoCoreError):
                raise Unavailable("S3_UNAVAILABLE", "the result could not be written") from None
        return key

    def handle_s3(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """Each created input's outcome: its job and receipt, or the error report's key."""
        records = event.get("Records")
        outcomes = []
        for record in records if isinstance(records, list) else []:
            try:
                bucket = str(record["s3"]["bucket"]["name"])
                key = urllib.parse.unquote_plus(str(record["s3"]["object"]["key"]))
            except (KeyError, TypeError):
                outcomes.append({"error": "EVENT_INVALID"})
                continue
            outcomes.append(self._created(bucket, key))
        return {"files": outcomes}

    def _created(self, bucket: str, key: str) -> dict[str, Any]:
        rest = key.removeprefix(INCOMING)
        if bucket != self.settings.bucket or not key.startswith(INCOMING) or not rest or not _KEY.match(key) \
                or ".." in key:
            return {"error": "KEY_INVALID", "key": key}  # not this function's: nothing may be written for it
        principal = self.settings.s3_principal or None
        try:
            reply = run(admitted(self.fhe.audit, self.fhe.authorizer, principal, f"{SERVICE}/SubmitJob",
                                 lambda _: self._submit(key)))
        except ServiceError as error:
            self._put(FAILED + rest + ".json", {"source": key, **error_body(error, DOMAIN)})
            return {"error": error.reason, "report": FAILED + rest + ".json"}
        self._put(SUBMITTED + rest + ".json", {"source": key, "job": _json(reply)})
        return {"job": reply.name, "receipt": SUBMITTED + rest + ".json"}

    def _put(self, key: str, body: dict[str, Any]) -> None:
        try:
            self.s3.put_object(Bucket=self.settings.bucket, Key=key, Body=json.dumps(body).encode(),
                               ContentType="application/json")
        except (ClientError, BotoCoreError):
            raise Unavailable("S3_UNAVAILABLE", "the receipt could not be written") from None


def _json(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message)


# The servicer reads nothing from its gRPC context: the serverless call passes none.
_NO_CONTEXT = cast("grpc.aio.ServicerContext[Any, Any]", None)
