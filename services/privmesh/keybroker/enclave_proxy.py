"""The parent-side proxy for an enclave's key requests (the `challenge` and `data_key` ops of
privmesh.sdk.enclave.vsock): it fetches a challenge from the attestation-verifier and asks the key broker for a
data key with the enclave's attestation document as recipient, under the parent's own mesh identity.

The parent never sees a plaintext data key: the broker answers only with ciphertext for the enclave's
public key. `data_key` with a `ciphertext_blob` asks the broker to Decrypt that wrapped data key (the data
owner's key, so the enclave can read records made with it); without one, to GenerateDataKey.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import grpc

from privmesh.attestation.v1 import attestation_pb2 as apb
from privmesh.attestation.v1 import attestation_pb2_grpc
from privmesh.keybroker.v1 import keybroker_pb2 as pb
from privmesh.keybroker.v1 import keybroker_pb2_grpc
from privmesh.runtime.errors import read_error
from privmesh.sdk.enclave.vsock import (
    PROXY_OP_CHALLENGE,
    PROXY_OP_DATA_KEY,
    ProtocolError,
    b64,
    b64_field,
    b64_optional_field,
)

T = TypeVar("T")
MAX_DOCUMENT = 32 * 1024
MAX_BLOB = 6 * 1024


class EnclaveKeyProxy:
    def __init__(self, verifier: attestation_pb2_grpc.AttestationVerifierStub, broker: keybroker_pb2_grpc.KeyBrokerStub,
                 loop: asyncio.AbstractEventLoop, timeout: float = 30.0) -> None:
        self._verifier = verifier
        self._broker = broker
        self._loop = loop
        self._timeout = timeout

    def _run(self, call: Callable[[], Awaitable[T]]) -> T:
        """Runs a gRPC call on the proxy's event loop from a frame-server thread (grpc.aio calls must be made
        on their loop); errors become ProtocolError."""

        async def invoke() -> T:
            return await call()

        try:
            return asyncio.run_coroutine_threadsafe(invoke(), self._loop).result(self._timeout)
        except grpc.aio.AioRpcError as exc:
            error = read_error(exc)
            refusals = error.metadata.get("refusals")
            detail = f"{error.reason or exc.code().name}" + (f" ({refusals})" if refusals else "")
            raise ProtocolError(exc.code().name, detail) from None

    def handle(self, request: Mapping[str, Any]) -> Mapping[str, Any]:
        op = request.get("op")
        if op == PROXY_OP_CHALLENGE:
            reply = self._run(lambda: self._verifier.IssueChallenge(apb.IssueChallengeRequest()))
            return {"nonce": b64(reply.nonce)}
        if op == PROXY_OP_DATA_KEY:
            key = request.get("key_id")
            context = request.get("encryption_context") or {}
            if not isinstance(key, str) or not key:
                raise ProtocolError("INVALID_ARGUMENT", "key_id must be a key name")
            if not isinstance(context, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                        for k, v in context.items()):
                raise ProtocolError("INVALID_ARGUMENT", "encryption_context must map strings to strings")
            document = b64_field(request, "document", max_len=MAX_DOCUMENT)
            wrapped = b64_optional_field(request, "ciphertext_blob", max_len=MAX_BLOB)
            recipient = pb.Recipient(attestation_document=document)
            if wrapped is None:
                made = self._run(lambda: self._broker.GenerateDataKey(pb.GenerateDataKeyRequest(
                    key=key, encryption_context=context, recipient=recipient)))
                return {"ciphertext_for_recipient": b64(made.ciphertext_for_recipient),
                        "ciphertext_format": _format(made.ciphertext_format),
                        "ciphertext_blob": b64(made.ciphertext_blob)}
            opened = self._run(lambda: self._broker.Decrypt(pb.DecryptRequest(
                ciphertext_blob=wrapped, encryption_context=context, key=key, recipient=recipient)))
            return {"ciphertext_for_recipient": b64(opened.ciphertext_for_recipient),
                    "ciphertext_format": _format(opened.ciphertext_format)}
        raise ProtocolError("INVALID_ARGUMENT", f"unknown op (expected {PROXY_OP_CHALLENGE} or {PROXY_OP_DATA_KEY})")


def _format(value: int) -> str:
    """The enclave's name of a RecipientCiphertextFormat (the enum name without its prefix)."""
    return pb.RecipientCiphertextFormat.Name(value).removeprefix("RECIPIENT_CIPHERTEXT_FORMAT_")
