"""Opening AWS KMS's CiphertextForRecipient inside the enclave.

KMS answers a request with a Recipient with a BER-encoded CMS EnvelopedData (RFC 5652): version 2, one
KeyTransRecipientInfo (version 2, rid = subjectKeyIdentifier, the SHA-256 of the recipient's DER public key)
whose content-encryption key is RSAES-OAEP (SHA-256, MGF1-SHA-256, empty label) to the attested key, and the
data key as AES-256-CBC content with PKCS#7 padding (AWS's documentation of CiphertextForRecipient; the AWS
Nitro Enclaves SDK parses the same profile). Exactly that profile is accepted; anything else is refused with
an error that names the part. asn1crypto parses the BER (KMS uses indefinite lengths, which pyasn1 0.6 fails
to decode inside ContentInfo's explicit [0]); `cryptography` does RSA and AES.

Every failure after the structure checks (the RSA step, the content's padding or length) raises the same
error: a parent that relays altered CMS learns nothing from which check failed (no padding oracle; the whole
padding block is compared at once, in constant time).
"""

from __future__ import annotations

import hashlib
import hmac

from asn1crypto import cms  # type: ignore[import-untyped]
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

MAX_CMS = 4096
DATA_KEY_SIZE = 32
BLOCK = 16
CONTENT_SIZE = DATA_KEY_SIZE + BLOCK  # a 32-byte key and a full block of PKCS#7 padding
ENVELOPED_DATA = "1.2.840.113549.1.7.3"
DATA = "1.2.840.113549.1.7.1"
RSAES_OAEP = "1.2.840.113549.1.1.7"
AES256_CBC = "2.16.840.1.101.3.4.1.42"
DOES_NOT_OPEN = "the CMS does not open with this enclave's key"


class CmsError(ValueError):
    """The CMS is not KMS's CiphertextForRecipient for this enclave; the message says why, never a secret."""


def recipient_key_id(public_key_der: bytes) -> bytes:
    """KMS's subjectKeyIdentifier for a recipient: SHA-256 of its DER SubjectPublicKeyInfo."""
    return hashlib.sha256(public_key_der).digest()


def open_data_key(data: bytes, private_key: rsa.RSAPrivateKey, public_key_der: bytes) -> bytes:
    """The 32-byte data key in a CiphertextForRecipient encrypted to this key pair."""
    encrypted_key, iv, content = _parts(data, private_key, public_key_der)
    try:
        cek = private_key.decrypt(encrypted_key, padding.OAEP(mgf=padding.MGF1(hashes.SHA256()),
                                                              algorithm=hashes.SHA256(), label=None))
    except ValueError:
        raise CmsError(DOES_NOT_OPEN) from None
    if len(cek) != DATA_KEY_SIZE:
        raise CmsError(DOES_NOT_OPEN)
    decryptor = Cipher(algorithms.AES(cek), modes.CBC(iv)).decryptor()
    plain = decryptor.update(content) + decryptor.finalize()
    if not hmac.compare_digest(plain[DATA_KEY_SIZE:], bytes([BLOCK]) * BLOCK):
        raise CmsError(DOES_NOT_OPEN)
    return plain[:DATA_KEY_SIZE]


def _parts(data: bytes, private_key: rsa.RSAPrivateKey, public_key_der: bytes) -> tuple[bytes, bytes, bytes]:
    """(encrypted key, IV, encrypted content) of a CMS in KMS's profile for this recipient; CmsError otherwise."""
    if not 0 < len(data) <= MAX_CMS:
        raise CmsError(f"CMS of {len(data)} bytes; 1..{MAX_CMS} expected")
    try:
        info = cms.ContentInfo.load(data, strict=True)
        if info["content_type"].dotted != ENVELOPED_DATA:
            raise CmsError(f"content type {info['content_type'].dotted}, not EnvelopedData")
        enveloped = info["content"]
        if enveloped["version"].native != "v2":
            raise CmsError(f"EnvelopedData {enveloped['version'].native}; KMS sends v2")
        recipients = enveloped["recipient_infos"]
        if len(recipients) != 1 or recipients[0].name != "ktri":
            raise CmsError("exactly one KeyTransRecipientInfo expected")
        recipient = recipients[0].chosen
        if recipient["version"].native != "v2" or recipient["rid"].name != "subject_key_identifier":
            raise CmsError("the recipient must be named by subjectKeyIdentifier (KeyTransRecipientInfo v2)")
        if not hmac.compare_digest(recipient["rid"].chosen.native, recipient_key_id(public_key_der)):
            raise CmsError("encrypted to another recipient: the key identifier is not this enclave's public key")
        _check_oaep(recipient["key_encryption_algorithm"])
        encrypted_key = recipient["encrypted_key"].native
        if len(encrypted_key) != (private_key.key_size + 7) // 8:
            raise CmsError(f"encrypted key of {len(encrypted_key)} bytes for a {private_key.key_size}-bit key")
        content_info = enveloped["encrypted_content_info"]
        if content_info["content_type"].dotted != DATA:
            raise CmsError("the encrypted content type is not id-data")
        algorithm = content_info["content_encryption_algorithm"]
        if algorithm["algorithm"].dotted != AES256_CBC:
            raise CmsError(f"content encryption {algorithm['algorithm'].dotted}, not AES-256-CBC")
        iv = algorithm["parameters"].native
        content = content_info["encrypted_content"].native
    except CmsError:
        raise
    except (ValueError, TypeError, KeyError) as exc:  # asn1crypto's parse errors, raised as fields are read
        raise CmsError(f"malformed CMS: {type(exc).__name__}") from None
    if not isinstance(iv, bytes) or len(iv) != BLOCK:
        raise CmsError("the AES-256-CBC IV must be 16 bytes")
    if not isinstance(content, bytes) or len(content) != CONTENT_SIZE:
        raise CmsError(f"encrypted content of {len(content or b'')} bytes; a 32-byte data key is {CONTENT_SIZE}")
    return encrypted_key, iv, content


def _check_oaep(algorithm: cms.KeyEncryptionAlgorithm) -> None:
    """RSAES-OAEP with SHA-256, MGF1-SHA-256 and the empty label, or CmsError."""
    if algorithm["algorithm"].dotted != RSAES_OAEP:
        raise CmsError(f"key encryption {algorithm['algorithm'].dotted}, not RSAES-OAEP")
    params = algorithm["parameters"].native  # asn1crypto fills in RFC 4055's defaults (SHA-1) where absent
    expected = {"hash_algorithm": {"algorithm": "sha256", "parameters": None},
                "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": {"algorithm": "sha256", "parameters": None}},
                "p_source_algorithm": {"algorithm": "p_specified", "parameters": b""}}
    if params != expected:
        raise CmsError("RSAES-OAEP parameters other than SHA-256, MGF1-SHA-256 and an empty label")
