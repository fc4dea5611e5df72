"""FHEInference over gRPC: protobuf <-> domain types, and the chunked streaming protocols of RegisterKeys and
Infer (every chunk checked against what its header declared before it is kept)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from privmesh.fhe.convert import KINDS, PART_KINDS, PART_NAMES, params_from_proto, params_to_proto, reverse
from privmesh.fhe.inference_service import (
    MAX_CHUNK_BYTES,
    Chunk,
    DeclaredPart,
    FheService,
    KeyUpload,
    check_input,
    required_parts,
)
from privmesh.fhe.jobs import InputInfo, Job, JobRequest, JobService, JobState, Submission
from privmesh.fhe.model import ModelSpec
from privmesh.fhe.polynomial import Approximation
from privmesh.fhe.registry import RegisteredModel
from privmesh.fhe.store import Session
from privmesh.fhe.v1 import fhe_pb2 as pb
from privmesh.fhe.v1 import fhe_pb2_grpc
from privmesh.runtime.authz import Authorizer
from privmesh.runtime.context import CallContext, current_principal
from privmesh.runtime.errors import InvalidArgument
from privmesh.runtime.paging import name_page, visible_page

ACTIVATIONS = {"identity": pb.ACTIVATION_KIND_IDENTITY, "square": pb.ACTIVATION_KIND_SQUARE,
               "polynomial": pb.ACTIVATION_KIND_POLYNOMIAL}


def _ts_us(micros: int) -> Timestamp:
    return Timestamp(seconds=micros // 1_000_000, nanos=(micros % 1_000_000) * 1000)


def _resource_id(name: str, collection: str, field: str) -> str:
    prefix = f"{collection}/"
    if not name.startswith(prefix) or not name[len(prefix):] or "/" in name[len(prefix):]:
        raise InvalidArgument.single(field, f"must look like {collection}/{{id}}")
    return name[len(prefix):]


def _polynomial(approximation: Approximation) -> pb.PolynomialApproximation:
    return pb.PolynomialApproximation(
        degree=approximation.degree, interval_min=approximation.low, interval_max=approximation.high,
        basis=pb.POLYNOMIAL_BASIS_CHEBYSHEV, coefficients=list(approximation.chebyshev),
        max_abs_error=approximation.max_abs_error, approximates=approximation.function)


def model_to_proto(model: RegisteredModel) -> pb.Model:
    spec = model.spec
    msg = pb.Model(
        name=spec.name, display_name=spec.display_name, description=spec.description, kind=KINDS[spec.kind],
        parameters=params_to_proto(spec.params), required_key_parts=[PART_KINDS[p] for p in required_parts(spec)],
        features=[pb.Feature(name=f.name, offset=f.offset, scale=f.scale) for f in spec.features],
        input_packing=pb.InputPacking(features_per_sample=len(spec.features),
                                      samples_per_ciphertext=spec.samples_per_ciphertext,
                                      layout=pb.PACKING_LAYOUT_SAMPLE_MAJOR, stride=spec.stride,
                                      ciphertexts_per_input=1),
        output_packing=pb.OutputPacking(values_per_sample=spec.outputs, layout=pb.PACKING_LAYOUT_SAMPLE_MAJOR,
                                        stride=spec.stride, ciphertexts_per_output=1,
                                        value_names=list(spec.output_names)),
        tolerance=spec.tolerance,
        limits=pb.ModelLimits(max_total_key_bytes=spec.limits.max_total_key_bytes,
                              max_ciphertext_bytes=spec.limits.max_ciphertext_bytes,
                              max_inputs_per_stream=spec.limits.max_inputs_per_stream),
        weights_sha256=spec.weights_sha256, etag=spec.etag, create_time=_ts_us(model.create_us))
    if spec.kind == "linear_regression":
        msg.linear_regression.SetInParent()
    elif spec.kind == "logistic_regression":
        approximation = spec.layers[0].activation.approximation
        assert approximation is not None
        msg.logistic_regression.sigmoid.CopyFrom(_polynomial(approximation))
    else:
        for layer in spec.layers:
            activation = pb.Activation(kind=ACTIVATIONS[layer.activation.kind])
            if layer.activation.approximation is not None:
                activation.polynomial.CopyFrom(_polynomial(layer.activation.approximation))
            msg.mlp.layers.append(pb.MlpLayer(units=layer.units, activation=activation))
    return msg


def session_to_proto(session: Session) -> pb.Session:
    msg = pb.Session(
        name=session.name, model=f"models/{session.model_id}", model_etag=session.model_etag, owner=session.owner,
        key_parts=[pb.KeyPartInfo(kind=PART_KINDS[p.kind], size_bytes=p.size, sha256=p.sha256)
                   for p in session.key_parts],
        public_key_fingerprint=session.public_key_fingerprint, create_time=_ts_us(session.create_us),
        expire_time=_ts_us(session.expire_us), inference_count=session.inference_count)
    if session.last_infer_us is not None:
        msg.last_infer_time.CopyFrom(_ts_us(session.last_infer_us))
    return msg


def _out_of_order(message: str, field: str = "payload") -> InvalidArgument:
    return InvalidArgument.single(field, message, "STREAM_OUT_OF_ORDER")


def _upload(header: pb.RegisterKeysHeader) -> KeyUpload:
    parts = []
    for index, part in enumerate(header.key_parts):
        if part.kind not in PART_NAMES:
            raise InvalidArgument.single(f"header.key_parts[{index}].kind", "unknown key part kind")
        parts.append(DeclaredPart(PART_NAMES[part.kind], part.size_bytes, part.sha256))
    if header.ttl.seconds < 0 or header.ttl.nanos < 0:
        raise InvalidArgument.single("header.ttl", "must not be negative")
    return KeyUpload(_resource_id(header.model, "models", "header.model"),
                     params_from_proto(header.parameters) if header.HasField("parameters") else None,
                     tuple(parts), header.ttl.ToTimedelta() if header.HasField("ttl") else None, header.request_id)


async def _key_chunks(requests: AsyncIterator[pb.RegisterKeysRequest]) -> AsyncIterator[Chunk]:
    async for request in requests:
        if request.WhichOneof("payload") != "chunk":
            raise _out_of_order("only the first message may be a header")
        kind = PART_NAMES.get(request.chunk.kind)
        if kind is None:
            raise _out_of_order("unknown key part kind", "chunk.kind")
        yield Chunk(kind, request.chunk.offset, request.chunk.data)


class _Input:
    """One Infer input being received: its declared shape and the bytes so far."""

    def __init__(self, msg: pb.InferInput, spec: ModelSpec) -> None:
        check_input(spec, msg.sample_count, [info.size_bytes for info in msg.ciphertexts])
        self.input_id = msg.input_id
        self.sample_count = msg.sample_count
        self.sizes = [info.size_bytes for info in msg.ciphertexts]
        self.chunks: list[list[bytes]] = [[] for _ in self.sizes]  # joined once complete: one copy, not two
        self.received = 0  # bytes of the current ciphertext
        self.index = 0

    def add(self, chunk: pb.CiphertextChunk) -> bool:
        """Keeps the chunk; whether the input is complete."""
        if chunk.input_id != self.input_id or chunk.ciphertext_index != self.index or chunk.offset != self.received:
            raise _out_of_order(f"expected input {self.input_id}, ciphertext {self.index}, offset {self.received}",
                                "chunk")
        if not 1 <= len(chunk.data) <= MAX_CHUNK_BYTES or self.received + len(chunk.data) > self.sizes[self.index]:
            raise InvalidArgument.single("chunk.data", "1 byte .. 1 MiB, within the declared size", "CHUNK_TOO_LARGE")
        self.chunks[self.index].append(chunk.data)
        self.received += len(chunk.data)
        if self.received == self.sizes[self.index]:
            self.index, self.received = self.index + 1, 0
        return self.index == len(self.sizes)

    def ciphertexts(self) -> list[bytes]:
        return [b"".join(parts) for parts in self.chunks]


JOB_STATES = {state: getattr(pb, f"JOB_STATE_{state.value}") for state in JobState}


def job_to_proto(job: Job) -> pb.Job:
    msg = pb.Job(name=job.name, session=f"sessions/{job.session_id}", model=f"models/{job.model_id}", owner=job.owner,
                 state=JOB_STATES[job.state], input_count=job.input_count, completed_input_count=job.completed,
                 input_bytes=job.input_bytes, failure_message=job.failure_message, attempt_count=job.attempts,
                 create_time=_ts_us(job.create_us))
    if job.failure_reason:
        msg.failure_reason = getattr(pb, f"ERROR_REASON_{job.failure_reason}", pb.ERROR_REASON_UNSPECIFIED)
    for field, micros in (("start_time", job.start_us), ("end_time", job.end_us), ("expire_time", job.expire_us)):
        if micros is not None:
            getattr(msg, field).CopyFrom(_ts_us(micros))
    return msg


def _output_messages(input_id: int, sample_count: int, outputs: Sequence[bytes], seconds: float,
                     evaluator: str) -> Iterator[tuple[str, Any]]:
    """Infer's output framing, shared by Infer and GetJobResult: a header, then each ciphertext in 1 MiB chunks."""
    duration = Duration()
    duration.FromNanoseconds(int(seconds * 1e9))
    yield "output", pb.InferOutput(input_id=input_id, sample_count=sample_count, evaluation_duration=duration,
                                   ciphertexts=[pb.CiphertextInfo(size_bytes=len(o)) for o in outputs],
                                   evaluator=evaluator)
    for index, output in enumerate(outputs):
        for offset in range(0, len(output), MAX_CHUNK_BYTES):
            yield "chunk", pb.CiphertextChunk(input_id=input_id, ciphertext_index=index, offset=offset,
                                              data=output[offset:offset + MAX_CHUNK_BYTES])


async def _job_inputs(requests: AsyncIterator[pb.SubmitJobRequest], submission: Submission) -> None:
    """Reads a SubmitJob stream's inputs into the submission: each declaration is checked before its bytes."""
    current: _Input | None = None
    async for request in requests:
        payload = request.WhichOneof("payload")
        if payload == "input":
            if current is not None:
                raise _out_of_order("the previous input is incomplete", "input")
            submission.declare(InputInfo(request.input.input_id, request.input.sample_count,
                                         tuple(c.size_bytes for c in request.input.ciphertexts)))
            current = _Input(request.input, submission.spec)
        elif payload == "chunk":
            if current is None:
                raise _out_of_order("a chunk before its input header", "chunk")
            if current.add(request.chunk):
                await submission.write(tuple(current.ciphertexts()))
                current = None
        else:
            raise _out_of_order("start may only be the first message")
    if current is not None:
        raise _out_of_order("the stream ended inside an input (truncated)", "chunk")


class JobServicer:
    """The job methods of FHEInference (mixed into FheServicer)."""

    _jobs: JobService
    _authorizer: Authorizer

    async def SubmitJob(self, request_iterator: AsyncIterator[pb.SubmitJobRequest],
                        context: CallContext) -> pb.SubmitJobResponse:
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        if first is None or first.WhichOneof("payload") != "start":
            raise _out_of_order("the first message must be start")
        start = first.start
        try:
            session_id = _resource_id(start.session, "sessions", "start.session")
        except InvalidArgument as error:
            await self._jobs.refused("SubmitJob", start.session, error)
            raise
        request = JobRequest(session_id, start.input_count, start.request_id)

        async def receive(submission: Submission) -> None:
            await _job_inputs(requests, submission)

        job = await self._jobs.submit(current_principal.get(), request, receive, self._authorizer.require)
        return pb.SubmitJobResponse(job=job_to_proto(job))

    async def GetJob(self, request: pb.GetJobRequest, context: CallContext) -> pb.GetJobResponse:
        job = await self._jobs.get(_resource_id(request.name, "jobs", "name"), current_principal.get())
        self._authorizer.require(f"models/{job.model_id}")
        return pb.GetJobResponse(job=job_to_proto(job))

    async def ListJobs(self, request: pb.ListJobsRequest, context: CallContext) -> pb.ListJobsResponse:
        limit, after = name_page(request)
        states = {number: state for state, number in JOB_STATES.items()}
        if request.state and request.state not in states:
            raise InvalidArgument.single("state", "unknown job state")
        state = states.get(request.state)
        owner = current_principal.get()

        async def fetch(start: str | None, count: int) -> list[pb.Job]:
            return [job_to_proto(j) for j in await self._jobs.page(owner, start or "", count, state)]

        page, token = await visible_page(fetch, after, limit, lambda j: j.name.removeprefix("jobs/"),
                                         self._authorizer.visible)
        return pb.ListJobsResponse(jobs=page, next_page_token=token)

    async def GetJobResult(self, request: pb.GetJobResultRequest,
                           context: CallContext) -> AsyncIterator[pb.GetJobResultResponse]:
        job_id = _resource_id(request.name, "jobs", "name")
        async for output in self._jobs.outputs(job_id, current_principal.get(), self._authorizer.require):
            for field, message in _output_messages(output.input_id, output.sample_count, output.ciphertexts,
                                                   output.seconds, output.evaluator):
                yield pb.GetJobResultResponse(**{field: message})

    async def CancelJob(self, request: pb.CancelJobRequest, context: CallContext) -> pb.CancelJobResponse:
        job = await self._jobs.cancel(_resource_id(request.name, "jobs", "name"), current_principal.get(),
                                      self._authorizer.require)
        return pb.CancelJobResponse(job=job_to_proto(job))


class FheServicer(JobServicer, fhe_pb2_grpc.FHEInferenceServicer):
    def __init__(self, service: FheService, jobs: JobService, authorizer: Authorizer) -> None:
        self._service = service
        self._jobs = jobs
        self._authorizer = authorizer

    async def ListModels(self, request: pb.ListModelsRequest,
                         context: CallContext) -> pb.ListModelsResponse:
        limit, after = name_page(request)
        kind = reverse(KINDS).get(request.kind) if request.kind else None

        async def fetch(start: str | None, count: int) -> list[pb.Model]:
            return [model_to_proto(m) for m in self._service.registry.list(start or "", count, kind)]

        page, token = await visible_page(fetch, after, limit, lambda m: m.name.removeprefix("models/"),
                                         self._authorizer.visible)
        return pb.ListModelsResponse(models=page, next_page_token=token)

    async def GetModel(self, request: pb.GetModelRequest, context: CallContext) -> pb.GetModelResponse:
        model_id = _resource_id(request.name, "models", "name")
        return pb.GetModelResponse(model=model_to_proto(await self._service.model(model_id)))

    async def CreateModel(self, request: pb.CreateModelRequest,
                          context: CallContext) -> pb.CreateModelResponse:
        return pb.CreateModelResponse(model=model_to_proto(
            await self._service.create_model(request.model_id, request.model_file)))

    async def DeleteModel(self, request: pb.DeleteModelRequest,
                          context: CallContext) -> pb.DeleteModelResponse:
        model_id = _resource_id(request.name, "models", "name")
        await self._service.delete_model(model_id)
        return pb.DeleteModelResponse()

    async def RegisterKeys(self, request_iterator: AsyncIterator[pb.RegisterKeysRequest],
                           context: CallContext) -> pb.RegisterKeysResponse:
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("payload") != "header":
            raise _out_of_order("the first message must be the header")
        upload = _upload(first.header)
        session = await self._service.register_keys(current_principal.get(), upload, _key_chunks(request_iterator))
        return pb.RegisterKeysResponse(session=session_to_proto(session))

    async def GetSession(self, request: pb.GetSessionRequest,
                         context: CallContext) -> pb.GetSessionResponse:
        session = await self._service.session(_resource_id(request.name, "sessions", "name"), current_principal.get())
        self._authorizer.require(f"models/{session.model_id}")
        return pb.GetSessionResponse(session=session_to_proto(session))

    async def DeleteSession(self, request: pb.DeleteSessionRequest,
                            context: CallContext) -> pb.DeleteSessionResponse:
        await self._service.delete_session(_resource_id(request.name, "sessions", "name"), current_principal.get(),
                                           self._authorizer.require)
        return pb.DeleteSessionResponse()

    async def Infer(self, request_iterator: AsyncIterator[pb.InferRequest],
                    context: CallContext) -> AsyncIterator[pb.InferResponse]:
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        if first is None or first.WhichOneof("payload") != "start":
            raise _out_of_order("the first message must be start")
        session_id = _resource_id(first.start.session, "sessions", "start.session")
        session, spec = await self._service.open_inference(session_id, current_principal.get())
        self._authorizer.require(f"models/{session.model_id}")  # a session outlives a narrowed policy
        # Three stages: the reader receives input n + 2 while the evaluator has queued input n + 1 on the worker
        # behind input n, whose result is audited and sent here once it is ready. The worker always has its next
        # input at hand, so it waits neither for the network, nor for the audit log, nor for this process.
        inputs: asyncio.Queue[Any] = asyncio.Queue(maxsize=1)
        evaluations: asyncio.Queue[Any] = asyncio.Queue(maxsize=1)
        tasks = (asyncio.create_task(self._read_inputs(requests, spec, inputs)),
                 asyncio.create_task(self._evaluate_inputs(session, spec, inputs, evaluations)))
        try:
            while True:
                item = await evaluations.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                received, current, evaluation = item
                outputs, seconds, evaluator = await self._service.release(current, spec, received.sample_count,
                                                                          evaluation)
                for field, message in _output_messages(received.input_id, received.sample_count, outputs, seconds,
                                                       evaluator):
                    yield pb.InferResponse(**{field: message})
        finally:  # a failed input or a client that left: the inputs queued behind are withdrawn, never released
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            while not evaluations.empty():
                item = evaluations.get_nowait()
                if isinstance(item, tuple):
                    item[2].cancel()

    async def _evaluate_inputs(self, session: Session, spec: ModelSpec, inputs: asyncio.Queue[Any],
                               evaluations: asyncio.Queue[Any]) -> None:
        """Queues each received input on the worker as soon as it is complete, in order, without waiting for the
        previous one's result; passes the evaluations on in order."""
        try:
            while True:
                item = await inputs.get()
                if item is None or isinstance(item, BaseException):
                    await evaluations.put(item)
                    return
                current, evaluation = await self._service.start_evaluation(session, spec, item.ciphertexts())
                try:
                    await evaluations.put((item, current, evaluation))
                except BaseException:
                    evaluation.cancel()
                    raise
        except Exception as exc:
            await evaluations.put(exc)

    @staticmethod
    async def _read_inputs(requests: AsyncIterator[pb.InferRequest], spec: ModelSpec, inputs: asyncio.Queue[Any]) \
            -> None:
        seen: set[int] = set()
        current: _Input | None = None
        try:
            async for request in requests:
                payload = request.WhichOneof("payload")
                if payload == "input":
                    if current is not None:
                        raise _out_of_order("the previous input is incomplete", "input")
                    if request.input.input_id in seen:
                        raise _out_of_order("input_id repeated", "input.input_id")
                    if len(seen) >= spec.limits.max_inputs_per_stream:
                        raise InvalidArgument.single("input", f"at most {spec.limits.max_inputs_per_stream} inputs "
                                                     "per stream", "INPUT_SHAPE_MISMATCH")
                    seen.add(request.input.input_id)
                    current = _Input(request.input, spec)
                elif payload == "chunk":
                    if current is None:
                        raise _out_of_order("a chunk before its input header", "chunk")
                    if current.add(request.chunk):
                        await inputs.put(current)
                        current = None
                else:
                    raise _out_of_order("start may only be the first message")
            if current is not None:
                raise _out_of_order("the stream ended inside an input (truncated)", "chunk")
            await inputs.put(None)
        except Exception as exc:
            await inputs.put(exc)

