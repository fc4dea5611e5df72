"""Transport between an enclave and its parent: length-prefixed JSON frames over vsock or a local socket.

An enclave has no network; its only link is AF_VSOCK to the parent instance (CID 3). The simulator uses
the same framing over a Unix socket or TCP loopback, so the application code is identical.

Frame: a 4-byte big-endian length, then that many bytes of UTF-8 JSON (an object). The length is
checked against a bound before anything is allocated. A reply is either the result object or
``{"error": {"code": "INVALID_ARGUMENT", "message": "..."}}``. Bytes travel as base64 strings.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import os
import socket
import stat
import struct
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

HEADER = struct.Struct(">I")
DEFAULT_MAX_FRAME = 1 << 20
PARENT_CID = 3  # the parent instance, as seen from inside a Nitro Enclave
ENCLAVE_PORT = 5000  # the enclave app listens here; the parent drives attest / unwrap / decrypt
PROXY_PORT = 8000  # the parent-side proxy listens here; the enclave reaches the mesh through it

# What the enclave asks the parent-side proxy (the key broker implements these in its handler).
PROXY_OP_CHALLENGE = "challenge"  # {} -> {"nonce": b64}
# {"key_id", "document": b64, "encryption_context", optional "ciphertext_blob": b64 (a wrapped data key to open)}
#   -> {"ciphertext_for_recipient": b64, "ciphertext_format"}; implemented by privmesh.keybroker.enclave_proxy
PROXY_OP_DATA_KEY = "data_key"
# The two values of "ciphertext_format" (the contract's RecipientCiphertextFormat names without prefix).
FORMAT_RSAES_OAEP = "RSAES_OAEP"
FORMAT_CMS = "CMS_ENVELOPED_DATA"


class FrameError(Exception):
    """The byte stream does not carry a well-formed frame."""


class FrameTooLarge(FrameError):
    """A frame's declared length exceeds the bound."""


class TruncatedFrame(FrameError):
    """The stream ended inside a frame."""


class ProtocolError(Exception):
    """A request the peer cannot serve; `code` is a canonical status name (INVALID_ARGUMENT, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    def to_message(self) -> dict[str, Any]:
        """The error reply sent on the wire."""
        return {"error": {"code": self.code, "message": self.message}}


class RemoteError(ProtocolError):
    """The peer answered with an error reply."""


@dataclass(frozen=True)
class VsockAddress:
    """An AF_VSOCK address (context id, port)."""

    cid: int
    port: int


# A Unix socket path, a (host, port) TCP address, or a vsock address.
Address = str | tuple[str, int] | VsockAddress
Handler = Callable[[dict[str, Any]], Mapping[str, Any]]


# --- frames ---------------------------------------------------------------------------------------


def send_frame(sock: socket.socket, payload: bytes, *, max_size: int = DEFAULT_MAX_FRAME) -> None:
    """Write one frame."""
    if len(payload) > max_size:
        raise FrameTooLarge(f"frame of {len(payload)} bytes exceeds {max_size}")
    sock.sendall(HEADER.pack(len(payload)) + payload)


def _recv_exact(sock: socket.socket, size: int) -> bytearray | None:
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:], size - got)
        if n == 0:
            return None if got == 0 else buf[:got]
        got += n
    return buf


def recv_frame(sock: socket.socket, *, max_size: int = DEFAULT_MAX_FRAME) -> bytes | None:
    """Read one frame; None on a clean end of stream between frames."""
    header = _recv_exact(sock, HEADER.size)
    if header is None:
        return None
    if len(header) < HEADER.size:
        raise TruncatedFrame("stream ended inside a frame header")
    (length,) = HEADER.unpack(header)
    if length > max_size:  # before allocating anything of that size
        raise FrameTooLarge(f"declared frame of {length} bytes exceeds {max_size}")
    body = _recv_exact(sock, length) if length else bytearray()
    if body is None or len(body) < length:
        raise TruncatedFrame(f"stream ended inside a {length}-byte frame")
    return bytes(body)


def encode_message(message: Mapping[str, Any]) -> bytes:
    """JSON-encode a message object."""
    return json.dumps(message, separators=(",", ":")).encode()


def decode_message(frame: bytes) -> dict[str, Any]:
    """Parse a frame into a JSON object, or raise ProtocolError(INVALID_ARGUMENT)."""
    try:
        message = json.loads(frame)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("INVALID_ARGUMENT", "frame is not valid JSON") from exc
    if not isinstance(message, dict):
        raise ProtocolError("INVALID_ARGUMENT", "frame is not a JSON object")
    return message


def b64(data: bytes) -> str:
    """Encode bytes for a message field."""
    return base64.b64encode(data).decode()


def b64_field(message: Mapping[str, Any], name: str, *, max_len: int) -> bytes:
    """Read a required base64 field strictly, bounding its size before decoding."""
    data = b64_optional_field(message, name, max_len=max_len)
    if data is None:
        raise ProtocolError("INVALID_ARGUMENT", f"{name} is required")
    return data


def b64_optional_field(message: Mapping[str, Any], name: str, *, max_len: int) -> bytes | None:
    """Read an optional base64 field (absent or null -> None)."""
    value = message.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 4 * (max_len // 3 + 1):
        raise ProtocolError("INVALID_ARGUMENT", f"{name} must be base64 of at most {max_len} bytes")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError("INVALID_ARGUMENT", f"{name} is not valid base64") from exc
    if len(data) > max_len:
        raise ProtocolError("INVALID_ARGUMENT", f"{name} must be at most {max_len} bytes")
    return data


# --- sockets --------------------------------------------------------------------------------------


def _family(address: Address) -> int:
    if isinstance(address, VsockAddress):
        return socket.AF_VSOCK
    if isinstance(address, str):
        return socket.AF_UNIX
    return socket.AF_INET6 if ":" in address[0] else socket.AF_INET


def _sockaddr(address: Address) -> Any:
    return (address.cid, address.port) if isinstance(address, VsockAddress) else address


def listen(address: Address, *, backlog: int = 16) -> socket.socket:
    """A listening socket; a stale Unix socket file at the path is replaced."""
    sock = socket.socket(_family(address), socket.SOCK_STREAM)
    try:
        if isinstance(address, str):
            try:
                if stat.S_ISSOCK(os.lstat(address).st_mode):
                    os.unlink(address)
            except FileNotFoundError:
                pass
        elif not isinstance(address, VsockAddress):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(_sockaddr(address))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def connect(address: Address, *, timeout: float | None = 30.0) -> socket.socket:
    """A connected socket; `timeout` applies to the connect and to every later read and write."""
    sock = socket.socket(_family(address), socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(_sockaddr(address))
    except BaseException:
        sock.close()
        raise
    return sock


def connect_parent(port: int = PROXY_PORT, *, timeout: float | None = 30.0) -> socket.socket:
    """From inside an enclave, connect to the parent instance (CID 3) over AF_VSOCK."""
    return connect(VsockAddress(PARENT_CID, port), timeout=timeout)


def vsock_listen_address(port: int = ENCLAVE_PORT) -> VsockAddress:
    """A vsock address to listen on: any local CID, the given port (inside the enclave or on the parent)."""
    return VsockAddress(socket.VMADDR_CID_ANY, port)


# --- request / reply ------------------------------------------------------------------------------


class FrameClient:
    """One connection that sends requests and reads replies, in order."""

    def __init__(self, sock: socket.socket, *, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._sock = sock
        self._max_frame = max_frame
        self._lock = threading.Lock()

    @classmethod
    def connect(cls, address: Address, *, timeout: float | None = 30.0) -> FrameClient:
        """Connect to a FrameServer."""
        return cls(connect(address, timeout=timeout))

    def request(self, message: Mapping[str, Any]) -> dict[str, Any]:
        """Send a request and return the reply; an error reply raises RemoteError."""
        with self._lock:
            send_frame(self._sock, encode_message(message), max_size=self._max_frame)
            frame = recv_frame(self._sock, max_size=self._max_frame)
        if frame is None:
            raise RemoteError("UNAVAILABLE", "peer closed the connection")
        reply = decode_message(frame)
        error = reply.get("error")
        if error is not None:
            if not isinstance(error, dict):
                raise RemoteError("UNKNOWN", "malformed error reply")
            raise RemoteError(str(error.get("code", "UNKNOWN")), str(error.get("message", "")))
        return reply

    def close(self) -> None:
        """Close the connection."""
        self._sock.close()

    def __enter__(self) -> FrameClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FrameServer:
    """Serves JSON-framed requests on a listening socket, one thread per connection (bounded)."""

    def __init__(
        self,
        listener: socket.socket,
        handler: Handler,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        idle_timeout: float | None = 300.0,
        max_connections: int = 32,
    ) -> None:
        self._listener = listener
        self._listener.settimeout(0.2)  # accept() wakes up regularly to notice close()
        self._handler = handler
        self._max_frame = max_frame
        self._idle_timeout = idle_timeout
        self._slots = threading.BoundedSemaphore(max_connections)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> Any:
        """The bound address (a path, (host, port), or (cid, port))."""
        return self._listener.getsockname()

    def start(self) -> FrameServer:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self.serve_forever, name="frame-server", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Accept connections until close()."""
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stopping.is_set():
                    return
                raise
            if not self._slots.acquire(blocking=False):
                conn.close()  # over capacity: refuse rather than queue unboundedly
                continue
            threading.Thread(target=self._serve_connection, args=(conn,), daemon=True).start()

    def _serve_connection(self, conn: socket.socket) -> None:
        try:
            with conn:
                conn.settimeout(self._idle_timeout)
                while not self._stopping.is_set():
                    try:
                        frame = recv_frame(conn, max_size=self._max_frame)
                    except FrameTooLarge as exc:
                        self._reply(conn, ProtocolError("INVALID_ARGUMENT", str(exc)).to_message())
                        return  # the stream cannot be resynchronised
                    except (FrameError, OSError):
                        return
                    if frame is None or not self._reply(conn, self._dispatch(frame)):
                        return
        finally:
            self._slots.release()

    def _dispatch(self, frame: bytes) -> Mapping[str, Any]:
        try:
            return self._handler(decode_message(frame))
        except ProtocolError as exc:
            return exc.to_message()
        except Exception as exc:  # never let a handler bug kill the connection loop or leak details
            log.error("request handler failed: %s", type(exc).__name__)
            return ProtocolError("INTERNAL", "internal error").to_message()

    def _reply(self, conn: socket.socket, reply: Mapping[str, Any]) -> bool:
        try:
            payload = encode_message(reply)
        except (TypeError, ValueError):
            payload = encode_message(ProtocolError("INTERNAL", "reply is not serialisable").to_message())
        if len(payload) > self._max_frame:
            payload = encode_message(ProtocolError("INTERNAL", "reply too large").to_message())
        try:
            send_frame(conn, payload, max_size=self._max_frame)
        except OSError:
            return False
        return True

    def close(self) -> None:
        """Stop accepting; open connections end after their current request."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        path = self.address if self._listener.family == socket.AF_UNIX else None
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes a blocked accept() on Linux
        self._listener.close()
        if isinstance(path, str) and path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def __enter__(self) -> FrameServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve_proxy(listen_at: int | Address, handler: Handler, **options: Any) -> FrameServer:
    """Start the parent-side proxy: enclave requests arrive framed and go to `handler` (the mesh calls).

    `listen_at` is a vsock port on the parent (an int) or, for the simulator, a local Address. The
    handler is injected so the service code decides what an enclave may ask (challenges, data keys).
    """
    address = vsock_listen_address(listen_at) if isinstance(listen_at, int) else listen_at
    return FrameServer(listen(address), handler, **options).start()
