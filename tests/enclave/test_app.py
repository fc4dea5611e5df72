"""The enclave app end to end with the simulator: attest, receive a wrapped key, unwrap inside, decrypt."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from privmesh.enclave.app import (
    DATA_KEY_SIZE,
    EnclaveApp,
    UnwrapError,
    decrypt_record,
    encrypt_record,
    wrap_for_recipient,
)
from privmesh.enclave.simulator import ROOT_FILE, SimulatedNsm
from privmesh.sdk.enclave.vsock import (
    FORMAT_RSAES_OAEP,
    FrameClient,
    FrameServer,
    ProtocolError,
    RemoteError,
    b64,
    b64_field,
    listen,
    serve_proxy,
)

from .test_simulator import cose_signature_valid, verify_chain

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sim() -> SimulatedNsm:
    return SimulatedNsm(image="privmesh-enclave:test")


@pytest.fixture(scope="module")
def app(sim: SimulatedNsm) -> EnclaveApp:
    return EnclaveApp(sim)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="pm-", dir="/tmp") as name:
        yield Path(name)


def payload_of(document: bytes) -> dict[str, Any]:
    return cbor2.loads(cbor2.loads(document)[2])


def test_attestation_binds_the_ephemeral_key_and_nonce(app: EnclaveApp, sim: SimulatedNsm) -> None:
    nonce = secrets.token_bytes(32)
    document = app.attest(nonce, user_data=b"job-42")
    payload = payload_of(document)
    assert (payload["public_key"], payload["nonce"], payload["user_data"]) == (app.public_key_der, nonce, b"job-42")
    key = serialization.load_der_public_key(payload["public_key"])
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 3072
    assert cose_signature_valid(document)
    verify_chain(document, sim.root_certificate, datetime.now(timezone.utc))


def test_unwrap_and_decrypt(app: EnclaveApp) -> None:
    data_key = os.urandom(DATA_KEY_SIZE)
    wrapped = wrap_for_recipient(app.public_key_der, data_key)
    assert app.unwrap_data_key(wrapped, FORMAT_RSAES_OAEP) == data_key
    record = encrypt_record(data_key, b"patient 7: glucose 5.4", aad=b"ward-3")
    opened = app.unwrap_data_key(wrapped, FORMAT_RSAES_OAEP)
    assert decrypt_record(opened, record, aad=b"ward-3") == b"patient 7: glucose 5.4"


def test_a_key_wrapped_for_another_enclave_does_not_unwrap(app: EnclaveApp) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    other_der = other.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(UnwrapError):
        app.unwrap_data_key(wrap_for_recipient(other_der, os.urandom(32)), FORMAT_RSAES_OAEP)
    with pytest.raises(UnwrapError):  # right recipient, but not an AES-256 key
        app.unwrap_data_key(wrap_for_recipient(app.public_key_der, os.urandom(16)), FORMAT_RSAES_OAEP)
    with pytest.raises(UnwrapError):
        app.unwrap_data_key(b"\x00" * 384, FORMAT_RSAES_OAEP)


def test_records_are_authenticated() -> None:
    key = os.urandom(32)
    record = bytearray(encrypt_record(key, b"secret"))
    record[-1] ^= 1
    with pytest.raises(InvalidTag):
        decrypt_record(key, bytes(record))
    with pytest.raises(ValueError):
        decrypt_record(key, b"short")
    with pytest.raises(ValueError):
        decrypt_record(b"k" * 16, encrypt_record(os.urandom(16), b"x"))


def test_the_parent_drives_the_enclave_over_the_transport(app: EnclaveApp, sim: SimulatedNsm, short_dir: Path) -> None:
    server = FrameServer(listen(str(short_dir / "enclave.sock")), app.handle).start()
    with server, FrameClient.connect(server.address, timeout=10) as enclave:
        public_key = b64_field(enclave.request({"op": "public_key"}), "public_key", max_len=1024)
        nonce = secrets.token_bytes(32)
        document = b64_field(enclave.request({"op": "attest", "nonce": b64(nonce)}), "document", max_len=1 << 16)
        payload = payload_of(document)
        assert payload["nonce"] == nonce and payload["public_key"] == public_key == app.public_key_der
        assert cose_signature_valid(document)

        # The broker's side: wrap a data key to the public key the document binds.
        data_key = os.urandom(32)
        wrapped = wrap_for_recipient(payload["public_key"], data_key)
        unwrap = {"op": "unwrap", "ciphertext_for_recipient": b64(wrapped), "ciphertext_format": "RSAES_OAEP"}
        assert enclave.request({**unwrap, "key_ref": "k1"}) == {"key_ref": "k1"}
        record = encrypt_record(data_key, b"record #1", aad=b"ctx")
        reply = enclave.request({"op": "decrypt", "key_ref": "k1", "record": b64(record), "aad": b64(b"ctx")})
        assert reply == {"length": 9, "sha256": hashlib.sha256(b"record #1").hexdigest()}  # no plaintext out

        failures = [
            ({"op": "decrypt", "key_ref": "k1", "record": b64(record)}, "INVALID_ARGUMENT"),  # wrong aad
            ({"op": "decrypt", "key_ref": "nope", "record": b64(record)}, "FAILED_PRECONDITION"),
            ({"op": "unwrap", "ciphertext_for_recipient": b64(b"\x01" * 384), "ciphertext_format": "RSAES_OAEP"},
             "INVALID_ARGUMENT"),
            ({"op": "unwrap", "ciphertext_for_recipient": b64(wrapped)}, "INVALID_ARGUMENT"),  # no format
            ({"op": "unwrap", "ciphertext_for_recipient": b64(wrapped), "key_ref": "bad ref"}, "INVALID_ARGUMENT"),
            ({"op": "attest"}, "INVALID_ARGUMENT"),
            ({"op": "attest", "nonce": b64(b"n" * 1025)}, "INVALID_ARGUMENT"),
            ({"op": "export_private_key"}, "INVALID_ARGUMENT"),
        ]
        for request, code in failures:
            with pytest.raises(RemoteError) as info:
                enclave.request(request)
            assert info.value.code == code, request


def test_enclave_initiated_release_through_the_parent_proxy(
    app: EnclaveApp, sim: SimulatedNsm, short_dir: Path
) -> None:
    """The mesh side here is a stand-in for attestation-verifier + key-broker, plugged into the proxy."""
    issued: set[bytes] = set()
    data_key = os.urandom(32)

    def mesh(request: dict[str, Any]) -> dict[str, Any]:
        if request["op"] == "challenge":
            nonce = secrets.token_bytes(32)
            issued.add(nonce)
            return {"nonce": b64(nonce)}
        if request["op"] == "data_key":
            document = b64_field(request, "document", max_len=1 << 16)
            payload = payload_of(document)
            if not cose_signature_valid(document) or payload["nonce"] not in issued:
                raise ProtocolError("PERMISSION_DENIED", "attestation refused")
            issued.discard(payload["nonce"])  # single use
            verify_chain(document, sim.root_certificate, datetime.now(timezone.utc))
            assert request["key_id"] == "records" and request["encryption_context"] == {"purpose": "demo"}
            return {"ciphertext_for_recipient": b64(wrap_for_recipient(payload["public_key"], data_key)),
                    "ciphertext_format": "RSAES_OAEP"}
        raise ProtocolError("INVALID_ARGUMENT", "unknown op")

    with serve_proxy(str(short_dir / "proxy.sock"), mesh) as proxy, FrameClient.connect(proxy.address) as parent:
        ref = app.acquire_data_key(parent, "records", key_ref="records", encryption_context={"purpose": "demo"})
    assert ref == "records" and not issued
    record = encrypt_record(data_key, b"row")
    assert app.decrypt_with("records", record) == {"length": 3, "sha256": hashlib.sha256(b"row").hexdigest()}


def test_an_unattested_caller_gets_nothing(short_dir: Path) -> None:
    def mesh(request: dict[str, Any]) -> dict[str, Any]:
        raise ProtocolError("PERMISSION_DENIED", "attestation refused")

    plain = EnclaveApp(SimulatedNsm(), key_size=2048)
    proxy = serve_proxy(str(short_dir / "p.sock"), mesh)
    with proxy, FrameClient.connect(proxy.address) as parent, pytest.raises(RemoteError) as info:
        plain.acquire_data_key(parent, "records")
    assert info.value.code == "PERMISSION_DENIED"


def test_python_m_privmesh_enclave_simulate(short_dir: Path) -> None:
    ca_dir, sock = short_dir / "ca", short_dir / "app.sock"
    env = {**os.environ, "PYTHONPATH": str(REPO / "services")}
    with subprocess.Popen(
        [sys.executable, "-m", "privmesh.enclave", "--simulate", "--ca-dir", str(ca_dir), "--socket", str(sock)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    ) as proc:
        try:
            assert proc.stdout is not None
            ready = json.loads(proc.stdout.readline())
            assert ready["event"] == "ready" and ready["simulated"] is True
            with FrameClient.connect(str(sock), timeout=10) as enclave:
                document = b64_field(
                    enclave.request({"op": "attest", "nonce": b64(b"n" * 32)}), "document", max_len=1 << 16
                )
            root = x509.load_pem_x509_certificate((ca_dir / ROOT_FILE).read_bytes())
            verify_chain(document, root, datetime.now(timezone.utc))  # the mesh trusts the shared dev root
            assert hashlib.sha256(payload_of(document)["public_key"]).hexdigest() == ready["public_key_sha256"]
            assert ready["dev_root_sha256"] == hashlib.sha256(root.public_bytes(serialization.Encoding.DER)).hexdigest()
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
    assert not sock.exists()


def test_cli_refuses_incomplete_simulator_flags() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "services")}
    result = subprocess.run(
        [sys.executable, "-m", "privmesh.enclave", "--simulate", "--socket", "/tmp/x.sock"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 2 and "--ca-dir" in result.stderr
