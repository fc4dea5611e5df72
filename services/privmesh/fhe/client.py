"""The client SDK of fhe-inference: keys that never leave the client, key upload, encrypted inference.

    model = (await stub.GetModel(pb.GetModelRequest(name="models/risk"))).model
    keys = ClientKeys.generate(model)                # crypto context from the model's parameters; key pair
    session = await register_keys(stub, model, keys)  # context, public key, evaluation keys, in 1 MiB chunks
    scores = await infer(stub, session.name, keys, raw_features)   # encrypt, evaluate remotely, decrypt here

Long batches go through an asynchronous job instead, which survives the client going away:

    job = await submit_job(stub, session.name, ciphertexts)        # (ciphertext, sample count) pairs, streamed
    job = await wait_for_job(stub, job.name)                       # a progress bar until it ends
    outputs = await job_result(stub, job.name)                     # the encrypted outputs, in input order

The secret key lives only in ClientKeys; nothing here serializes it.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import openfhe
from google.protobuf.duration_pb2 import Duration
from numpy.typing import NDArray
from rich.progress import Progress

from privmesh.fhe.circuit import Packing
from privmesh.fhe.convert import params_from_proto
from privmesh.fhe.inference_service import MAX_CHUNK_BYTES
from privmesh.fhe.params import create_context
from privmesh.fhe.v1 import fhe_pb2 as pb
from privmesh.fhe.v1 import fhe_pb2_grpc


def packing_of(model: pb.Model) -> Packing:
    return Packing(model.input_packing.features_per_sample, model.output_packing.values_per_sample,
                   model.input_packing.stride, model.parameters.batch_size, model.input_packing.samples_per_ciphertext)


@dataclass
class ClientKeys:
    """A client's crypto context and key pair for one model."""

    model: pb.Model
    context: openfhe.CryptoContext
    key_pair: openfhe.KeyPair

    @classmethod
    def generate(cls, model: pb.Model) -> ClientKeys:
        context = create_context(params_from_proto(model.parameters))
        key_pair = context.KeyGen()
        if pb.KEY_PART_KIND_RELINEARIZATION_KEY in model.required_key_parts:
            context.EvalMultKeyGen(key_pair.secretKey)
        if pb.KEY_PART_KIND_ROTATION_KEYS in model.required_key_parts:
            context.EvalRotateKeyGen(key_pair.secretKey, list(model.parameters.rotation_indices))
        return cls(model, context, key_pair)

    @property
    def packing(self) -> Packing:
        return packing_of(self.model)

    def key_parts(self) -> list[tuple[pb.KeyPartKind, bytes]]:
        """The parts RegisterKeys needs, serialized in OpenFHE's BINARY format (never the secret key)."""
        tag = self.key_pair.publicKey.GetKeyTag()
        serialized = {
            pb.KEY_PART_KIND_CRYPTO_CONTEXT: lambda: openfhe.Serialize(self.context, openfhe.BINARY),
            pb.KEY_PART_KIND_PUBLIC_KEY: lambda: openfhe.Serialize(self.key_pair.publicKey, openfhe.BINARY),
            pb.KEY_PART_KIND_RELINEARIZATION_KEY: lambda: openfhe.SerializeEvalMultKeyString(openfhe.BINARY, tag),
            pb.KEY_PART_KIND_ROTATION_KEYS: lambda: openfhe.SerializeEvalAutomorphismKeyString(openfhe.BINARY, tag),
        }
        return [(kind, serialized[kind]()) for kind in self.model.required_key_parts]

    def preprocess(self, raw: NDArray[np.float64]) -> NDArray[np.float64]:
        """(x - offset) / scale per feature, as the model declares."""
        offsets = np.array([f.offset for f in self.model.features], dtype=np.float64)
        scales = np.array([f.scale or 1.0 for f in self.model.features], dtype=np.float64)
        return (np.asarray(raw, dtype=np.float64) - offsets) / scales

    def encrypt(self, samples: NDArray[np.float64]) -> bytes:
        """One input: preprocessed samples (at most samples_per_ciphertext) packed and encrypted."""
        plaintext = self.context.MakeCKKSPackedPlaintext([float(v) for v in self.packing.pack(samples)])
        return bytes(openfhe.Serialize(self.context.Encrypt(self.key_pair.publicKey, plaintext), openfhe.BINARY))

    def decrypt(self, output: bytes, count: int) -> NDArray[np.float64]:
        """The model's outputs (count x values_per_sample) of one output ciphertext."""
        ciphertext = openfhe.DeserializeCiphertextString(output, openfhe.BINARY)
        plaintext = self.context.Decrypt(self.key_pair.secretKey, ciphertext)
        plaintext.SetLength(self.packing.slots)
        return self.packing.unpack(plaintext.GetRealPackedValue(), count)


FINISHED = (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED)


class JobFailed(Exception):
    """A job ended without outputs (failed or cancelled); `job` says why."""

    def __init__(self, job: pb.Job) -> None:
        super().__init__(f"{job.name} {pb.JobState.Name(job.state)}: {pb.ErrorReason.Name(job.failure_reason)} "
                         f"{job.failure_message}")
        self.job = job


def _chunks(data: bytes) -> list[bytes]:
    return [data[offset:offset + MAX_CHUNK_BYTES] for offset in range(0, len(data), MAX_CHUNK_BYTES)]


async def register_keys(stub: fhe_pb2_grpc.FHEInferenceStub, keys: ClientKeys, ttl: timedelta | None = None,
                        request_id: str | None = None, timeout: float = 600.0) -> pb.Session:
    """Uploads the context, public key and evaluation keys; returns the new session."""
    parts = await asyncio.to_thread(keys.key_parts)
    header = pb.RegisterKeysHeader(
        model=keys.model.name, parameters=keys.model.parameters, request_id=request_id or str(uuid.uuid4()),
        key_parts=[pb.KeyPartInfo(kind=kind, size_bytes=len(data), sha256=hashlib.sha256(data).digest())
                   for kind, data in parts])
    if ttl is not None:
        header.ttl.CopyFrom(Duration(seconds=int(ttl.total_seconds())))

    async def requests() -> AsyncIterator[pb.RegisterKeysRequest]:
        yield pb.RegisterKeysRequest(header=header)
        for kind, data in parts:
            for index, piece in enumerate(_chunks(data)):
                yield pb.RegisterKeysRequest(chunk=pb.KeyChunk(kind=kind, offset=index * MAX_CHUNK_BYTES, data=piece))

    reply: pb.RegisterKeysResponse = await stub.RegisterKeys(requests(), timeout=timeout)
    return reply.session


async def infer_encrypted(stub: fhe_pb2_grpc.FHEInferenceStub, session: str, inputs: Sequence[tuple[bytes, int]],
                          timeout: float = 600.0) -> list[bytes]:
    """Streams encrypted inputs (ciphertext, sample count) through Infer; the encrypted outputs, in order."""

    async def requests() -> AsyncIterator[pb.InferRequest]:
        yield pb.InferRequest(start=pb.InferStart(session=session))
        for input_id, (ciphertext, count) in enumerate(inputs):
            for message in input_messages(input_id, ciphertext, count):
                yield pb.InferRequest(input=message) if isinstance(message, pb.InferInput) else \
                    pb.InferRequest(chunk=message)

    return await collect_outputs(stub.Infer(requests(), timeout=timeout))


async def collect_outputs(call: AsyncIterator[pb.InferResponse] | AsyncIterator[pb.GetJobResultResponse]) \
        -> list[bytes]:
    """Reassembles the output ciphertexts of an Infer or GetJobResult call (one per input, in order)."""
    outputs: list[bytes] = []
    current = bytearray()
    async for reply in call:
        if reply.WhichOneof("payload") == "output":
            if current:
                outputs.append(bytes(current))
            current = bytearray()
        else:
            current += reply.chunk.data
    if current:
        outputs.append(bytes(current))
    return outputs


def input_messages(input_id: int, ciphertext: bytes, count: int) -> Iterator[pb.InferInput | pb.CiphertextChunk]:
    """Infer's input framing (SubmitJob uses the same): the input's header, then its ciphertext in 1 MiB chunks."""
    yield pb.InferInput(input_id=input_id, sample_count=count,
                        ciphertexts=[pb.CiphertextInfo(size_bytes=len(ciphertext))])
    for index, piece in enumerate(_chunks(ciphertext)):
        yield pb.CiphertextChunk(input_id=input_id, offset=index * MAX_CHUNK_BYTES, data=piece)


async def submit_job(stub: fhe_pb2_grpc.FHEInferenceStub, session: str, inputs: Iterable[tuple[bytes, int]],
                     count: int | None = None, request_id: str | None = None, timeout: float = 600.0) -> pb.Job:
    """Submits encrypted inputs (ciphertext, sample count) as an asynchronous job; they are read from `inputs` as
    they are sent, so a generator keeps one input in memory. `count` is the number of inputs (taken from `inputs`
    when it has a length). Retries with the same request_id return the same job."""
    if count is None:
        inputs = inputs if isinstance(inputs, Sequence) else list(inputs)
        count = len(inputs)
    start = pb.JobStart(session=session, input_count=count, request_id=request_id or str(uuid.uuid4()))

    async def requests() -> AsyncIterator[pb.SubmitJobRequest]:
        for request in job_requests(start, inputs):
            yield request

    reply: pb.SubmitJobResponse = await stub.SubmitJob(requests(), timeout=timeout)
    return reply.job


def job_requests(start: pb.JobStart, inputs: Iterable[tuple[bytes, int]]) -> Iterator[pb.SubmitJobRequest]:
    """SubmitJob's request stream (also the serverless job function's input objects): the start, then each input
    (ciphertext, sample count) in Infer's input framing."""
    yield pb.SubmitJobRequest(start=start)
    for input_id, (ciphertext, samples) in enumerate(inputs):
        for message in input_messages(input_id, ciphertext, samples):
            yield pb.SubmitJobRequest(input=message) if isinstance(message, pb.InferInput) else \
                pb.SubmitJobRequest(chunk=message)


async def wait_for_job(stub: fhe_pb2_grpc.FHEInferenceStub, name: str, poll_seconds: float = 1.0,
                       progress: bool = True, timeout: float | None = None) -> pb.Job:
    """Polls a job until it ends, showing its progress (inputs evaluated) as a bar on the terminal; returns the
    succeeded job, raises JobFailed for a failed or cancelled one and TimeoutError past `timeout` seconds."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(name, total=None)
        while True:
            reply: pb.GetJobResponse = await stub.GetJob(pb.GetJobRequest(name=name))
            job = reply.job
            bar.update(task, total=job.input_count, completed=job.completed_input_count,
                       description=f"{name} {pb.JobState.Name(job.state).removeprefix('JOB_STATE_').lower()}")
            if job.state in FINISHED:
                if job.state != pb.JOB_STATE_SUCCEEDED:
                    raise JobFailed(job)
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{name} did not finish in {timeout} s")
            await asyncio.sleep(poll_seconds)


async def job_result(stub: fhe_pb2_grpc.FHEInferenceStub, name: str, timeout: float = 600.0) -> list[bytes]:
    """The encrypted outputs of a succeeded job, one per input, in input order."""
    return await collect_outputs(stub.GetJobResult(pb.GetJobResultRequest(name=name), timeout=timeout))


async def infer_job(stub: fhe_pb2_grpc.FHEInferenceStub, session: str, keys: ClientKeys, raw: NDArray[np.float64],
                    progress: bool = True, poll_seconds: float = 1.0) -> NDArray[np.float64]:
    """`infer` through an asynchronous job: encrypts the batches, submits them, waits with a progress bar, fetches
    and decrypts the outputs (samples x values_per_sample)."""
    samples = keys.preprocess(np.atleast_2d(raw))
    per = keys.packing.samples_per_ciphertext
    batches = [samples[i:i + per] for i in range(0, len(samples), per)]
    ciphertexts = [(await asyncio.to_thread(keys.encrypt, batch), len(batch)) for batch in batches]
    job = await submit_job(stub, session, ciphertexts)
    await wait_for_job(stub, job.name, poll_seconds, progress)
    outputs = await job_result(stub, job.name)
    decrypted = [await asyncio.to_thread(keys.decrypt, out, count) for out, (_, count) in zip(outputs, ciphertexts,
                                                                                             strict=True)]
    return np.vstack(decrypted)


async def infer(stub: fhe_pb2_grpc.FHEInferenceStub, session: str, keys: ClientKeys, raw: NDArray[np.float64],
                timeout: float = 600.0) -> NDArray[np.float64]:
    """Encrypts raw feature vectors (samples x features) in batches, has the model evaluated on the server, and
    decrypts the outputs locally (samples x values_per_sample)."""
    samples = keys.preprocess(np.atleast_2d(raw))
    per = keys.packing.samples_per_ciphertext
    batches = [samples[i:i + per] for i in range(0, len(samples), per)]
    ciphertexts = [(await asyncio.to_thread(keys.encrypt, batch), len(batch)) for batch in batches]
    outputs = await infer_encrypted(stub, session, ciphertexts, timeout)
    decrypted = [await asyncio.to_thread(keys.decrypt, out, count) for out, (_, count) in zip(outputs, ciphertexts,
                                                                                             strict=True)]
    return np.vstack(decrypted)
