"""Access to the Nitro Secure Module: the interface the app needs, and the real /dev/nsm driver.

The driver speaks the Linux NSM ioctl (include/uapi/linux/nsm.h; the same message the Rust
aws-nitro-enclaves-nsm-api sends): one ioctl carries two iovecs, a CBOR request and a buffer for the
CBOR response. Requests and responses are serde's externally tagged enums, e.g.
``{"Attestation": {"user_data": ..., "nonce": ..., "public_key": ...}}`` ->
``{"Attestation": {"document": b"..."}}`` or ``{"Error": "InvalidArgument"}``.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import threading
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import cbor2

DEVICE_PATH = "/dev/nsm"
NSM_MAGIC = 0x0A
NSM_REQUEST_MAX_SIZE = 0x1000
NSM_RESPONSE_MAX_SIZE = 0x3000
# What a real NSM accepts for each of public_key, user_data and nonce (real documents carry 1024 bytes).
MAX_ATTESTATION_FIELD = 1024
PCR_COUNT = 16

# The NSM's ErrorCode enum, as it appears on the wire.
ERROR_CODES = frozenset(
    {
        "Success",
        "InvalidArgument",
        "InvalidIndex",
        "InvalidResponse",
        "ReadOnlyIndex",
        "InvalidOperation",
        "BufferTooSmall",
        "InputTooLarge",
        "InternalError",
    }
)


class NsmError(Exception):
    """The NSM refused or failed a request; `code` is one of ERROR_CODES (or "Unavailable")."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code


@runtime_checkable
class Nsm(Protocol):
    """What the enclave app needs from an NSM; DeviceNsm and SimulatedNsm both provide it."""

    def attest(
        self, public_key: bytes | None = None, user_data: bytes | None = None, nonce: bytes | None = None
    ) -> bytes:
        """Return a COSE_Sign1 attestation document binding the given values."""
        ...

    def describe_pcrs(self) -> dict[int, bytes]:
        """Return the current PCR values (index -> digest)."""
        ...


# --- wire format (pure functions, testable without the device) ---------------------------------


def _check_field(name: str, value: bytes | None) -> None:
    if value is None:
        return
    if not isinstance(value, bytes | bytearray):
        raise NsmError("InvalidArgument", f"{name} must be bytes")
    if len(value) > MAX_ATTESTATION_FIELD:
        raise NsmError("InputTooLarge", f"{name} is {len(value)} bytes, at most {MAX_ATTESTATION_FIELD}")


def encode_attestation_request(
    public_key: bytes | None = None, user_data: bytes | None = None, nonce: bytes | None = None
) -> bytes:
    """CBOR-encode an Attestation request exactly as the NSM expects it (absent fields are null)."""
    for name, value in (("public_key", public_key), ("user_data", user_data), ("nonce", nonce)):
        _check_field(name, value)

    def opt(value: bytes | None) -> bytes | None:
        return None if value is None else bytes(value)

    body = {"user_data": opt(user_data), "nonce": opt(nonce), "public_key": opt(public_key)}
    return _check_request_size(cbor2.dumps({"Attestation": body}))


def encode_describe_pcr_request(index: int) -> bytes:
    """CBOR-encode a DescribePCR request."""
    if not 0 <= index < 0x10000:
        raise NsmError("InvalidIndex", f"PCR index {index}")
    return _check_request_size(cbor2.dumps({"DescribePCR": {"index": index}}))


def _check_request_size(request: bytes) -> bytes:
    if len(request) > NSM_REQUEST_MAX_SIZE:
        raise NsmError("InputTooLarge", f"request is {len(request)} bytes, at most {NSM_REQUEST_MAX_SIZE}")
    return request


def decode_response(raw: bytes, variant: str) -> dict[str, Any]:
    """Decode a CBOR response, expecting ``{variant: {...}}``; map ``{"Error": code}`` to NsmError."""
    if len(raw) > NSM_RESPONSE_MAX_SIZE:
        raise NsmError("InvalidResponse", "response larger than the NSM maximum")
    try:
        message = cbor2.loads(raw)
    except Exception as exc:  # any decoding failure means the response is unusable
        raise NsmError("InvalidResponse", "response is not valid CBOR") from exc
    if not isinstance(message, dict) or len(message) != 1:
        raise NsmError("InvalidResponse", "response is not a single-variant map")
    ((name, body),) = message.items()
    if name == "Error":
        code = body if isinstance(body, str) and body in ERROR_CODES else "InternalError"
        raise NsmError(code, "reported by the NSM")
    if name != variant or not isinstance(body, dict):
        raise NsmError("InvalidResponse", f"expected a {variant} response")
    return body


def decode_attestation_response(raw: bytes) -> bytes:
    """Return the document from an Attestation response."""
    document = decode_response(raw, "Attestation").get("document")
    if not isinstance(document, bytes) or not document:
        raise NsmError("InvalidResponse", "Attestation response without a document")
    return document


def decode_describe_pcr_response(raw: bytes) -> tuple[bool, bytes]:
    """Return (locked, value) from a DescribePCR response."""
    body = decode_response(raw, "DescribePCR")
    lock, data = body.get("lock"), body.get("data")
    if not isinstance(lock, bool) or not isinstance(data, bytes):
        raise NsmError("InvalidResponse", "malformed DescribePCR response")
    return lock, data


# --- the ioctl ------------------------------------------------------------------------------------


class NsmIovec(ctypes.Structure):
    """struct nsm_iovec { __u64 addr; __u64 len; }."""

    _fields_ = [("addr", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class NsmRawMessage(ctypes.Structure):
    """struct nsm_raw { struct nsm_iovec request; struct nsm_iovec response; } (32 bytes)."""

    _fields_ = [("request", NsmIovec), ("response", NsmIovec)]


def _iowr(kind: int, number: int, size: int) -> int:
    """Linux _IOWR from asm-generic/ioctl.h (x86_64 and arm64/Graviton both use it)."""
    ioc_read_write = 3
    return (ioc_read_write << 30) | (size << 16) | (kind << 8) | number


NSM_IOCTL_REQUEST = _iowr(NSM_MAGIC, 0, ctypes.sizeof(NsmRawMessage))  # 0xC0200A00

IoctlFn = Callable[[int, int, Any, bool], Any]


class DeviceNsm:
    """The real NSM behind /dev/nsm; only works inside a Nitro Enclave."""

    def __init__(self, path: str = DEVICE_PATH, *, ioctl: IoctlFn = fcntl.ioctl) -> None:
        try:
            self._fd: int | None = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise NsmError("Unavailable", f"cannot open {path} (not inside a Nitro Enclave?)") from exc
        self._ioctl = ioctl
        self._lock = threading.Lock()

    def transact(self, request: bytes) -> bytes:
        """Send one raw CBOR request through the ioctl and return the raw CBOR response."""
        _check_request_size(request)
        req = ctypes.create_string_buffer(request, len(request))
        resp = ctypes.create_string_buffer(NSM_RESPONSE_MAX_SIZE)
        message = NsmRawMessage(
            NsmIovec(ctypes.addressof(req), len(request)),
            NsmIovec(ctypes.addressof(resp), NSM_RESPONSE_MAX_SIZE),
        )
        with self._lock:
            if self._fd is None:
                raise NsmError("Unavailable", "device closed")
            try:
                # mutate=True: the kernel writes the response length back into `message`.
                self._ioctl(self._fd, NSM_IOCTL_REQUEST, message, True)
            except OSError as exc:
                code = "InputTooLarge" if exc.errno == errno.EMSGSIZE else "InternalError"
                raise NsmError(code, f"ioctl failed: {os.strerror(exc.errno or 0)}") from exc
        length = message.response.len
        if length > NSM_RESPONSE_MAX_SIZE:
            raise NsmError("InvalidResponse", "driver reported an impossible response length")
        return resp.raw[:length]

    def attest(
        self, public_key: bytes | None = None, user_data: bytes | None = None, nonce: bytes | None = None
    ) -> bytes:
        """Ask the NSM for an attestation document binding the given values."""
        request = encode_attestation_request(public_key=public_key, user_data=user_data, nonce=nonce)
        return decode_attestation_response(self.transact(request))

    def describe_pcr(self, index: int) -> tuple[bool, bytes]:
        """Return (locked, value) of one PCR."""
        return decode_describe_pcr_response(self.transact(encode_describe_pcr_request(index)))

    def describe_pcrs(self) -> dict[int, bytes]:
        """Return PCR0..15, the registers attestation documents carry."""
        return {index: self.describe_pcr(index)[1] for index in range(PCR_COUNT)}

    def close(self) -> None:
        """Close the device file."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> DeviceNsm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
