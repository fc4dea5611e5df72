"""Service-account tokens checked by TokenReview on the real kube-apiserver: tokens from TokenRequest (valid,
for another audience), an expired one (a real token's claims re-signed by the cluster's own key with a past
`exp`), a reviewer the API server forbids or cannot reach; then the same through a server's token port."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from kubernetes import client

from privmesh.runtime import echo
from privmesh.runtime.config import KubernetesAuthConfig
from privmesh.runtime.errors import ServiceError, read_error
from privmesh.runtime.kubeauth import TokenReviewer
from privmesh.runtime.pki import DevPki
from privmesh.runtime.ports import free_loopback_port
from tests.conftest import server_config
from tests.k8s.cluster import NOBODY_TOKEN, ControlPlane

pytestmark = pytest.mark.slow

CLIENTS = "clients"
CALLER = "spiffe://privmesh.local/ns/clients/sa/caller"
ECHO = "/privmesh.testing.v1.Echo/Echo"


@pytest.fixture(scope="module")
def accounts(api: Any) -> client.CoreV1Api:
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=CLIENTS)))
    for name in ("caller", "stranger"):
        core.create_namespaced_service_account(CLIENTS, client.V1ServiceAccount(
            metadata=client.V1ObjectMeta(name=name)))
    return core


def token_for(core: client.CoreV1Api, sa: str, audience: str) -> str:
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[audience], expiration_seconds=600))
    status = core.create_namespaced_service_account_token(sa, CLIENTS, request).status
    assert status is not None
    return str(status.token)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def resigned(token: str, key_file: Path, **claims: Any) -> str:
    """`token`'s header and claims, with `claims` changed, signed RS256 by the cluster's service-account key."""
    header, payload, _ = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body.update(claims)
    signing_input = f"{header}.{_b64(json.dumps(body).encode())}".encode()
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return f"{signing_input.decode()}.{_b64(key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256()))}"


def reviewer(kubeconfig: Path, cache_seconds: float = 10) -> TokenReviewer:
    config = KubernetesAuthConfig(listen="127.0.0.1:0", audience="privmesh", cache_seconds=cache_seconds,
                                  kubeconfig=kubeconfig)
    return TokenReviewer.from_config(config, "privmesh.local")


async def refused(tokens: TokenReviewer, token: str) -> str:
    with pytest.raises(ServiceError) as error:
        await tokens.principal(token)
    assert error.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert token not in str(error.value)
    return str(error.value.reason)


async def test_a_valid_token_maps_to_the_service_accounts_spiffe_id(control_plane: ControlPlane, accounts) -> None:
    tokens = reviewer(control_plane.kubeconfig())
    assert await tokens.principal(token_for(accounts, "caller", "privmesh")) == CALLER


async def test_a_token_for_another_audience_is_refused(control_plane: ControlPlane, accounts) -> None:
    tokens = reviewer(control_plane.kubeconfig())
    assert await refused(tokens, token_for(accounts, "caller", "vault")) == "UNAUTHENTICATED_TOKEN"


async def test_an_expired_token_is_refused(control_plane: ControlPlane, accounts) -> None:
    tokens = reviewer(control_plane.kubeconfig(), cache_seconds=0)
    real = token_for(accounts, "caller", "privmesh")
    now = int(time.time())
    # The control: the same claims re-signed with a future expiry still pass, so the refusal below is the expiry.
    assert await tokens.principal(resigned(real, control_plane.signing_key_file, exp=now + 300)) == CALLER
    expired = resigned(real, control_plane.signing_key_file, iat=now - 1200, nbf=now - 1200, exp=now - 600)
    assert await refused(tokens, expired) == "UNAUTHENTICATED_TOKEN"


async def test_garbage_and_forged_tokens_are_refused(control_plane: ControlPlane, accounts) -> None:
    tokens = reviewer(control_plane.kubeconfig())
    assert await refused(tokens, "not-a-token") == "UNAUTHENTICATED_TOKEN"
    other_key = control_plane.root / "other.key"
    other_key.write_bytes(rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    forged = resigned(token_for(accounts, "caller", "privmesh"), other_key)
    assert await refused(tokens, forged) == "UNAUTHENTICATED_TOKEN"


async def test_a_review_that_cannot_be_made_fails_closed(control_plane: ControlPlane, accounts) -> None:
    token = token_for(accounts, "caller", "privmesh")
    forbidden = reviewer(control_plane.kubeconfig(NOBODY_TOKEN, "nobody"))  # may not create tokenreviews
    assert await refused(forbidden, token) == "TOKEN_REVIEW_FAILED"
    down = control_plane.kubeconfig().read_text().replace(control_plane.url, f"https://127.0.0.1:{free_loopback_port()}")
    unreachable = control_plane.root / "kubeconfig-down"
    unreachable.write_text(down)
    assert await refused(reviewer(unreachable), token) == "TOKEN_REVIEW_FAILED"


async def test_positive_reviews_are_cached_briefly(control_plane: ControlPlane, accounts) -> None:
    tokens = reviewer(control_plane.kubeconfig(), cache_seconds=1)
    calls: list[str] = []
    real_review = tokens._review

    def counted(token: str, audience: str) -> Any:  # the real review, counted
        calls.append(audience)
        return real_review(token, audience)

    tokens._review = counted
    token = token_for(accounts, "caller", "privmesh")
    assert [await tokens.principal(token) for _ in range(3)] == [CALLER] * 3
    assert len(calls) == 1
    await asyncio.sleep(1.1)
    assert await tokens.principal(token) == CALLER
    assert len(calls) == 2


async def test_token_port_of_a_server(control_plane: ControlPlane, accounts, pki: DevPki, tmp_path: Path,
                                      start_server) -> None:
    rules = [{"name": "caller-echo", "principals": [CALLER], "methods": ["privmesh.testing.v1.Echo/Echo"]}]
    config = server_config(tmp_path, pki, rules, {"database": f"sqlite:///{tmp_path / 'echo.db'}"},
                           kubernetes_auth={"listen": "127.0.0.1:0", "audience": "privmesh", "cache_seconds": 5,
                                            "kubeconfig": str(control_plane.kubeconfig())})
    server = await start_server(echo.DEFINITION, config)
    assert server.token_port not in (0, server.port)
    tls = grpc.ssl_channel_credentials(root_certificates=pki.bundle("server").ca_file.read_bytes())

    async def call(token: str | None) -> bytes:
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        async with grpc.aio.secure_channel(f"localhost:{server.token_port}", tls) as channel:
            return bytes(await channel.unary_unary(ECHO)(b"hi", metadata=metadata, timeout=10))

    assert await call(token_for(accounts, "caller", "privmesh")) == b"hi"
    for token, code, reason in (
            (None, grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED_PEER"),
            (token_for(accounts, "caller", "vault"), grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED_TOKEN"),
            (token_for(accounts, "stranger", "privmesh"), grpc.StatusCode.PERMISSION_DENIED,
             "PERMISSION_DENIED_BY_POLICY")):
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call(token)
        assert (error.value.code(), read_error(error.value).reason) == (code, reason)
    # The mTLS port still demands a client certificate: a token alone does not get through the handshake.
    async with grpc.aio.secure_channel(f"localhost:{server.port}", tls) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await channel.unary_unary(ECHO)(b"hi", metadata=(("authorization", "Bearer x"),), timeout=10)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
