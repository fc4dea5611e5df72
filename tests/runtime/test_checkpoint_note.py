"""C2SP signed notes, checkpoints and cosignatures: interoperable with Go's golang.org/x/mod/sumdb/note
(its published test key and note verify here), and every malformed or forged input is refused."""

from __future__ import annotations

import base64
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from privmesh.runtime.audit import checkpoint as notes

# The verifier key and signed note of golang.org/x/mod/sumdb/note's tests.
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_NOTE = ("If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n\n"
           "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqd"
           "ngotpRZb6KE6RyyBwJnAM=\n")


def test_the_go_reference_note_verifies_and_its_vkey_is_reproduced() -> None:
    raw = base64.b64decode(GO_VKEY.split("+")[2])
    key = Ed25519PublicKey.from_public_bytes(raw[1:])
    assert notes.vkey("PeterNeumann", key) == GO_VKEY
    assert notes.signed_by(notes.parse_note(GO_NOTE), "PeterNeumann", key)
    forged = GO_NOTE.replace("cryptography", "blockchain")
    assert not notes.signed_by(notes.parse_note(forged), "PeterNeumann", key)


def test_checkpoint_round_trip_and_cosignature_message() -> None:
    log_key, witness_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    head = notes.TreeHead("example.test/audit/svc", 20852163, bytes(range(32)))
    text = head.text()
    cosignature = notes.cosign(text, "example.test/witness/w", witness_key, 1679315147)
    note = notes.parse_note(notes.Note(text, (notes.sign(text, head.origin, log_key), cosignature)).render())
    assert notes.parse_checkpoint(note.text) == head
    assert notes.signed_by(note, head.origin, log_key.public_key())
    assert notes.cosigned_at(note, "example.test/witness/w", witness_key.public_key()) == 1679315147
    # tlog-cosignature: key ID with type 0x04, and the signed message spelled out by the spec.
    assert cosignature.key_id == notes.key_id("example.test/witness/w", 0x04, witness_key.public_key())
    assert struct.unpack(">Q", cosignature.signature[:8])[0] == 1679315147
    witness_key.public_key().verify(cosignature.signature[8:],
                                    b"cosignature/v1\ntime 1679315147\n" + text.encode())
    # a log signature is not a cosignature, nor the other way round
    assert notes.cosigned_at(note, head.origin, log_key.public_key()) is None
    assert not notes.signed_by(note, "example.test/witness/w", witness_key.public_key())


@pytest.mark.parametrize("note", [
    "",
    "no blank line\n\u2014 k AAAAAAA=\n",
    "text\n\n",
    "text\n\n- k AAAAAAA=\n",
    "text\n\n\u2014 k not-base64!\n",
    "text\n\n\u2014 k+x AAAAAAA=\n",
    "text\x07\n\n\u2014 k AAAAAAA=\n",
    "text\n\n\u2014 k AAA=\n",
])
def test_malformed_notes_are_refused(note: str) -> None:
    with pytest.raises(notes.NoteError):
        notes.parse_note(note)


@pytest.mark.parametrize("text", ["origin\n12\n", "origin\n012\nAAAA\n", "origin\n-1\n" + "A" * 44 + "\n",
                                  "origin\n1\nAAAA\n", "\n1\n" + base64.b64encode(bytes(32)).decode() + "\n"])
def test_malformed_checkpoints_are_refused(text: str) -> None:
    with pytest.raises(notes.NoteError):
        notes.parse_checkpoint(text)
