"""The /dev/nsm driver without the device: wire encoding, the ioctl message, error mapping."""

from __future__ import annotations

import ctypes
import errno
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cbor2
import pytest

from privmesh.enclave import nsm as nsm_module
from privmesh.enclave.nsm import (
    NSM_IOCTL_REQUEST,
    NSM_REQUEST_MAX_SIZE,
    NSM_RESPONSE_MAX_SIZE,
    DeviceNsm,
    NsmError,
    NsmRawMessage,
    decode_attestation_response,
    decode_describe_pcr_response,
    encode_attestation_request,
    encode_describe_pcr_request,
)
from privmesh.enclave.simulator import SimulatedNsm


def test_ioctl_number_and_struct_match_the_kernel_header() -> None:
    # include/uapi/linux/nsm.h: _IOWR(0x0A, 0, struct nsm_raw), struct nsm_raw = two {u64 addr; u64 len}.
    assert ctypes.sizeof(NsmRawMessage) == 32
    assert NSM_IOCTL_REQUEST == 0xC0200A00
    assert (NSM_REQUEST_MAX_SIZE, NSM_RESPONSE_MAX_SIZE) == (0x1000, 0x3000)


def test_attestation_request_encoding() -> None:
    raw = encode_attestation_request(public_key=b"pk", nonce=b"n")
    assert cbor2.loads(raw) == {"Attestation": {"user_data": None, "nonce": b"n", "public_key": b"pk"}}
    assert list(cbor2.loads(raw)["Attestation"]) == ["user_data", "nonce", "public_key"]
    assert cbor2.loads(encode_attestation_request(bytearray(b"k"))) == {
        "Attestation": {"user_data": None, "nonce": None, "public_key": b"k"}
    }
    assert cbor2.loads(encode_describe_pcr_request(3)) == {"DescribePCR": {"index": 3}}


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"nonce": b"x" * 1025}, "InputTooLarge"),
        ({"user_data": "text"}, "InvalidArgument"),
    ],
)
def test_attestation_request_bounds(kwargs: dict[str, Any], code: str) -> None:
    with pytest.raises(NsmError) as info:
        encode_attestation_request(**kwargs)
    assert info.value.code == code


def test_largest_legal_request_fits_the_driver_limit() -> None:
    assert len(encode_attestation_request(b"a" * 1024, b"b" * 1024, b"c" * 1024)) <= NSM_REQUEST_MAX_SIZE


def test_response_decoding() -> None:
    assert decode_attestation_response(cbor2.dumps({"Attestation": {"document": b"doc"}})) == b"doc"
    assert decode_describe_pcr_response(cbor2.dumps({"DescribePCR": {"lock": True, "data": b"\0" * 48}})) == (
        True,
        b"\0" * 48,
    )


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (cbor2.dumps({"Error": "InvalidArgument"}), "InvalidArgument"),
        (cbor2.dumps({"Error": "InputTooLarge"}), "InputTooLarge"),
        (cbor2.dumps({"Error": "SomethingNew"}), "InternalError"),
        (cbor2.dumps({"Error": 7}), "InternalError"),
        (b"\xff\x00garbage", "InvalidResponse"),
        (b"", "InvalidResponse"),
        (cbor2.dumps(["Attestation"]), "InvalidResponse"),
        (cbor2.dumps({"DescribeNSM": {}}), "InvalidResponse"),
        (cbor2.dumps({"Attestation": {"document": [1, 2]}}), "InvalidResponse"),
        (cbor2.dumps({"Attestation": {}, "Error": "InternalError"}), "InvalidResponse"),
        (b"\x00" * (NSM_RESPONSE_MAX_SIZE + 1), "InvalidResponse"),
    ],
)
def test_response_errors_are_mapped(raw: bytes, code: str) -> None:
    with pytest.raises(NsmError) as info:
        decode_attestation_response(raw)
    assert info.value.code == code


def test_missing_device_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NsmError) as info:
        DeviceNsm(str(tmp_path / "nsm"))
    assert info.value.code == "Unavailable"
    assert "Nitro Enclave" in str(info.value)


def fake_driver(answer: Callable[[bytes], bytes], seen: list[int] | None = None) -> Callable[..., None]:
    """An ioctl that behaves like the NSM driver: read the request iovec, fill the response iovec."""

    def ioctl(fd: int, request: int, arg: Any, mutate: bool) -> None:
        assert request == NSM_IOCTL_REQUEST and mutate
        message = NsmRawMessage.from_buffer(arg)
        body = answer(ctypes.string_at(message.request.addr, message.request.len))
        assert len(body) <= message.response.len
        ctypes.memmove(message.response.addr, body, len(body))
        message.response.len = len(body)
        if seen is not None:
            seen.append(fd)

    return ioctl


@pytest.fixture
def device_path(tmp_path: Path) -> str:
    path = tmp_path / "nsm"
    path.write_bytes(b"")
    return str(path)


def test_device_attestation_through_the_ioctl_message(device_path: str) -> None:
    sim = SimulatedNsm()
    with DeviceNsm(device_path, ioctl=fake_driver(sim.process_raw)) as device:
        document = device.attest(public_key=b"pk", user_data=None, nonce=b"nonce")
    payload = cbor2.loads(cbor2.loads(document)[2])
    assert (payload["public_key"], payload["user_data"], payload["nonce"]) == (b"pk", None, b"nonce")


def test_device_reports_nsm_errors(device_path: str) -> None:
    device = DeviceNsm(device_path, ioctl=fake_driver(lambda _req: cbor2.dumps({"Error": "InvalidOperation"})))
    with pytest.raises(NsmError) as info:
        device.attest(nonce=b"n")
    assert info.value.code == "InvalidOperation"
    device.close()
    with pytest.raises(NsmError) as closed:
        device.attest(nonce=b"n")
    assert closed.value.code == "Unavailable"


@pytest.mark.parametrize(("err", "code"), [(errno.EMSGSIZE, "InputTooLarge"), (errno.EIO, "InternalError")])
def test_ioctl_errno_mapping(device_path: str, err: int, code: str) -> None:
    def failing(fd: int, request: int, arg: Any, mutate: bool) -> None:
        raise OSError(err, "driver said no")

    with DeviceNsm(device_path, ioctl=failing) as device, pytest.raises(NsmError) as info:
        device.attest(nonce=b"n")
    assert info.value.code == code


def test_oversized_raw_request_never_reaches_the_driver(device_path: str) -> None:
    seen: list[int] = []
    device = DeviceNsm(device_path, ioctl=fake_driver(lambda req: b"", seen))
    with device, pytest.raises(NsmError) as info:
        device.transact(b"\0" * (NSM_REQUEST_MAX_SIZE + 1))
    assert info.value.code == "InputTooLarge" and seen == []


def test_impossible_response_length_is_refused(device_path: str) -> None:
    def lying(fd: int, request: int, arg: Any, mutate: bool) -> None:
        NsmRawMessage.from_buffer(arg).response.len = NSM_RESPONSE_MAX_SIZE + 1

    with DeviceNsm(device_path, ioctl=lying) as device, pytest.raises(NsmError) as info:
        device.attest(nonce=b"n")
    assert info.value.code == "InvalidResponse"


def test_describe_pcrs(device_path: str) -> None:
    def answer(request: bytes) -> bytes:
        index = cbor2.loads(request)["DescribePCR"]["index"]
        return cbor2.dumps({"DescribePCR": {"lock": index < 5, "data": bytes([index]) * 48}})

    with DeviceNsm(device_path, ioctl=fake_driver(answer)) as device:
        assert device.describe_pcr(2) == (True, b"\x02" * 48)
        pcrs = device.describe_pcrs()
    assert sorted(pcrs) == list(range(16)) and pcrs[15] == b"\x0f" * 48


def test_simulator_speaks_the_raw_protocol() -> None:
    sim = SimulatedNsm()
    assert cbor2.loads(sim.process_raw(cbor2.dumps({"DescribeNSM": None}))) == {"Error": "InvalidOperation"}
    assert cbor2.loads(sim.process_raw(b"\xff")) == {"Error": "InvalidArgument"}
    too_big = cbor2.dumps({"Attestation": {"user_data": b"x" * 2000, "nonce": None, "public_key": None}})
    assert cbor2.loads(sim.process_raw(too_big)) == {"Error": "InputTooLarge"}


def test_default_device_path() -> None:
    assert nsm_module.DEVICE_PATH == "/dev/nsm"


def test_real_fcntl_accepts_the_message(device_path: str) -> None:
    # A regular file is not the NSM: the kernel answers ENOTTY, proving fcntl took the ctypes message.
    with DeviceNsm(device_path) as device, pytest.raises(NsmError) as info:
        device.attest(nonce=b"n")
    assert info.value.code == "InternalError"
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.ENOTTY
