"""Attestation result tokens: short-lived compact JWS (ES256) JWTs that carry the verdict's claims and bind
the enclave's public key (RFC 7800 `cnf.jwk`), so the key broker can release a key wrapped to that key
without verifying the document again. Built on joserfc; nothing JOSE is hand-rolled here.

Shared: the attestation verifier mints these tokens, the key broker verifies them.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol, cast

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, KeySetSerialization, RSAKey

ALGORITHM = "ES256"
DEFAULT_TTL = timedelta(minutes=5)
MAX_TTL = timedelta(hours=1)
DEFAULT_LEEWAY = timedelta(seconds=30)
MIN_RSA_BITS = 2048
_ENCLAVE_CURVES = frozenset({"secp256r1", "secp384r1", "secp521r1"})


class TokenSubject(Protocol):
    """What a token says about the enclave: its module and PCRs (the verifier's parsed claims satisfy it)."""

    @property
    def module_id(self) -> str: ...

    @property
    def pcrs(self) -> Mapping[int, bytes]: ...


class UnsupportedEnclaveKey(ValueError):
    """The document's public_key is not a DER SubjectPublicKeyInfo of an RSA (>= 2048) or EC key."""


class InvalidResultToken(ValueError):
    """A result token failed verification (signature, algorithm, audience, issuer, time or shape)."""


def enclave_jwk(public_key_der: bytes) -> dict[str, Any]:
    """The enclave's public key (DER SubjectPublicKeyInfo, RSA or EC) as a public JWK (RFC 7517)."""
    try:
        key = load_der_public_key(public_key_der)
    except (ValueError, TypeError) as exc:
        raise UnsupportedEnclaveKey(f"not a DER SubjectPublicKeyInfo: {exc}") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise UnsupportedEnclaveKey(f"RSA key of {key.key_size} bits; at least {MIN_RSA_BITS} required")
        return dict(RSAKey.import_key(key).as_dict(private=False))
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _ENCLAVE_CURVES:
        return dict(ECKey.import_key(key).as_dict(private=False))
    raise UnsupportedEnclaveKey(f"unsupported key type {type(key).__name__}")


def _aware(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise ValueError("`now` must be timezone-aware")
    return now


class ResultTokenIssuer:
    """Mints result tokens with one P-256 key whose `kid` is its RFC 7638 thumbprint."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey, issuer: str, ttl: timedelta = DEFAULT_TTL) -> None:
        if not isinstance(private_key, ec.EllipticCurvePrivateKey) or private_key.curve.name != "secp256r1":
            raise ValueError("the signing key must be an EC P-256 private key (ES256)")
        if not issuer:
            raise ValueError("issuer must not be empty")
        if not timedelta(0) < ttl <= MAX_TTL:
            raise ValueError(f"ttl must be positive and at most {MAX_TTL}")
        kid = ECKey.import_key(private_key.public_key()).thumbprint()
        self._key = ECKey.import_key(private_key, parameters={"kid": kid, "use": "sig", "alg": ALGORITHM})
        self.kid = kid
        self.issuer = issuer
        self.ttl = ttl

    def mint(
        self,
        claims: TokenSubject,
        audience: str,
        policy: str,
        document_sha256: str,
        public_key_der: bytes,
        now: datetime,
    ) -> tuple[str, datetime]:
        """Returns (compact JWS, expire time). Raises UnsupportedEnclaveKey when the document's public key
        cannot be expressed as a JWK (then no key can be released to the enclave anyway)."""
        if not audience:
            raise ValueError("audience must not be empty")
        issued = int(_aware(now).timestamp())
        expires = issued + int(self.ttl.total_seconds())
        payload = {
            "iss": self.issuer,
            "aud": audience,
            "sub": claims.module_id,
            "iat": issued,
            "nbf": issued,
            "exp": expires,
            "jti": secrets.token_urlsafe(16),
            "policy": policy,
            "pcrs": {str(i): v.hex() for i, v in sorted(claims.pcrs.items())},
            "document_sha256": document_sha256,
            "cnf": {"jwk": enclave_jwk(public_key_der)},
        }
        header = {"alg": ALGORITHM, "kid": self.kid}
        token = jwt.encode(header, payload, self._key, algorithms=[ALGORITHM])
        return token, datetime.fromtimestamp(expires, tz=timezone.utc)

    def jwks(self) -> dict[str, Any]:
        """The public JWK Set that verifies this issuer's tokens (for GetVerificationKeys)."""
        public = ECKey.import_key(self._key.public_key, parameters={"kid": self.kid, "use": "sig",
                                                                     "alg": ALGORITHM})
        return {"keys": [dict(public.as_dict(private=False))]}


def verify_result_token(
    token: str,
    jwks: Mapping[str, Any],
    audience: str,
    issuer: str,
    now: datetime,
    leeway: timedelta = DEFAULT_LEEWAY,
) -> dict[str, Any]:
    """Verifies a result token for the key broker and returns its claims; only ES256 is accepted (so
    `alg: none` and algorithm confusion fail), and aud, iss, exp, nbf and iat are checked at `now`."""
    try:
        key_set = KeySet.import_key_set(cast(KeySetSerialization, dict(jwks)))
        decoded = jwt.decode(token, key_set, algorithms=[ALGORITHM])
        if decoded.header.get("alg") != ALGORITHM:
            raise InvalidResultToken(f"algorithm {decoded.header.get('alg')!r} is not {ALGORITHM}")
        registry = jwt.JWTClaimsRegistry(
            now=int(_aware(now).timestamp()),
            leeway=int(leeway.total_seconds()),
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": audience},
            sub={"essential": True},
            iat={"essential": True},
            nbf={"essential": True},
            exp={"essential": True},
            jti={"essential": True},
            cnf={"essential": True},
        )
        registry.validate(decoded.claims)
    except InvalidResultToken:
        raise
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise InvalidResultToken(f"{type(exc).__name__}: {exc}") from None
    claims = dict(decoded.claims)
    cnf = claims.get("cnf")
    if not isinstance(cnf, dict) or not isinstance(cnf.get("jwk"), dict):
        raise InvalidResultToken("cnf.jwk (the enclave's key) is missing")
    return claims
