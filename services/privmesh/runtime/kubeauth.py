"""Kubernetes service-account tokens: the way in for callers outside the mesh that have no mesh certificate.

The caller sends `authorization: Bearer <projected token>` on the server's token port (TLS without a client
certificate). The TokenReview API, through the official `kubernetes` client, says whose token it is and for
which audiences; `system:serviceaccount:<ns>:<sa>` becomes spiffe://<trust-domain>/ns/<ns>/sa/<sa>, so the
one authorization policy applies. Only a review that says authenticated, for our audience, admits the caller:
a refusal, an error or an unreachable API server is UNAUTHENTICATED (fail closed). Positive reviews are reused
for a few seconds (never past the token's own `exp`), keyed by the token's SHA-256; the token itself is never
logged or kept.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from privmesh.runtime.config import KubernetesAuthConfig
from privmesh.runtime.errors import Unauthenticated
from privmesh.runtime.identity import SpiffeId

log = logging.getLogger("privmesh.kubeauth")

_SERVICE_ACCOUNT = re.compile(r"^system:serviceaccount:(?P<ns>[a-z0-9\-]{1,63}):(?P<sa>[a-z0-9\-.]{1,253})$")
MAX_TOKEN_BYTES = 16 * 1024  # projected tokens are ~1 KiB; refuse anything absurd before hashing or sending it
MAX_CACHE_ENTRIES = 10_000


def bearer_token(metadata: Any) -> str | None:
    """The bearer token of a call's invocation metadata, or None when there is none (or more than one)."""
    values = [v for k, v in metadata or () if k == "authorization"]
    if len(values) != 1 or not isinstance(values[0], str):
        return None
    scheme, _, token = values[0].partition(" ")
    if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_BYTES:
        return None
    return token.strip()


def _expiry(token: str) -> float | None:
    """The token's `exp` claim (unverified: it only shortens how long a positive review is cached)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        exp = claims.get("exp") if isinstance(claims, dict) else None
        return float(exp) if isinstance(exp, int | float) else None
    except (IndexError, ValueError, binascii.Error, UnicodeDecodeError):
        return None


class TokenReviewer:
    """Turns a service-account token into a SPIFFE principal through TokenReview, or refuses it."""

    def __init__(self, review: Callable[[str, str], Any], audience: str, trust_domain: str,
                 cache_seconds: float, clock: Callable[[], float] = time.time) -> None:
        """`review(token, audience)` makes one TokenReview and returns its status (V1TokenReviewStatus)."""
        self._review = review
        self._audience = audience
        self._trust_domain = trust_domain
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cache: OrderedDict[bytes, tuple[str, float]] = OrderedDict()

    @classmethod
    def from_config(cls, config: KubernetesAuthConfig, trust_domain: str) -> TokenReviewer:
        from kubernetes import client
        from kubernetes import config as kube_config

        configuration = client.Configuration()
        if config.kubeconfig is None:
            kube_config.load_incluster_config(client_configuration=configuration)
        else:
            kube_config.load_kube_config(config_file=str(config.kubeconfig), client_configuration=configuration)
        api_client = client.ApiClient(configuration=configuration)
        api = client.AuthenticationV1Api(api_client)

        def review(token: str, audience: str) -> Any:
            body = client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token, audiences=[audience]))
            return api.create_token_review(body, _request_timeout=5).status

        return cls(review, config.audience, trust_domain, config.cache_seconds)

    def _principal_of(self, status: Any) -> str | None:
        if status is None or status.authenticated is not True or status.error:
            return None
        if self._audience not in (status.audiences or ()):
            return None
        match = _SERVICE_ACCOUNT.match(getattr(status.user, "username", None) or "")
        if match is None:
            return None
        return SpiffeId(self._trust_domain, match["ns"], match["sa"]).uri

    async def principal(self, token: str) -> str:
        """The caller's SPIFFE ID; raises Unauthenticated unless the API server vouches for the token."""
        key = hashlib.sha256(token.encode()).digest()
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            status = await asyncio.to_thread(self._review, token, self._audience)
        except Exception as exc:  # API server unreachable, forbidden, timed out: nobody is admitted
            log.warning("token review failed", extra={"fields": {"error": type(exc).__name__}})
            raise Unauthenticated("TOKEN_REVIEW_FAILED", "the service-account token could not be reviewed") from None
        principal = self._principal_of(status)
        if principal is None:
            raise Unauthenticated("UNAUTHENTICATED_TOKEN",
                                  f"the token is not a valid service-account token for audience {self._audience}")
        expires = now + self._cache_seconds
        exp = _expiry(token)
        if exp is not None:
            expires = min(expires, exp)
        if expires > now:
            self._cache[key] = (principal, expires)
            self._cache.move_to_end(key)
            while len(self._cache) > MAX_CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return principal
