"""The console's ID token checks (gateway/console/oidc.py), against forged provider answers.

The happy path runs against a real provider in tests/integration/test_console_sso.py;
the tokens here are the ones a real provider will not produce on demand: wrong nonce,
audience, issuer, algorithm or key, expired, or none at all. The provider is an
httpx.MockTransport handed to the client (no sockets).
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2 as httpx  # the HTTP library authlib uses
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, RSAKey

from gateway.console.oidc import OidcClient, ProviderUnavailable, SignInFailed
from regate.settings import OidcSettings

ISSUER = "https://login.example.com"
SETTINGS = OidcSettings(
    issuer=ISSUER,
    client_id="regate-console",
    client_secret_file=Path("/unused"),
    console_url="https://admin.example.com",
    cookie_secret_file=Path("/unused"),
    admin_groups=("regate-admins",),
    viewer_groups=(),
    id_token_algorithms=("RS256",),
)
KEY = RSAKey.generate_key(2048, parameters={"kid": "k1"})
OTHER_KEY = RSAKey.generate_key(2048, parameters={"kid": "k1"})
EC_KEY = ECKey.generate_key("P-256", parameters={"kid": "e1"})


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "iss": ISSUER,
        "sub": "u-1",
        "aud": "regate-console",
        "exp": now + 300,
        "iat": now,
        "nonce": "the-nonce",
        "groups": ["regate-admins"],
    }
    return {k: v for k, v in (base | changes).items() if v is not None}


def signed(payload: dict[str, Any], key: Any = KEY, alg: str = "RS256") -> str:
    return jwt.encode({"alg": alg, "kid": key.kid}, payload, key, algorithms=[alg])


class Provider:
    def __init__(self, id_token: str | None, issuer: str = ISSUER) -> None:
        self.id_token, self.issuer = id_token, issuer
        self.token_requests: list[dict[str, list[str]]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/.well-known/openid-configuration":
            return httpx.Response(
                200,
                json={
                    "issuer": self.issuer,
                    "authorization_endpoint": f"{ISSUER}/auth",
                    "token_endpoint": f"{ISSUER}/token",
                    "jwks_uri": f"{ISSUER}/jwks",
                },
            )
        if path == "/jwks":
            return httpx.Response(
                200, json={"keys": [KEY.as_dict(private=False), EC_KEY.as_dict(private=False)]}
            )
        if path == "/token":
            self.token_requests.append(urllib.parse.parse_qs(request.content.decode()))
            body: dict[str, Any] = {"access_token": "at", "token_type": "Bearer"}
            if self.id_token is not None:
                body["id_token"] = self.id_token
            return httpx.Response(200, json=body)
        return httpx.Response(404)


def finish(provider: Provider, nonce: str = "the-nonce") -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        client = OidcClient(SETTINGS, "client-secret", transport=httpx.MockTransport(provider))
        try:
            return await client.finish("the-code", nonce=nonce, code_verifier="v" * 64)
        finally:
            await client.aclose()

    return asyncio.run(run())


def test_a_good_id_token_gives_its_claims_and_the_code_exchange_carries_pkce() -> None:
    provider = Provider(signed(claims()))
    assert finish(provider)["groups"] == ["regate-admins"]
    sent = provider.token_requests[0]
    assert sent["code"] == ["the-code"]
    assert sent["code_verifier"] == ["v" * 64]
    assert sent["grant_type"] == ["authorization_code"]
    assert sent["redirect_uri"] == ["https://admin.example.com/auth/callback"]


# Built when the test runs, not at collection: a token signed then could expire
# before a long suite reaches it.
BAD_TOKENS = [
    pytest.param(lambda: signed(claims(nonce="another")), "nonce", id="wrong-nonce"),
    pytest.param(lambda: signed(claims(nonce=None)), "nonce", id="no-nonce"),
    pytest.param(lambda: signed(claims(aud="another-client")), "aud", id="wrong-audience"),
    pytest.param(lambda: signed(claims(iss="https://evil.example")), "iss", id="wrong-issuer"),
    pytest.param(lambda: signed(claims(exp=int(time.time()) - 600)), "expired", id="expired"),
    pytest.param(lambda: signed(claims(sub=None)), "sub", id="no-subject"),
    pytest.param(lambda: signed(claims(), key=OTHER_KEY), "signature", id="signed-by-another-key"),
    pytest.param(lambda: signed(claims(), key=EC_KEY, alg="ES256"), "signature", id="algorithm-not-allowed"),
    pytest.param(lambda: signed(claims(), key=OctKey.import_key("s" * 32, {"kid": "k1"}), alg="HS256"), "signature", id="hmac-confusion"),
    pytest.param(lambda: "not.a.token", "signature", id="garbage"),
]  # fmt: skip


@pytest.mark.parametrize(("token", "why"), BAD_TOKENS)
def test_a_bad_id_token_fails_the_sign_in(token: Callable[[], str], why: str) -> None:
    with pytest.raises(SignInFailed) as caught:
        finish(Provider(token()))
    assert why in caught.value.reason.lower() or why in str(caught.value.__cause__).lower()


def test_no_id_token_fails_the_sign_in() -> None:
    with pytest.raises(SignInFailed, match="no id_token"):
        finish(Provider(None))


def test_discovery_must_name_the_configured_issuer() -> None:
    with pytest.raises(SignInFailed, match="names issuer") as caught:
        finish(Provider(signed(claims()), issuer="https://evil.example"))
    assert caught.value.status == 502


def test_an_unreachable_provider_is_a_503() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async def run() -> None:
        client = OidcClient(SETTINGS, "s", transport=httpx.MockTransport(down))
        try:
            await client.begin()
        finally:
            await client.aclose()

    with pytest.raises(ProviderUnavailable) as caught:
        asyncio.run(run())
    assert caught.value.status == 503


def test_begin_makes_a_fresh_pkce_request_each_time() -> None:
    async def run() -> list[Any]:
        client = OidcClient(SETTINGS, "s", transport=httpx.MockTransport(Provider(None)))
        try:
            return [await client.begin(), await client.begin()]
        finally:
            await client.aclose()

    first, second = asyncio.run(run())
    assert first.state != second.state
    assert first.nonce != second.nonce
    assert first.code_verifier != second.code_verifier
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(first.url).query)
    assert query["code_challenge_method"] == ["S256"]
    assert query["state"] == [first.state]
    assert query["nonce"] == [first.nonce]
    assert query["client_id"] == ["regate-console"]
    assert query["response_type"] == ["code"]
    assert json.dumps(query).count(first.code_verifier) == 0  # only its hash is sent
