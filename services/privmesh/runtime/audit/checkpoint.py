"""Checkpoints as C2SP signed notes (c2sp.org/signed-note, tlog-checkpoint, tlog-cosignature).

A checkpoint is the note text "<origin>\\n<size>\\n<base64 root>\\n", signed by the log's Ed25519 key
(signature type 0x01) and cosigned by witnesses (type 0x04, "cosignature/v1" with a timestamp). Any
tlog tool (Go's golang.org/x/mod/sumdb/note, sigsum, the transparency-dev witness) can check them. No
maintained Python package implements the format, hence this module; it is small and follows the specs'
text.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ED25519 = 0x01
COSIGNATURE_V1 = 0x04
MAX_NOTE_BYTES = 64 * 1024
MAX_SIGNATURES = 64
DASH = "\u2014 "


class NoteError(ValueError):
    """The text is not a well-formed signed note or checkpoint."""


@dataclass(frozen=True)
class Signature:
    name: str
    key_id: bytes
    signature: bytes

    def line(self) -> str:
        return f"{DASH}{self.name} {base64.b64encode(self.key_id + self.signature).decode()}\n"


@dataclass(frozen=True)
class Note:
    text: str
    signatures: tuple[Signature, ...]

    def render(self) -> str:
        return self.text + "\n" + "".join(s.line() for s in self.signatures)


@dataclass(frozen=True)
class TreeHead:
    origin: str
    size: int
    root: bytes

    def text(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(name: str, signature_type: int, key: Ed25519PublicKey) -> bytes:
    """SHA-256(name || 0x0A || type || public key)[:4], as signed-note and tlog-cosignature define it."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([signature_type]) + raw_public_key(key)).digest()[:4]


def vkey(name: str, key: Ed25519PublicKey, signature_type: int = ED25519) -> str:
    """The verifier key string "<name>+<hex key id>+<base64(type || key)>" (signed-note §Verifier keys)."""
    encoded = base64.b64encode(bytes([signature_type]) + raw_public_key(key)).decode()
    return f"{name}+{key_id(name, signature_type, key).hex()}+{encoded}"


def _check_name(name: str) -> None:
    if not name or any(c.isspace() or c == "+" for c in name):
        raise NoteError(f"key name {name!r} is empty or has a space or '+'")


def parse_note(note: str) -> Note:
    """Splits a signed note into its text and signature lines; raises NoteError if it is malformed."""
    if len(note.encode()) > MAX_NOTE_BYTES:
        raise NoteError(f"the note exceeds {MAX_NOTE_BYTES} bytes")
    if any(ord(c) < 0x20 and c != "\n" for c in note):
        raise NoteError("the note has a control character")
    cut = note.rfind("\n\n")
    if cut < 0 or not note.endswith("\n"):
        raise NoteError("the note has no blank line before its signatures")
    text, lines = note[:cut + 1], note[cut + 2:].splitlines()
    if not lines or len(lines) > MAX_SIGNATURES:
        raise NoteError(f"the note must carry 1..{MAX_SIGNATURES} signatures")
    signatures = []
    for line in lines:
        name, sep, encoded = line.removeprefix(DASH).rpartition(" ")
        if not line.startswith(DASH) or not sep:
            raise NoteError("a signature line is not '\u2014 <name> <base64>'")
        _check_name(name)
        try:
            raw = base64.b64decode(encoded, validate=True)
        except binascii.Error as exc:
            raise NoteError("a signature is not base64") from exc
        if len(raw) < 5:
            raise NoteError("a signature is too short")
        signatures.append(Signature(name, raw[:4], raw[4:]))
    return Note(text, tuple(signatures))


def parse_checkpoint(text: str) -> TreeHead:
    """The origin, size and root of a checkpoint's note text (extension lines are allowed and ignored)."""
    lines = text.split("\n")
    if len(lines) < 4 or lines[-1] != "" or not lines[0]:
        raise NoteError("a checkpoint needs an origin, a size and a root hash line")
    size_line, root_line = lines[1], lines[2]
    if not size_line.isdigit() or (size_line != "0" and size_line.startswith("0")):
        raise NoteError("the checkpoint's size is not a decimal without leading zeroes")
    try:
        root = base64.b64decode(root_line, validate=True)
    except binascii.Error as exc:
        raise NoteError("the checkpoint's root hash is not base64") from exc
    if len(root) != 32:
        raise NoteError("the checkpoint's root hash is not 32 bytes")
    return TreeHead(lines[0], int(size_line), root)


def sign(text: str, name: str, key: Ed25519PrivateKey) -> Signature:
    _check_name(name)
    return Signature(name, key_id(name, ED25519, key.public_key()), key.sign(text.encode()))


def _cosigned_message(text: str, timestamp: int) -> bytes:
    return f"cosignature/v1\ntime {timestamp}\n{text}".encode()


def cosign(text: str, name: str, key: Ed25519PrivateKey, timestamp: int) -> Signature:
    """A witness's timestamped cosignature of a checkpoint text (tlog-cosignature, Ed25519)."""
    _check_name(name)
    signature = key.sign(_cosigned_message(text, timestamp))
    return Signature(name, key_id(name, COSIGNATURE_V1, key.public_key()), struct.pack(">Q", timestamp) + signature)


def _matching(note: Note, name: str, kid: bytes) -> list[Signature]:
    return [s for s in note.signatures if s.name == name and s.key_id == kid]


def signed_by(note: Note, name: str, key: Ed25519PublicKey) -> bool:
    """True if the note carries a valid signature from (name, key); a bad one from that key is False."""
    found = _matching(note, name, key_id(name, ED25519, key))
    for signature in found:
        try:
            key.verify(signature.signature, note.text.encode())
        except InvalidSignature:
            return False
    return bool(found)


def cosigned_at(note: Note, name: str, key: Ed25519PublicKey) -> int | None:
    """The timestamp of (name, key)'s valid cosignature on the note, or None if it has none or a bad one."""
    found = _matching(note, name, key_id(name, COSIGNATURE_V1, key))
    if len(found) != 1 or len(found[0].signature) != 72:
        return None
    timestamp = struct.unpack(">Q", found[0].signature[:8])[0]
    try:
        key.verify(found[0].signature[8:], _cosigned_message(note.text, timestamp))
    except InvalidSignature:
        return None
    return int(timestamp)


def log_origin(trust_domain: str, service: str) -> str:
    """A service's log origin and key name, e.g. "privmesh.local/audit/key-broker"."""
    return f"{trust_domain}/audit/{service}"


def witness_name(trust_domain: str, service: str) -> str:
    """A service's cosigner name, e.g. "privmesh.local/witness/key-broker"."""
    return f"{trust_domain}/witness/{service}"
