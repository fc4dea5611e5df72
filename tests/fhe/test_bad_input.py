"""Bad input gets a clear canonical error and changes nothing: wrong parameters, keys or ciphertexts from
another context or key pair, truncated and corrupted bytes, oversize declarations, unknown sessions. The
server process survives bytes that crash OpenFHE (they only kill a sandbox worker)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np
import openfhe
import pytest

from privmesh.fhe.client import ClientKeys, collect_outputs, infer, register_keys
from privmesh.fhe.model import load_model
from privmesh.fhe.v1 import fhe_pb2 as pb
from privmesh.runtime.errors import ErrorDetails, read_error
from tests.fhe.conftest import Fhe, crashing, keys_for, small_model_files

pytestmark = pytest.mark.insecure_params
MIB = 1024 * 1024

async def _stream(messages: list[Any]) -> AsyncIterator[Any]:
    for message in messages:
        yield message

def _header(keys: ClientKeys, parts: list[tuple[int, bytes]], **overrides: Any) -> pb.RegisterKeysHeader:
    header = pb.RegisterKeysHeader(model=keys.model.name, parameters=keys.model.parameters, key_parts=[
        pb.KeyPartInfo(kind=k, size_bytes=len(d), sha256=hashlib.sha256(d).digest()) for k, d in parts])
    for name, value in overrides.items():
        if name == "parameters":
            header.parameters.CopyFrom(value)
        else:
            setattr(header, name, value)
    return header

def _chunks(parts: list[tuple[int, bytes]]) -> list[pb.RegisterKeysRequest]:
    return [pb.RegisterKeysRequest(chunk=pb.KeyChunk(kind=k, offset=o, data=d[o:o + MIB]))
            for k, d in parts for o in range(0, len(d), MIB)]

async def _refused(call: Any) -> ErrorDetails:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return read_error(caught.value)

async def _register_refused(fhe: Fhe, header: pb.RegisterKeysHeader, chunks: list[Any]) -> ErrorDetails:
    error = await _refused(fhe.bob.RegisterKeys(_stream([pb.RegisterKeysRequest(header=header), *chunks])))
    assert fhe.sessions() == [] and fhe.key_dirs() == [".incoming"]
    assert not any((fhe.key_dir / ".incoming").iterdir())  # nothing of the upload is kept
    assert "RegisterKeys" not in [row[0] for row in fhe.audit()]
    return error

def _replace(parts: list[tuple[int, bytes]], kind: int, data: bytes) -> list[tuple[int, bytes]]:
    return [(k, data if k == kind else d) for k, d in parts]

async def test_register_keys_refuses_bad_uploads(fhe: Fhe) -> None:
    keys = await keys_for(fhe.bob, "logistic-5")
    parts = keys.key_parts()
    rotation = dict(parts)[pb.KEY_PART_KIND_ROTATION_KEYS]
    cases: list[tuple[str, pb.RegisterKeysHeader, list[Any], grpc.StatusCode, str]] = []
    wrong = pb.CkksParameters()
    wrong.CopyFrom(keys.model.parameters)
    wrong.ring_dimension = 4096
    cases.append(("parameters", _header(keys, parts, parameters=wrong), _chunks(parts),
                  grpc.StatusCode.FAILED_PRECONDITION, "PARAMETERS_MISMATCH"))
    huge = _header(keys, parts)
    huge.key_parts[3].size_bytes = keys.model.limits.max_total_key_bytes
    cases.append(("too large", huge, [], grpc.StatusCode.INVALID_ARGUMENT, "KEYS_TOO_LARGE"))
    without_rotation = parts[:3]
    cases.append(("incomplete", _header(keys, without_rotation), _chunks(without_rotation),
                  grpc.StatusCode.INVALID_ARGUMENT, "KEYS_INCOMPLETE"))
    cases.append(("truncated", _header(keys, parts), _chunks(parts)[:-1], grpc.StatusCode.INVALID_ARGUMENT,
                  "STREAM_OUT_OF_ORDER"))
    overflow = _chunks(parts)
    overflow[0].chunk.data += b"x"
    cases.append(("overflow", _header(keys, parts), overflow, grpc.StatusCode.INVALID_ARGUMENT, "CHUNK_TOO_LARGE"))
    shuffled = _chunks(parts)
    shuffled[0].chunk.offset = 5
    cases.append(("offset", _header(keys, parts), shuffled, grpc.StatusCode.INVALID_ARGUMENT, "STREAM_OUT_OF_ORDER"))
    tampered = _replace(parts, pb.KEY_PART_KIND_ROTATION_KEYS, rotation[:-1] + bytes([rotation[-1] ^ 1]))
    cases.append(("digest", _header(keys, parts), _chunks(tampered), grpc.StatusCode.INVALID_ARGUMENT,
                  "KEY_DIGEST_MISMATCH"))
    secret = _replace(parts, pb.KEY_PART_KIND_PUBLIC_KEY,
                      bytes(openfhe.Serialize(keys.key_pair.secretKey, openfhe.BINARY)))
    cases.append(("secret key", _header(keys, secret), _chunks(secret), grpc.StatusCode.INVALID_ARGUMENT,
                  "KEY_TYPE_MISMATCH"))
    garbage = _replace(parts, pb.KEY_PART_KIND_CRYPTO_CONTEXT, os.urandom(600))
    cases.append(("garbage", _header(keys, garbage), _chunks(garbage), grpc.StatusCode.INVALID_ARGUMENT,
                  "KEY_MALFORMED"))
    other_model = (await keys_for(fhe.bob, "logistic-3")).key_parts()  # depth 4, not 5
    header = _header(keys, other_model)
    header.ClearField("parameters")
    cases.append(("another model's context", header, _chunks(other_model), grpc.StatusCode.FAILED_PRECONDITION,
                  "PARAMETERS_MISMATCH"))
    stranger = ClientKeys.generate(keys.model).key_parts()
    mixed = _replace(parts, pb.KEY_PART_KIND_RELINEARIZATION_KEY, dict(stranger)[pb.KEY_PART_KIND_RELINEARIZATION_KEY])
    cases.append(("another key pair", _header(keys, mixed), _chunks(mixed), grpc.StatusCode.INVALID_ARGUMENT,
                  "KEY_CONTEXT_MISMATCH"))
    for label, header, chunks, code, reason in cases:
        error = await _register_refused(fhe, header, chunks)
        assert (error.code, error.reason, error.domain) == (code, reason, "fhe.privmesh.dev"), label
    assert (await _register_refused(fhe, _header(keys, parts, parameters=wrong), [])).metadata == {
        "fields": "ring_dimension"}
    assert (await _register_refused(fhe, _header(keys, without_rotation), [])).metadata == {
        "missing": "rotation_keys"}
    error = await _refused(fhe.bob.RegisterKeys(_stream(_chunks(parts))))
    assert error.reason == "STREAM_OUT_OF_ORDER" and fhe.sessions() == []

async def test_a_key_pair_backs_one_session_only(fhe: Fhe) -> None:
    keys = await keys_for(fhe.bob, "linear")
    await register_keys(fhe.bob, keys)
    error = await _refused(register_keys(fhe.stub, keys))  # alice replaying bob's public keys
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "KEY_CONTEXT_MISMATCH")
    assert len(fhe.sessions()) == 1 and len(fhe.key_dirs()) == 2

def _input(ciphertext: bytes, declared: int | None = None, count: int = 1, input_id: int = 0) \
        -> list[pb.InferRequest]:
    size = len(ciphertext) if declared is None else declared
    return [pb.InferRequest(input=pb.InferInput(input_id=input_id, sample_count=count,
                                                ciphertexts=[pb.CiphertextInfo(size_bytes=size)])),
            *[pb.InferRequest(chunk=pb.CiphertextChunk(input_id=input_id, offset=o, data=ciphertext[o:o + MIB]))
              for o in range(0, len(ciphertext), MIB)]]

async def _infer_refused(fhe: Fhe, session: str, messages: list[Any]) -> ErrorDetails:
    start = pb.InferRequest(start=pb.InferStart(session=session))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect_outputs(fhe.bob.Infer(_stream([start, *messages])))
    return read_error(caught.value)

async def test_infer_refuses_bad_ciphertexts_and_survives_corruption(fhe: Fhe) -> None:
    keys = await keys_for(fhe.bob, "logistic-5")
    session = (await register_keys(fhe.bob, keys)).name
    good = keys.encrypt(np.full((2, 6), 0.1))
    stranger = ClientKeys.generate(keys.model).encrypt(np.full((2, 6), 0.1))
    linear = await keys_for(fhe.bob, "linear")
    other_context = linear.encrypt(np.full((2, 6), 0.1))
    used = keys.context.Rescale(keys.context.EvalMult(openfhe.DeserializeCiphertextString(good, openfhe.BINARY), 2.0))
    not_fresh = bytes(openfhe.Serialize(used, openfhe.BINARY))
    limit = keys.model.limits.max_ciphertext_bytes
    cases: list[tuple[str, list[Any], str]] = [
        ("another key pair", _input(stranger), "CIPHERTEXT_CONTEXT_MISMATCH"),
        ("another context", _input(other_context), "CIPHERTEXT_CONTEXT_MISMATCH"),
        ("not fresh", _input(not_fresh), "CIPHERTEXT_CONTEXT_MISMATCH"),
        ("truncated bytes", _input(good[:len(good) // 2]), "CIPHERTEXT_MALFORMED"),
        ("truncated stream", _input(good)[:-1], "STREAM_OUT_OF_ORDER"),
        ("too large", _input(b"x", declared=limit + 1), "CIPHERTEXT_TOO_LARGE"),
        ("no samples", _input(good, count=0), "INPUT_SHAPE_MISMATCH"),
        ("too many samples", _input(good, count=keys.packing.samples_per_ciphertext + 1), "INPUT_SHAPE_MISMATCH"),
        ("chunk first", _input(good)[1:], "STREAM_OUT_OF_ORDER"),
    ]
    for label, messages, reason in cases:
        error = await _infer_refused(fhe, session, messages)
        assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason), label
    rng = np.random.default_rng(5)
    for _ in range(3):  # flipped bits: refused, or the sandbox dies; never the server
        corrupted = bytearray(good)
        for index in rng.integers(0, 400, 3):
            corrupted[int(index)] ^= 1 << int(rng.integers(0, 8))
        error = await _infer_refused(fhe, session, _input(bytes(corrupted)))
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT and error.reason.startswith("CIPHERTEXT_")
    assert [row[2] for row in fhe.sessions()] == [0]
    assert "SUCCESS" not in [row[2] for row in fhe.audit() if row[0] == "Infer"]
    scores = await infer(fhe.bob, session, keys, np.full((2, 6), 0.1))  # still serving, same session
    assert scores.shape == (2, 1) and [row[2] for row in fhe.sessions()] == [1]

async def test_an_input_that_crashes_the_worker_fails_only_its_own_stream(fhe: Fhe) -> None:
    keys = await keys_for(fhe.bob, "linear")
    session = (await register_keys(fhe.bob, keys)).name
    other_keys = await keys_for(fhe.bob, "linear")
    other = (await register_keys(fhe.bob, other_keys)).name
    good = keys.encrypt(np.full((2, 6), 0.1))
    messages = [pb.InferRequest(start=pb.InferStart(session=session)), *_input(good, count=2),
                *_input(crashing(good), count=2, input_id=1), *_input(good, count=2, input_id=2)]

    async def crashing_stream() -> tuple[list[int], ErrorDetails]:
        released = []
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for reply in fhe.bob.Infer(_stream(messages)):
                if reply.WhichOneof("payload") == "output":
                    released.append(reply.output.input_id)
        return released, read_error(caught.value)

    raw = np.random.default_rng(3).uniform(-1, 1, (2 * other_keys.packing.samples_per_ciphertext + 1, 6))
    (released, error), scores = await asyncio.gather(crashing_stream(), infer(fhe.bob, other, other_keys, raw))
    assert released == [0]  # the input before it was served; the one after it never released
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "CIPHERTEXT_MALFORMED")
    assert "restarted" in error.message  # it really killed the worker
    expected = load_model("linear", small_model_files()["linear"]).predict(raw)
    assert np.max(np.abs(scores - expected)) < other_keys.model.tolerance
    counts = {f"sessions/{session_id}": count for session_id, _, count in fhe.sessions()}
    assert counts == {session: 1, other: 3}
    outcomes = [outcome for op, resource, outcome, _ in fhe.audit() if op == "Infer" and resource == session]
    assert outcomes == ["SUCCESS", "FAILURE"]


async def test_unknown_session_and_protocol_errors(fhe: Fhe) -> None:
    for name, reason in (("sessions/0123456789abcdef", "SESSION_NOT_FOUND"), ("models/x", "INVALID_FIELD")):
        error = await _infer_refused(fhe, name, [])
        assert (error.reason, error.code) == (reason, grpc.StatusCode.NOT_FOUND if reason.startswith("SESSION")
                                              else grpc.StatusCode.INVALID_ARGUMENT)
    error = await _refused(collect_outputs(fhe.bob.Infer(_stream([pb.InferRequest(
        input=pb.InferInput(input_id=0))]))))
    assert error.reason == "STREAM_OUT_OF_ORDER"
    error = await _refused(fhe.bob.GetSession(pb.GetSessionRequest(name="sessions/feed")))
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND")
    error = await _refused(fhe.bob.GetModel(pb.GetModelRequest(name="nope")))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and error.violations[0].field == "name"
    assert fhe.sessions() == []

