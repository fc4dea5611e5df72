"""The local backend's keystore: key material per (key id, version) in one file sealed under a root key.

File: magic "PMKS1" | 12-byte nonce | AES-256-GCM(root key, JSON {key_id: {version: material hex}}). Every
write re-seals the whole file with a fresh nonce and replaces it atomically (write, fsync, rename), so a
destroyed version's material is gone from the current file at once (crypto-shredding). The root key comes
from an environment variable (base64) or a file (created 0600 when absent) and is never logged.

One process owns a keystore file (the embedded default runs one broker); PostgreSQL deployments use aws-kms.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import threading
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"PMKS1"
ROOT_KEY_SIZE = 32


class KeystoreError(Exception):
    """The keystore or the root key cannot be read (wrong root key, corrupt file, bad variable)."""


def load_root_key(path: Path | None, env_var: str | None) -> bytes:
    """The root key: from `env_var` (base64 of 32 bytes) when set, else from `path` (created when absent)."""
    if env_var:
        raw = os.environ.get(env_var)
        if raw is None:
            raise KeystoreError(f"environment variable {env_var} is not set")
        try:
            key = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise KeystoreError(f"{env_var} is not base64") from None
        if len(key) != ROOT_KEY_SIZE:
            raise KeystoreError(f"{env_var} must hold {ROOT_KEY_SIZE} bytes")
        return key
    if path is None:
        raise KeystoreError("neither root_key_file nor root_key_env is configured")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("xb") as handle:
            path.chmod(0o600)
            handle.write(secrets.token_bytes(ROOT_KEY_SIZE))
    key = path.read_bytes()
    if len(key) != ROOT_KEY_SIZE:
        raise KeystoreError(f"{path} must hold exactly {ROOT_KEY_SIZE} bytes")
    return key


class Keystore:
    """A sealed map of entry name -> bytes (the backend names entries, e.g. "<key id>/<version>")."""

    def __init__(self, path: Path, root_key: bytes) -> None:
        self._path = path
        self._aead = AESGCM(root_key)
        self._lock = threading.Lock()
        self._entries: dict[str, bytes] = self._load()

    def _load(self) -> dict[str, bytes]:
        if not self._path.exists():
            return {}
        sealed = self._path.read_bytes()
        if sealed[:len(MAGIC)] != MAGIC:
            raise KeystoreError(f"{self._path} is not a privmesh keystore")
        nonce, body = sealed[len(MAGIC):len(MAGIC) + 12], sealed[len(MAGIC) + 12:]
        try:
            data = json.loads(self._aead.decrypt(nonce, body, MAGIC))
        except InvalidTag:
            raise KeystoreError(f"{self._path} does not open under the configured root key") from None
        return {name: bytes.fromhex(value) for name, value in data.items()}

    def _save(self, entries: dict[str, bytes]) -> None:
        body = json.dumps({name: value.hex() for name, value in entries.items()}).encode()
        nonce = os.urandom(12)
        tmp = self._path.with_suffix(".tmp")
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("wb") as handle:
            tmp.chmod(0o600)
            handle.write(MAGIC + nonce + self._aead.encrypt(nonce, body, MAGIC))
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(self._path)
        self._entries = entries

    def get(self, name: str) -> bytes | None:
        return self._entries.get(name)

    def update(self, put: dict[str, bytes] | None = None, remove: list[str] | tuple[str, ...] = ()) -> None:
        """Puts and removes entries in one atomic rewrite of the file."""
        with self._lock:
            entries = dict(self._entries)
            entries.update(put or {})
            for name in remove:
                entries.pop(name, None)
            self._save(entries)
