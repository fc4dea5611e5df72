"""The application inside the enclave: an ephemeral key, attestation that binds it, unwrapping inside.

Key release works like AWS KMS's Recipient flow: the enclave attests with a document that carries its
ephemeral RSA-3072 public key (DER SubjectPublicKeyInfo) and the verifier's nonce; the key broker checks
the document and returns the data key encrypted to that public key; only this process holds the private key,
so only it can unwrap. The broker says which of two formats it sent: RSAES_OAEP (the broker's own, the
RSA-OAEP-SHA-256 ciphertext of the 32-byte key) or CMS_ENVELOPED_DATA (KMS's CiphertextForRecipient, made by
AWS KMS itself on the aws-kms backend; opened by privmesh.enclave.cms).

Records are AES-256-GCM: 12-byte nonce || ciphertext || 16-byte tag, optional associated data. The
plaintext stays inside: by default the ``decrypt`` op answers only its length and SHA-256; a workload
plugs its own processing in with ``record_processor``.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from privmesh.enclave.cms import MAX_CMS, CmsError, open_data_key
from privmesh.enclave.nsm import MAX_ATTESTATION_FIELD, Nsm, NsmError
from privmesh.sdk.enclave.vsock import (
    FORMAT_CMS,
    FORMAT_RSAES_OAEP,
    PROXY_OP_CHALLENGE,
    PROXY_OP_DATA_KEY,
    FrameClient,
    ProtocolError,
    b64,
    b64_field,
    b64_optional_field,
)

RSA_KEY_SIZE = 3072
DATA_KEY_SIZE = 32
RECORD_NONCE_SIZE = 12
RECORD_TAG_SIZE = 16
MAX_RECORD = 512 * 1024
MAX_KEYS = 64
DEFAULT_KEY_REF = "default"
_KEY_REF = re.compile(r"[A-Za-z0-9._:/-]{1,128}")

RecordProcessor = Callable[[bytes], Mapping[str, Any]]


class UnwrapError(Exception):
    """The wrapped key was not encrypted to this enclave's public key, or is malformed."""


def _oaep() -> padding.OAEP:
    return padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def wrap_for_recipient(public_key_der: bytes, data_key: bytes) -> bytes:
    """What the key broker does: RSAES-OAEP-SHA-256 of the data key to the enclave's public key."""
    key = serialization.load_der_public_key(public_key_der)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("recipient public key is not RSA")
    return key.encrypt(data_key, _oaep())


def encrypt_record(data_key: bytes, plaintext: bytes, aad: bytes | None = None) -> bytes:
    """AES-256-GCM a record into nonce || ciphertext || tag."""
    nonce = os.urandom(RECORD_NONCE_SIZE)
    return nonce + AESGCM(data_key).encrypt(nonce, plaintext, aad)


def decrypt_record(data_key: bytes, record: bytes, aad: bytes | None = None) -> bytes:
    """Open an encrypt_record record; raises InvalidTag if it was altered or the key is wrong."""
    if len(data_key) != DATA_KEY_SIZE:
        raise ValueError("data key must be 32 bytes (AES-256)")
    if len(record) < RECORD_NONCE_SIZE + RECORD_TAG_SIZE:
        raise ValueError("record is shorter than nonce and tag")
    return AESGCM(data_key).decrypt(record[:RECORD_NONCE_SIZE], record[RECORD_NONCE_SIZE:], aad)


def digest_only(plaintext: bytes) -> dict[str, Any]:
    """The default record processor: proves decryption without letting the plaintext out."""
    return {"length": len(plaintext), "sha256": hashlib.sha256(plaintext).hexdigest()}


class EnclaveApp:
    """The enclave's logic, independent of transport and of whether the NSM is real or simulated."""

    def __init__(
        self,
        nsm: Nsm,
        *,
        key_size: int = RSA_KEY_SIZE,
        record_processor: RecordProcessor = digest_only,
    ) -> None:
        self._nsm = nsm
        # Generated here, used here, never serialised: the private half exists only in this process.
        self._private_key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        self.public_key_der = self._private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self._process = record_processor
        self._keys: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def attest(self, nonce: bytes | None, user_data: bytes | None = None) -> bytes:
        """An attestation document binding this enclave's public key, the nonce and optional user data."""
        return self._nsm.attest(public_key=self.public_key_der, user_data=user_data, nonce=nonce)

    def unwrap_data_key(self, ciphertext_for_recipient: bytes, ciphertext_format: object) -> bytes:
        """Decrypt a data key wrapped to this enclave's public key, in the format the broker named."""
        if ciphertext_format == FORMAT_CMS:
            try:
                return open_data_key(ciphertext_for_recipient, self._private_key, self.public_key_der)
            except CmsError as exc:
                raise UnwrapError(str(exc)) from None
        if ciphertext_format != FORMAT_RSAES_OAEP:
            raise UnwrapError(f"ciphertext_format must be {FORMAT_RSAES_OAEP} or {FORMAT_CMS}")
        try:
            key = self._private_key.decrypt(ciphertext_for_recipient, _oaep())
        except ValueError as exc:
            raise UnwrapError("not encrypted to this enclave's public key") from exc
        if len(key) != DATA_KEY_SIZE:
            raise UnwrapError("unwrapped key is not a 32-byte AES-256 key")
        return key

    def store_key(self, key_ref: str, data_key: bytes) -> None:
        """Keep an unwrapped data key in memory under a name."""
        if not _KEY_REF.fullmatch(key_ref):
            raise ProtocolError("INVALID_ARGUMENT", "key_ref must match [A-Za-z0-9._:/-]{1,128}")
        with self._lock:
            if key_ref not in self._keys and len(self._keys) >= MAX_KEYS:
                raise ProtocolError("RESOURCE_EXHAUSTED", f"at most {MAX_KEYS} keys are held")
            self._keys[key_ref] = data_key

    def decrypt_with(self, key_ref: str, record: bytes, aad: bytes | None = None) -> Mapping[str, Any]:
        """Decrypt a record with a held key and hand the plaintext to the record processor."""
        with self._lock:
            key = self._keys.get(key_ref)
        if key is None:
            raise ProtocolError("FAILED_PRECONDITION", f"no data key {key_ref!r} has been unwrapped")
        try:
            plaintext = decrypt_record(key, record, aad)
        except (InvalidTag, ValueError) as exc:
            raise ProtocolError("INVALID_ARGUMENT", "record does not decrypt under that key") from exc
        return self._process(plaintext)

    def acquire_data_key(
        self,
        parent: FrameClient,
        key_id: str,
        *,
        key_ref: str = DEFAULT_KEY_REF,
        encryption_context: Mapping[str, str] | None = None,
        wrapped_key: bytes | None = None,
    ) -> str:
        """Enclave-initiated release through the parent proxy: challenge, attest, receive, unwrap. With
        `wrapped_key` (a data key wrapped by the broker, e.g. stored beside the records) the broker opens that
        one for this enclave; without, it generates a fresh one."""
        nonce = b64_field(parent.request({"op": PROXY_OP_CHALLENGE}), "nonce", max_len=MAX_ATTESTATION_FIELD)
        request = {
            "op": PROXY_OP_DATA_KEY,
            "key_id": key_id,
            "document": b64(self.attest(nonce)),
            "encryption_context": dict(encryption_context or {}),
        }
        if wrapped_key is not None:
            request["ciphertext_blob"] = b64(wrapped_key)
        reply = parent.request(request)
        wrapped = b64_field(reply, "ciphertext_for_recipient", max_len=MAX_CMS)
        self.store_key(key_ref, self.unwrap_data_key(wrapped, reply.get("ciphertext_format")))
        return key_ref

    # --- the request loop's handler (the parent drives these over vsock) ---

    def handle(self, request: dict[str, Any]) -> Mapping[str, Any]:
        """Serve one request from the parent; errors are ProtocolError with a canonical code."""
        op = request.get("op")
        if op == "public_key":
            return {"public_key": b64(self.public_key_der)}
        if op == "attest":
            nonce = b64_field(request, "nonce", max_len=MAX_ATTESTATION_FIELD)
            user_data = b64_optional_field(request, "user_data", max_len=MAX_ATTESTATION_FIELD)
            try:
                return {"document": b64(self.attest(nonce, user_data))}
            except NsmError as exc:
                code = "INVALID_ARGUMENT" if exc.code in ("InvalidArgument", "InputTooLarge") else "INTERNAL"
                raise ProtocolError(code, f"NSM refused: {exc.code}") from exc
        if op == "unwrap":
            wrapped = b64_field(request, "ciphertext_for_recipient", max_len=MAX_CMS)
            key_ref = request.get("key_ref", DEFAULT_KEY_REF)
            if not isinstance(key_ref, str):
                raise ProtocolError("INVALID_ARGUMENT", "key_ref must be a string")
            try:
                self.store_key(key_ref, self.unwrap_data_key(wrapped, request.get("ciphertext_format")))
            except UnwrapError as exc:
                raise ProtocolError("INVALID_ARGUMENT", str(exc)) from exc
            return {"key_ref": key_ref}
        if op == "decrypt":
            key_ref = request.get("key_ref", DEFAULT_KEY_REF)
            if not isinstance(key_ref, str):
                raise ProtocolError("INVALID_ARGUMENT", "key_ref must be a string")
            record = b64_field(request, "record", max_len=MAX_RECORD)
            aad = b64_optional_field(request, "aad", max_len=MAX_RECORD)
            return dict(self.decrypt_with(key_ref, record, aad))
        raise ProtocolError("INVALID_ARGUMENT", "unknown op (expected public_key, attest, unwrap or decrypt)")
