"""The enclave opens KMS's CiphertextForRecipient (CMS EnvelopedData, built here as KMS builds it) to the right
data key, chosen by the format the broker names; malformed, truncated, wrong-recipient and wrong-algorithm
CMS are refused with an error that says which, and every failure past the structure gives one message."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from privmesh.enclave.app import EnclaveApp, UnwrapError, wrap_for_recipient
from privmesh.enclave.cms import DOES_NOT_OPEN, recipient_key_id
from privmesh.enclave.simulator import DevCa, SimulatedNsm
from privmesh.sdk.enclave.vsock import FORMAT_CMS, FORMAT_RSAES_OAEP, b64
from tests.enclave.kms_cms import build, ciphertext_for_recipient, kms_ber


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> EnclaveApp:
    return EnclaveApp(SimulatedNsm(DevCa.load_or_create(tmp_path_factory.mktemp("ca"))))


@pytest.fixture(scope="module")
def other_der() -> bytes:
    return rsa.generate_private_key(public_exponent=65537, key_size=3072).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def refused(app: EnclaveApp, data: bytes) -> str:
    with pytest.raises(UnwrapError) as caught:
        app.unwrap_data_key(data, FORMAT_CMS)
    return str(caught.value)


def test_kms_cms_opens_to_the_data_key_in_ber_and_der(app: EnclaveApp) -> None:
    data_key = os.urandom(32)
    info = build(app.public_key_der, data_key)
    assert app.unwrap_data_key(kms_ber(info), FORMAT_CMS) == data_key
    assert app.unwrap_data_key(info.dump(), FORMAT_CMS) == data_key
    reply = app.handle({"op": "unwrap", "ciphertext_for_recipient": b64(kms_ber(info)),
                        "ciphertext_format": FORMAT_CMS, "key_ref": "kms"})
    assert reply == {"key_ref": "kms"}


def test_the_format_field_chooses_and_unknown_formats_are_refused(app: EnclaveApp) -> None:
    data_key = os.urandom(32)
    raw = wrap_for_recipient(app.public_key_der, data_key)
    assert app.unwrap_data_key(raw, FORMAT_RSAES_OAEP) == data_key
    assert "malformed CMS" in refused(app, raw)  # raw RSA-OAEP is not CMS
    with pytest.raises(UnwrapError, match="ciphertext_format must be"):
        app.unwrap_data_key(ciphertext_for_recipient(app.public_key_der, data_key), "PKCS7")
    with pytest.raises(UnwrapError, match="ciphertext_format must be"):
        app.unwrap_data_key(raw, None)


def test_malformed_and_truncated_cms_are_refused(app: EnclaveApp) -> None:
    good = ciphertext_for_recipient(app.public_key_der, os.urandom(32))
    for cut in (1, 2, 100, len(good) // 2, len(good) - 60, len(good) - 3, len(good) - 1):
        assert "malformed CMS" in refused(app, good[:cut]), cut
    assert "malformed CMS" in refused(app, good + b"\x00")  # trailing bytes
    assert "malformed CMS" in refused(app, os.urandom(600))
    assert "bytes; 1..4096 expected" in refused(app, b"")
    assert "bytes; 1..4096 expected" in refused(app, good * 8)


def test_cms_for_another_recipient_is_refused(app: EnclaveApp, other_der: bytes) -> None:
    assert "encrypted to another recipient" in refused(app, ciphertext_for_recipient(other_der, os.urandom(32)))
    # naming this enclave's key identifier does not help: the key is still encrypted to the other key
    forged = build(other_der, os.urandom(32), key_id=recipient_key_id(app.public_key_der))
    assert refused(app, kms_ber(forged)) == DOES_NOT_OPEN


def _altered(app: EnclaveApp, change: str) -> bytes:
    info = build(app.public_key_der, os.urandom(32))
    enveloped = info["content"]
    recipient = enveloped["recipient_infos"][0].chosen
    algorithm = enveloped["encrypted_content_info"]["content_encryption_algorithm"]
    if change == "version":
        enveloped["version"] = "v0"
    elif change == "oaep-sha1":
        recipient["key_encryption_algorithm"] = {"algorithm": "rsaes_oaep", "parameters": {
            "hash_algorithm": {"algorithm": "sha1"},
            "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": {"algorithm": "sha1"}}}}
    elif change == "oaep-no-parameters":
        recipient["key_encryption_algorithm"] = {"algorithm": "rsaes_oaep"}
    elif change == "pkcs1v15":
        recipient["key_encryption_algorithm"] = {"algorithm": "rsaes_pkcs1v15"}
    elif change == "aes128":
        algorithm["algorithm"] = "aes128_cbc"
    elif change == "content-type":
        info["content_type"] = "signed_data"
    elif change == "two-recipients":
        enveloped["recipient_infos"] = [enveloped["recipient_infos"][0], enveloped["recipient_infos"][0]]
    elif change == "issuer-and-serial":
        recipient["version"] = "v0"
    elif change == "long-content":
        enveloped["encrypted_content_info"]["encrypted_content"] = os.urandom(64)
    elif change == "short-key":
        recipient["encrypted_key"] = os.urandom(256)
    return kms_ber(info) if change != "content-type" else info.dump(force=True)


@pytest.mark.parametrize(("change", "message"), [
    ("version", "EnvelopedData v0; KMS sends v2"),
    ("oaep-sha1", "RSAES-OAEP parameters other than SHA-256"),
    ("oaep-no-parameters", "RSAES-OAEP parameters other than SHA-256"),
    ("pkcs1v15", "not RSAES-OAEP"),
    ("aes128", "not AES-256-CBC"),
    ("content-type", "not EnvelopedData"),
    ("two-recipients", "exactly one KeyTransRecipientInfo"),
    ("issuer-and-serial", "subjectKeyIdentifier"),
    ("long-content", "encrypted content of 64 bytes"),
    ("short-key", "encrypted key of 256 bytes for a 3072-bit key"),
])
def test_other_algorithms_versions_and_sizes_are_refused_by_name(app: EnclaveApp, change: str,
                                                                  message: str) -> None:
    assert message in refused(app, _altered(app, change))


def test_altered_content_gives_one_message_whatever_failed(app: EnclaveApp) -> None:
    """No padding oracle: a content made to end in valid but shorter padding, a flipped key byte, and a
    content key of the wrong size all fail the same way."""
    info = build(app.public_key_der, os.urandom(32))
    algorithm = info["content"]["encrypted_content_info"]["content_encryption_algorithm"]
    content = bytearray(info["content"]["encrypted_content_info"]["encrypted_content"].native)
    content[31] ^= 0x10 ^ 0x01  # the last plaintext block now ends in 0x01: valid PKCS#7, but a 47-byte key
    info["content"]["encrypted_content_info"]["encrypted_content"] = bytes(content)
    assert refused(app, kms_ber(info)) == DOES_NOT_OPEN
    iv = bytearray(algorithm["parameters"].native)
    iv[0] ^= 1  # the key's first byte changes; padding stays valid, so this one opens (to another key)
    algorithm["parameters"] = bytes(iv)
    content[31] ^= 0x10 ^ 0x01
    info["content"]["encrypted_content_info"]["encrypted_content"] = bytes(content)
    assert len(app.unwrap_data_key(kms_ber(info), FORMAT_CMS)) == 32
    small = build(app.public_key_der, os.urandom(32))
    recipient = small["content"]["recipient_infos"][0].chosen
    recipient["encrypted_key"] = wrap_for_recipient(app.public_key_der, os.urandom(16))
    assert refused(app, kms_ber(small)) == DOES_NOT_OPEN
