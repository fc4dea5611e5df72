"""The SDK's envelope helpers: encrypt and decrypt a stream or a file of any size in the AWS Encryption SDK's
message format, with a data key from the broker (GenerateDataKey) and unwrapped by it (Decrypt).

The Encryption SDK streams in frames, so memory stays bounded by the frame size whatever the input size
(the SDK prepares each message; framing.write_message writes its frames, several times faster than the SDK);
it runs in a worker thread and reaches the broker through the caller's event loop. Messages made here
decrypt with DecryptMessage and vice versa (see privmesh.sdk.keybroker.messages). With `caching`, data keys are
reused within the given limits through the SDK's caching materials manager (like the broker's own).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

from privmesh.keybroker.v1 import keybroker_pb2 as pb
from privmesh.sdk.keybroker import messages
from privmesh.sdk.keybroker.client import KeyBrokerClient
from privmesh.sdk.keybroker.framing import write_message

DEFAULT_SUITE = "AES_256_GCM_HKDF_SHA512_COMMIT_KEY"  # unsigned: frames are released as they authenticate
CHUNK = 1024 * 1024


class ContextMismatch(Exception):
    """The message's encryption context lacks an entry the caller requires."""


class Envelope:
    """Envelope encryption under one broker key."""

    def __init__(self, client: KeyBrokerClient, key: str, *, suite: str = DEFAULT_SUITE, frame_length: int = 65536,
                 caching: pb.DataKeyCaching | None = None) -> None:
        if suite not in messages.SUITES:
            raise ValueError(f"unknown suite {suite!r}")
        self._client = client
        self.key = key
        self._suite = messages.SUITES[suite]
        self._frame_length = frame_length
        self._caching = caching
        self._manager: Any = None

    def _wrapping(self, loop: asyncio.AbstractEventLoop, key: str, required: Mapping[str, str]) -> messages.Wrapping:
        def call(coroutine: Any) -> Any:
            return asyncio.run_coroutine_threadsafe(coroutine, loop).result()

        def generate(context: dict[str, str]) -> tuple[bytes, bytes]:
            plaintext, wrapped, _ = call(self._client.generate_data_key(key, context))
            return plaintext, wrapped

        def unwrap(blob: bytes, context: dict[str, str]) -> bytes:
            if any(context.get(k) != v for k, v in required.items()):
                raise ContextMismatch("the message's encryption context lacks a required entry")
            return bytes(call(self._client.decrypt(blob, context, key=key)))

        return messages.Wrapping(generate, None, unwrap)

    def _materials(self, loop: asyncio.AbstractEventLoop) -> dict[str, Any]:
        key = messages.master_key(self.key, self._wrapping(loop, self.key, {}))
        if self._caching is None:
            return {"key_provider": key}
        if self._manager is None:
            c = self._caching
            self._manager = messages.caching_manager(key, c.max_age.ToTimedelta().total_seconds(),
                                                     c.max_messages or 2**32, c.max_bytes or 2**63 - 1)
        return {"materials_manager": self._manager}

    async def encrypt_stream(self, source: BinaryIO, destination: BinaryIO,
                             context: Mapping[str, str] | None = None) -> int:
        """Encrypts `source` into `destination`; returns the bytes written."""
        materials = self._materials(asyncio.get_running_loop())

        def run() -> int:
            with messages.SDK.stream(mode="e", source=source, encryption_context=dict(context or {}),
                                     algorithm=self._suite, frame_length=self._frame_length, **materials) as stream:
                return write_message(stream, source, destination)

        return await asyncio.to_thread(run)

    async def decrypt_stream(self, source: BinaryIO, destination: BinaryIO,
                             required_context: Mapping[str, str] | None = None) -> dict[str, str]:
        """Decrypts a message made under this envelope's key; returns its encryption context. Every entry of
        `required_context` must be in the message's context (checked before any plaintext is produced)."""
        loop = asyncio.get_running_loop()
        key = messages.master_key(self.key, self._wrapping(loop, self.key, dict(required_context or {})))

        def run() -> dict[str, str]:
            with messages.SDK.stream(mode="d", source=source, key_provider=key) as stream:
                for chunk in stream:
                    destination.write(chunk)
                return dict(stream.header.encryption_context)

        return await asyncio.to_thread(run)

    async def encrypt_file(self, source: Path, destination: Path, context: Mapping[str, str] | None = None) -> int:
        with source.open("rb") as src, destination.open("wb") as dst:
            return await self.encrypt_stream(src, dst, context)

    async def decrypt_file(self, source: Path, destination: Path,
                           required_context: Mapping[str, str] | None = None) -> dict[str, str]:
        """Decrypts into `destination`; on any failure the partial output is removed."""
        try:
            with source.open("rb") as src, destination.open("wb") as dst:
                return await self.decrypt_stream(src, dst, required_context)
        except BaseException:
            await asyncio.to_thread(destination.unlink, True)
            raise
