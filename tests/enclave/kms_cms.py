"""Test helper: KMS's CiphertextForRecipient, built as AWS KMS builds it, with asn1crypto.

ContentInfo(EnvelopedData v2) with one KeyTransRecipientInfo v2 (rid = subjectKeyIdentifier, SHA-256 of the
recipient's DER SubjectPublicKeyInfo; RSAES-OAEP with SHA-256, MGF1-SHA-256) and the data key as AES-256-CBC
content with PKCS#7 padding. KMS sends BER with indefinite lengths on ContentInfo, its [0], EnvelopedData,
EncryptedContentInfo and the encrypted content (a constructed [0] holding one OCTET STRING); `kms_ber`
re-encodes those five outer layers that way around the DER parts asn1crypto makes, as a published KMS
answer is laid out. `build` returns the asn1crypto object, so that tests can alter any part of it.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from asn1crypto import algos, cms, core  # type: ignore[import-untyped]
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def oaep_sha256() -> dict[str, Any]:
    return {"algorithm": "rsaes_oaep", "parameters": algos.RSAESOAEPParams({
        "hash_algorithm": {"algorithm": "sha256"},
        "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": {"algorithm": "sha256"}}})}


def build(public_key_der: bytes, data_key: bytes, *, key_id: bytes | None = None) -> cms.ContentInfo:
    """The EnvelopedData that KMS returns for `data_key` and a recipient's public key."""
    public_key = serialization.load_der_public_key(public_key_der)
    assert isinstance(public_key, rsa.RSAPublicKey)
    cek, iv = os.urandom(32), os.urandom(16)
    padder = sym_padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(cek), modes.CBC(iv)).encryptor()
    content = encryptor.update(padder.update(data_key) + padder.finalize()) + encryptor.finalize()
    encrypted_key = public_key.encrypt(cek, padding.OAEP(mgf=padding.MGF1(hashes.SHA256()),
                                                         algorithm=hashes.SHA256(), label=None))
    recipient = cms.KeyTransRecipientInfo({
        "version": "v2",
        "rid": cms.RecipientIdentifier(name="subject_key_identifier",
                                       value=key_id or hashlib.sha256(public_key_der).digest()),
        "key_encryption_algorithm": oaep_sha256(),
        "encrypted_key": encrypted_key})
    return cms.ContentInfo({"content_type": "enveloped_data", "content": cms.EnvelopedData({
        "version": "v2",
        "recipient_infos": [cms.RecipientInfo(name="ktri", value=recipient)],
        "encrypted_content_info": {"content_type": "data",
                                   "content_encryption_algorithm": {"algorithm": "aes256_cbc", "parameters": iv},
                                   "encrypted_content": content}})})


def _indefinite(identifier: int, *parts: bytes) -> bytes:
    return bytes([identifier, 0x80]) + b"".join(parts) + b"\x00\x00"


def kms_ber(info: cms.ContentInfo) -> bytes:
    """The ContentInfo in KMS's BER layout (indefinite lengths on the outer layers, chunked content)."""
    enveloped = info["content"]
    content_info = enveloped["encrypted_content_info"]
    encrypted = _indefinite(0xA0, core.OctetString(content_info["encrypted_content"].native).dump())
    content = _indefinite(0x30, content_info["content_type"].dump(),
                          content_info["content_encryption_algorithm"].dump(force=True), encrypted)
    inner = _indefinite(0x30, enveloped["version"].dump(), enveloped["recipient_infos"].dump(force=True), content)
    return _indefinite(0x30, info["content_type"].dump(), _indefinite(0xA0, inner))


def ciphertext_for_recipient(public_key_der: bytes, data_key: bytes) -> bytes:
    """What KMS returns as CiphertextForRecipient for `data_key` (BER, as KMS encodes it)."""
    return kms_ber(build(public_key_der, data_key))
