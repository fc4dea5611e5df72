"""framing.write_message: every frame layout (empty, partial, exact multiples of the frame, signed and
unsigned suites) decrypts with the SDK's own decryptor, has the SDK's length, and any altered byte of a
frame is refused."""

from __future__ import annotations

import io
import os

import pytest
from aws_encryption_sdk.exceptions import AWSEncryptionSDKClientError
from cryptography.exceptions import InvalidTag

from privmesh.sdk.keybroker import messages
from privmesh.sdk.keybroker.framing import write_message

FRAME = 128
DATA_KEY = os.urandom(32)
KEY = messages.master_key("keys/test", messages.Wrapping(lambda context: (DATA_KEY, b"blob"), None,
                                                         lambda blob, context: DATA_KEY))
CONTEXT = {"tenant": "t1"}


def _encrypt(plaintext: bytes, suite: str) -> bytes:
    source, out = io.BytesIO(plaintext), io.BytesIO()
    with messages.SDK.stream(mode="e", source=source, encryption_context=CONTEXT, algorithm=messages.SUITES[suite],
                             frame_length=FRAME, key_provider=KEY) as stream:
        written = write_message(stream, source, out)
    assert written == len(out.getvalue())
    return out.getvalue()


def _sdk_encrypt(plaintext: bytes, suite: str) -> bytes:
    ciphertext, _ = messages.SDK.encrypt(source=plaintext, encryption_context=CONTEXT, key_provider=KEY,
                                         algorithm=messages.SUITES[suite], frame_length=FRAME)
    return bytes(ciphertext)


@pytest.mark.parametrize("suite", sorted(messages.SUITES))
@pytest.mark.parametrize("size", [0, 1, FRAME - 1, FRAME, FRAME + 1, 3 * FRAME, 3 * FRAME + 77])
def test_messages_decrypt_with_the_sdk_and_have_its_layout(suite: str, size: int) -> None:
    plaintext = os.urandom(size)
    ciphertext = _encrypt(plaintext, suite)
    decrypted, header = messages.SDK.decrypt(source=ciphertext, key_provider=KEY)
    assert decrypted == plaintext and header.frame_length == FRAME
    assert {k: v for k, v in header.encryption_context.items() if k in CONTEXT} == CONTEXT
    if "ECDSA" not in suite:  # a signature's DER encoding varies by a byte or two
        assert len(ciphertext) == len(_sdk_encrypt(plaintext, suite))


@pytest.mark.parametrize("suite", sorted(messages.SUITES))
def test_an_altered_frame_is_refused(suite: str) -> None:
    ciphertext = bytearray(_encrypt(os.urandom(2 * FRAME + 5), suite))
    for offset in (len(ciphertext) // 2, len(ciphertext) - 120):
        altered = bytearray(ciphertext)
        altered[offset] ^= 1
        with pytest.raises((AWSEncryptionSDKClientError, InvalidTag)):  # the SDK lets a frame's InvalidTag out
            messages.SDK.decrypt(source=bytes(altered), key_provider=KEY)
