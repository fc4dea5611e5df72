"""Result tokens: a minted token verifies for its audience and issuer only, within its lifetime, untampered,
and only as ES256; the JWK Set carries the RFC 7638 thumbprint as kid."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey

from privmesh.attestation.document import AttestationDocument, parse_document
from privmesh.attestation.policy import Claims, claims_of
from privmesh.sdk.attestation.tokens import (
    InvalidResultToken,
    ResultTokenIssuer,
    UnsupportedEnclaveKey,
    enclave_jwk,
    verify_result_token,
)

ISSUER = "spiffe://privmesh.local/ns/privmesh/sa/attestation-verifier"
AUDIENCE = "spiffe://privmesh.local/ns/privmesh/sa/key-broker"
NOW = datetime(2024, 9, 7, 14, 38, tzinfo=timezone.utc)
DOC_SHA = "ab" * 32


def spki(key: Any) -> bytes:
    return key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def issuer() -> ResultTokenIssuer:
    return ResultTokenIssuer(ec.generate_private_key(ec.SECP256R1()), ISSUER)


@pytest.fixture(scope="module")
def enclave_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def claims() -> Claims:
    # Synthetic, so the token tests run without ../shared/testdata/nitro.
    return Claims(
        module_id="i-0123456789abcdef0-enc0123456789abcdef", digest="SHA384", timestamp=NOW,
        pcrs={i: bytes([i]) * 48 for i in range(16)}, public_key=None, user_data=None, nonce=b"\x07" * 32,
        debug_mode=False, certificate_sha256="cd" * 32,
    )


@pytest.fixture(scope="module")
def doc(production_raw: bytes) -> AttestationDocument:
    return parse_document(production_raw)


def mint(issuer: ResultTokenIssuer, claims: Claims, enclave_key: Any, now: datetime = NOW) -> str:
    token, _ = issuer.mint(claims, AUDIENCE, "prod-enclave", DOC_SHA, spki(enclave_key), now)
    return token


def check(token: str, minted_by: ResultTokenIssuer, now: datetime = NOW, **kwargs: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"jwks": minted_by.jwks(), "audience": AUDIENCE, "issuer": ISSUER, "now": now}
    args.update(kwargs)
    return verify_result_token(token, **args)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_round_trip(issuer: ResultTokenIssuer, claims: Claims, enclave_key: rsa.RSAPrivateKey) -> None:
    token, expires = issuer.mint(claims, AUDIENCE, "prod-enclave", DOC_SHA, spki(enclave_key), NOW)
    assert expires == NOW + timedelta(minutes=5)
    got = check(token, issuer)
    assert got["iss"] == ISSUER and got["aud"] == AUDIENCE and got["sub"] == claims.module_id
    assert got["iat"] == got["nbf"] == int(NOW.timestamp())
    assert got["exp"] == int(expires.timestamp())
    assert got["policy"] == "prod-enclave" and got["document_sha256"] == DOC_SHA
    assert got["pcrs"] == {str(i): v.hex() for i, v in claims.pcrs.items()}
    numbers = enclave_key.public_key().public_numbers()
    jwk = got["cnf"]["jwk"]
    assert jwk["kty"] == "RSA" and "d" not in jwk
    assert int.from_bytes(base64.urlsafe_b64decode(jwk["n"] + "=="), "big") == numbers.n
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header["alg"] == "ES256" and header["kid"] == issuer.kid


def test_jti_is_unique(issuer: ResultTokenIssuer, claims: Claims, enclave_key: rsa.RSAPrivateKey) -> None:
    jtis = {check(mint(issuer, claims, enclave_key), issuer)["jti"] for _ in range(5)}
    assert len(jtis) == 5


def test_ec_enclave_key(issuer: ResultTokenIssuer, claims: Claims) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    jwk = check(mint(issuer, claims, key), issuer)["cnf"]["jwk"]
    assert jwk["kty"] == "EC" and jwk["crv"] == "P-384" and "d" not in jwk


def test_jwks_kid_is_the_rfc7638_thumbprint(issuer: ResultTokenIssuer) -> None:
    (key,) = issuer.jwks()["keys"]
    assert "d" not in key and key["kty"] == "EC" and key["crv"] == "P-256"
    required = json.dumps({m: key[m] for m in ("crv", "kty", "x", "y")}, separators=(",", ":"), sort_keys=True)
    assert key["kid"] == b64(hashlib.sha256(required.encode()).digest()) == issuer.kid
    json.dumps(issuer.jwks())  # serialisable as the GetVerificationKeys response


@pytest.mark.parametrize("public_key", [
    b"\x01" * 1024,                                    # what the real documents carry
    b"",
    b"\x04" + b"\x11" * 64,                            # a raw EC point, not an SPKI
])
def test_unusable_enclave_keys(public_key: bytes) -> None:
    with pytest.raises(UnsupportedEnclaveKey):
        enclave_jwk(public_key)


def test_weak_or_unsupported_enclave_keys() -> None:
    with pytest.raises(UnsupportedEnclaveKey, match="2048"):
        enclave_jwk(spki(rsa.generate_private_key(public_exponent=65537, key_size=1024)))
    with pytest.raises(UnsupportedEnclaveKey, match="unsupported"):
        enclave_jwk(spki(ed25519.Ed25519PrivateKey.generate()))
    with pytest.raises(UnsupportedEnclaveKey, match="unsupported"):
        enclave_jwk(spki(ec.generate_private_key(ec.SECP256K1())))


def test_real_document_public_key_cannot_be_bound(issuer: ResultTokenIssuer, doc: AttestationDocument) -> None:
    assert doc.public_key is not None
    with pytest.raises(UnsupportedEnclaveKey):
        issuer.mint(claims_of(doc), AUDIENCE, "p", DOC_SHA, doc.public_key, NOW)


def test_wrong_audience(issuer: ResultTokenIssuer, claims: Claims, enclave_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(InvalidResultToken, match="aud"):
        check(mint(issuer, claims, enclave_key), issuer, audience="spiffe://privmesh.local/ns/x/sa/other")


def test_wrong_issuer(issuer: ResultTokenIssuer, claims: Claims, enclave_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(InvalidResultToken, match="iss"):
        check(mint(issuer, claims, enclave_key), issuer, issuer="spiffe://elsewhere/ns/x/sa/verifier")


def test_lifetime_and_leeway(issuer: ResultTokenIssuer, claims: Claims, enclave_key: rsa.RSAPrivateKey) -> None:
    token = mint(issuer, claims, enclave_key)
    check(token, issuer, now=NOW + timedelta(minutes=5, seconds=30))  # within the 30 s leeway
    check(token, issuer, now=NOW - timedelta(seconds=30))
    with pytest.raises(InvalidResultToken, match="ExpiredToken"):
        check(token, issuer, now=NOW + timedelta(minutes=5, seconds=31))
    with pytest.raises(InvalidResultToken):
        check(token, issuer, now=NOW - timedelta(minutes=1))  # not yet valid
    with pytest.raises(InvalidResultToken):
        check(token, issuer, now=NOW + timedelta(minutes=6), leeway=timedelta(0))


def test_tampered_payload(issuer: ResultTokenIssuer, claims: Claims, enclave_key: rsa.RSAPrivateKey) -> None:
    header, payload, signature = mint(issuer, claims, enclave_key).split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=="))
    body["policy"] = "lenient-policy"
    with pytest.raises(InvalidResultToken, match="BadSignature"):
        check(".".join([header, b64(json.dumps(body).encode()), signature]), issuer)


def test_tampered_signature(issuer: ResultTokenIssuer, claims: Claims, enclave_key: rsa.RSAPrivateKey) -> None:
    header, payload, signature = mint(issuer, claims, enclave_key).split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=="))
    raw[10] ^= 1
    with pytest.raises(InvalidResultToken):
        check(".".join([header, payload, b64(bytes(raw))]), issuer)


def test_alg_none_refused(issuer: ResultTokenIssuer, claims: Claims, enclave_key: rsa.RSAPrivateKey) -> None:
    _, payload, _ = mint(issuer, claims, enclave_key).split(".")
    for header in ({"alg": "none", "typ": "JWT"}, {"alg": "none", "kid": issuer.kid}, {"alg": "None"}):
        token = ".".join([b64(json.dumps(header).encode()), payload, ""])
        with pytest.raises(InvalidResultToken):
            check(token, issuer)


def test_hs256_with_the_public_key_as_secret_refused(issuer: ResultTokenIssuer, claims: Claims,
                                                     enclave_key: rsa.RSAPrivateKey) -> None:
    # Algorithm confusion: an attacker HMACs with the published key material as the secret.
    good = check(mint(issuer, claims, enclave_key), issuer)
    secret = OctKey.import_key(json.dumps(issuer.jwks()["keys"][0]).encode())
    forged = jwt.encode({"alg": "HS256", "kid": issuer.kid}, good, secret, algorithms=["HS256"])
    with pytest.raises(InvalidResultToken):
        check(forged, issuer)


def test_token_from_another_key_with_the_same_kid(issuer: ResultTokenIssuer, claims: Claims,
                                                  enclave_key: rsa.RSAPrivateKey) -> None:
    good = check(mint(issuer, claims, enclave_key), issuer)
    impostor = ECKey.import_key(ec.generate_private_key(ec.SECP256R1()))
    forged = jwt.encode({"alg": "ES256", "kid": issuer.kid}, good, impostor, algorithms=["ES256"])
    with pytest.raises(InvalidResultToken, match="BadSignature"):
        check(forged, issuer)


def test_jwks_of_another_issuer(issuer: ResultTokenIssuer, claims: Claims, enclave_key: rsa.RSAPrivateKey) -> None:
    other = ResultTokenIssuer(ec.generate_private_key(ec.SECP256R1()), ISSUER)
    with pytest.raises(InvalidResultToken):
        check(mint(issuer, claims, enclave_key), issuer, jwks=other.jwks())


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "a.b", "..", "eyJhbGciOiJFUzI1NiJ9.e30.AAAA"])
def test_garbage_tokens(issuer: ResultTokenIssuer, token: str) -> None:
    with pytest.raises(InvalidResultToken):
        check(token, issuer)


def test_missing_claims_refused(issuer: ResultTokenIssuer, claims: Claims, enclave_key: rsa.RSAPrivateKey) -> None:
    good = check(mint(issuer, claims, enclave_key), issuer)
    for missing in ("exp", "sub", "jti", "cnf"):
        body = {k: v for k, v in good.items() if k != missing}
        token = jwt.encode({"alg": "ES256", "kid": issuer.kid}, body, issuer._key, algorithms=["ES256"])
        with pytest.raises(InvalidResultToken):
            check(token, issuer)


def test_issuer_arguments() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(ValueError, match="P-256"):
        ResultTokenIssuer(ec.generate_private_key(ec.SECP384R1()), ISSUER)
    with pytest.raises(ValueError, match="issuer"):
        ResultTokenIssuer(key, "")
    for ttl in (timedelta(0), timedelta(hours=2)):
        with pytest.raises(ValueError, match="ttl"):
            ResultTokenIssuer(key, ISSUER, ttl)


def test_mint_arguments(issuer: ResultTokenIssuer, claims: Claims, enclave_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(ValueError, match="audience"):
        issuer.mint(claims, "", "p", DOC_SHA, spki(enclave_key), NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        issuer.mint(claims, AUDIENCE, "p", DOC_SHA, spki(enclave_key), datetime(2024, 9, 7))


def test_custom_ttl(claims: Claims, enclave_key: rsa.RSAPrivateKey) -> None:
    short = ResultTokenIssuer(ec.generate_private_key(ec.SECP256R1()), ISSUER, timedelta(seconds=30))
    token, expires = short.mint(claims, AUDIENCE, "p", DOC_SHA, spki(enclave_key), NOW)
    assert expires == NOW + timedelta(seconds=30)
    assert check(token, short)["exp"] - check(token, short)["iat"] == 30
