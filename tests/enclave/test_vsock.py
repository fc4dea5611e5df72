"""Framing and the request/reply transport, over socket pairs, Unix sockets and TCP loopback."""

from __future__ import annotations

import socket
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from privmesh.sdk.enclave import vsock
from privmesh.sdk.enclave.vsock import (
    FrameClient,
    FrameServer,
    FrameTooLarge,
    ProtocolError,
    RemoteError,
    TruncatedFrame,
    VsockAddress,
    b64,
    b64_field,
    b64_optional_field,
    listen,
    recv_frame,
    send_frame,
    serve_proxy,
)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # Unix socket paths are limited to ~107 bytes; pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="pm-", dir="/tmp") as name:
        yield Path(name)


class ScriptedSocket:
    """Serves fixed bytes to recv_into and records how much each call asked for."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.requests: list[int] = []

    def recv_into(self, buffer: memoryview, nbytes: int) -> int:
        self.requests.append(nbytes)
        chunk, self.data = self.data[:nbytes], self.data[nbytes:]
        buffer[: len(chunk)] = chunk
        return len(chunk)


def test_round_trip_over_a_socket_pair() -> None:
    left, right = socket.socketpair()
    with left, right:
        for payload in (b"", b"x", b"\0" * 70000):
            send_frame(left, payload)
            assert recv_frame(right) == payload
        left.shutdown(socket.SHUT_WR)
        assert recv_frame(right) is None  # clean end between frames


def test_oversized_frame_is_refused_before_allocating() -> None:
    fake = ScriptedSocket(struct.pack(">I", 0xFFFFFFFF) + b"rest")
    with pytest.raises(FrameTooLarge):
        recv_frame(fake, max_size=1024)  # type: ignore[arg-type]
    assert fake.requests == [4]  # only the header was read; no 4 GiB buffer was made
    left, right = socket.socketpair()
    with left, right, pytest.raises(FrameTooLarge):
        send_frame(left, b"x" * 11, max_size=10)


@pytest.mark.parametrize("data", [b"\0\0", struct.pack(">I", 10) + b"12345", struct.pack(">I", 1)])
def test_truncated_streams(data: bytes) -> None:
    with pytest.raises(TruncatedFrame):
        recv_frame(ScriptedSocket(data))  # type: ignore[arg-type]


def test_partial_reads_are_reassembled() -> None:
    class Trickle(ScriptedSocket):
        def recv_into(self, buffer: memoryview, nbytes: int) -> int:
            return super().recv_into(buffer, min(nbytes, 3))

    assert recv_frame(Trickle(struct.pack(">I", 8) + b"abcdefgh")) == b"abcdefgh"  # type: ignore[arg-type]


def test_b64_fields() -> None:
    message = {"a": b64(b"hello"), "bad": "not base64!", "num": 3}
    assert b64_field(message, "a", max_len=5) == b"hello"
    assert b64_optional_field(message, "missing", max_len=5) is None
    for name, max_len in (("a", 4), ("bad", 100), ("num", 10), ("missing", 1)):
        with pytest.raises(ProtocolError) as info:
            b64_field(message, name, max_len=max_len)
        assert info.value.code == "INVALID_ARGUMENT"
    with pytest.raises(ProtocolError):  # bounded before decoding
        b64_field({"big": "A" * 10_000}, "big", max_len=16)


def echo(request: dict[str, Any]) -> dict[str, Any]:
    op = request.get("op")
    if op == "refuse":
        raise ProtocolError("PERMISSION_DENIED", "no")
    if op == "crash":
        raise RuntimeError("secret detail that must not leave")
    if op == "unserialisable":
        return {"value": b"bytes"}
    return {"echo": request}


@pytest.fixture(params=["unix", "tcp"])
def server(request: pytest.FixtureRequest, short_dir: Path) -> Iterator[FrameServer]:
    address: Any = str(short_dir / "s.sock") if request.param == "unix" else ("127.0.0.1", 0)
    with FrameServer(listen(address), echo, max_frame=4096).start() as srv:
        yield srv


def test_request_reply(server: FrameServer) -> None:
    with FrameClient.connect(server.address, timeout=5) as client:
        assert client.request({"op": "ping", "n": 1}) == {"echo": {"op": "ping", "n": 1}}
        assert client.request({"op": "again"}) == {"echo": {"op": "again"}}


@pytest.mark.parametrize(
    ("op", "code"), [("refuse", "PERMISSION_DENIED"), ("crash", "INTERNAL"), ("unserialisable", "INTERNAL")]
)
def test_handler_errors_become_error_replies(server: FrameServer, op: str, code: str) -> None:
    with FrameClient.connect(server.address, timeout=5) as client:
        with pytest.raises(RemoteError) as info:
            client.request({"op": op})
        assert info.value.code == code
        assert "secret" not in info.value.message
        assert client.request({"op": "still-alive"})["echo"]["op"] == "still-alive"


@pytest.mark.parametrize("frame", [b"{not json", b"[1, 2]", b"\xff\xfe", b"[" * 3000])
def test_malformed_frames_get_invalid_argument(server: FrameServer, frame: bytes) -> None:
    with vsock.connect(server.address, timeout=5) as sock:
        send_frame(sock, frame)
        reply = vsock.decode_message(recv_frame(sock) or b"")
    assert reply["error"]["code"] == "INVALID_ARGUMENT"


def test_oversized_frame_gets_an_error_then_close(server: FrameServer) -> None:
    with vsock.connect(server.address, timeout=5) as sock:
        sock.sendall(struct.pack(">I", 1 << 30))
        reply = vsock.decode_message(recv_frame(sock) or b"")
        assert reply["error"]["code"] == "INVALID_ARGUMENT"
        assert recv_frame(sock) is None


def test_truncated_request_just_closes(server: FrameServer) -> None:
    with vsock.connect(server.address, timeout=5) as sock:
        sock.sendall(struct.pack(">I", 100) + b"short")
        sock.shutdown(socket.SHUT_WR)
        assert recv_frame(sock) is None


def test_close_removes_the_unix_socket(short_dir: Path) -> None:
    path = short_dir / "gone.sock"
    srv = FrameServer(listen(str(path)), echo).start()
    assert path.exists()
    srv.close()
    srv.close()  # idempotent
    assert not path.exists()


def test_stale_unix_socket_is_replaced(short_dir: Path) -> None:
    path = short_dir / "stale.sock"
    listen(str(path)).close()  # leaves the file behind, like a crashed process
    with FrameServer(listen(str(path)), echo).start() as srv, FrameClient.connect(srv.address) as client:
        assert client.request({"op": "x"}) == {"echo": {"op": "x"}}


def test_serve_proxy_forwards_to_the_injected_handler(short_dir: Path) -> None:
    calls: list[dict[str, Any]] = []

    def mesh(request: dict[str, Any]) -> dict[str, Any]:
        calls.append(request)
        return {"nonce": b64(b"n" * 32)}

    proxy = serve_proxy(str(short_dir / "proxy.sock"), mesh)
    with proxy, FrameClient.connect(proxy.address) as enclave_side:
        reply = enclave_side.request({"op": "challenge"})
    assert b64_field(reply, "nonce", max_len=32) == b"n" * 32 and calls == [{"op": "challenge"}]


def test_connect_parent_dials_cid_3(monkeypatch: pytest.MonkeyPatch) -> None:
    dialled: list[Any] = []
    monkeypatch.setattr(vsock, "connect", lambda address, timeout=None: dialled.append(address))
    vsock.connect_parent(8000)
    assert dialled == [VsockAddress(3, 8000)]


def test_serve_proxy_on_a_port_listens_on_vsock(monkeypatch: pytest.MonkeyPatch) -> None:
    bound: list[Any] = []

    def fake_listen(address: Any, backlog: int = 16) -> socket.socket:
        bound.append(address)
        return socket.create_server(("127.0.0.1", 0))

    monkeypatch.setattr(vsock, "listen", fake_listen)
    with serve_proxy(8000, echo):
        pass
    assert bound == [VsockAddress(socket.VMADDR_CID_ANY, 8000)]


@pytest.mark.skipif(not hasattr(socket, "AF_VSOCK"), reason="no AF_VSOCK on this platform")
def test_outside_an_enclave_there_is_no_parent() -> None:
    with pytest.raises(OSError):
        vsock.connect_parent(8000, timeout=1).close()
