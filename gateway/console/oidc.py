"""The console's OpenID Connect client: the one module that talks to the identity provider.

Authorization code flow with PKCE (S256), `state` and `nonce`, through authlib. The
provider's endpoints come from its discovery document, whose `issuer` must equal the
configured one (OIDC Discovery §4.3). The ID token is checked here, once: signature
against the provider's JWKS with the algorithms from settings (never from the token
header), then `iss`, `aud`, `exp`, `iat`, `nonce` and `at_hash` by authlib's claims
rules. Every failure becomes `SignInFailed` with a message fit for the log; the
provider's own words never reach the page.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx2
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from regate.settings import OidcSettings

DISCOVERY_TTL_S = 3600.0
LEEWAY_S = 60


class SignInFailed(Exception):
    """The provider's answer could not be trusted or used; `reason` is for the log."""

    def __init__(self, reason: str, *, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class ProviderUnavailable(SignInFailed):
    def __init__(self, reason: str) -> None:
        super().__init__(reason, status=503)


@dataclass(frozen=True)
class LoginStart:
    """What the browser is sent to, and what must come back with it (kept in a cookie)."""

    url: str
    state: str
    nonce: str
    code_verifier: str


class OidcClient:
    def __init__(
        self,
        settings: OidcSettings,
        client_secret: str,
        *,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self._http = AsyncOAuth2Client(
            client_id=settings.client_id,
            client_secret=client_secret,
            token_endpoint_auth_method="client_secret_basic",  # noqa: S106 (a method name)
            scope=" ".join(settings.scopes),
            redirect_uri=settings.redirect_uri,
            code_challenge_method="S256",
            timeout=settings.timeout_s,
            follow_redirects=False,
            transport=transport,
        )
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = 0.0
        self._keys: KeySet | None = None

    async def aclose(self) -> None:
        await self._http.aclose()

    async def begin(self) -> LoginStart:
        """A fresh authorization request: new state, nonce and PKCE verifier."""
        metadata = await self._discover()
        state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(64)
        url, _ = self._http.create_authorization_url(
            metadata["authorization_endpoint"],
            state=state,
            nonce=nonce,
            code_verifier=verifier,
        )
        return LoginStart(url=url, state=state, nonce=nonce, code_verifier=verifier)

    async def finish(self, code: str, *, nonce: str, code_verifier: str) -> dict[str, Any]:
        """Exchange `code` (PKCE-bound) for tokens; the verified ID token's claims."""
        metadata = await self._discover()
        try:
            token = await self._http.fetch_token(
                metadata["token_endpoint"],
                grant_type="authorization_code",
                code=code,
                code_verifier=code_verifier,
            )
        except httpx2.HTTPError as exc:
            raise ProviderUnavailable(f"token endpoint unreachable: {exc!r}") from exc
        except Exception as exc:  # authlib's OAuthError and friends: a refused exchange
            raise SignInFailed(f"the provider refused the code exchange: {exc}") from exc
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise SignInFailed("the token response holds no id_token (is 'openid' a scope?)")
        return await self._verify_id_token(id_token, nonce, token.get("access_token"))

    async def _verify_id_token(
        self, id_token: str, nonce: str, access_token: str | None
    ) -> dict[str, Any]:
        algorithms = list(self.settings.id_token_algorithms)
        try:
            decoded = jwt.decode(id_token, await self._key_set(), algorithms=algorithms)
        except JoseError as first:
            # An unknown kid may mean the provider rotated its keys: fetch them once more.
            self._keys = None
            try:
                decoded = jwt.decode(id_token, await self._key_set(), algorithms=algorithms)
            except JoseError as exc:
                raise SignInFailed(f"the ID token's signature does not verify: {exc}") from first
        params: dict[str, Any] = {"nonce": nonce, "client_id": self.settings.client_id}
        if access_token:
            params["access_token"] = access_token
        claims = CodeIDToken(
            decoded.claims,
            decoded.header,
            {
                "iss": {"essential": True, "value": self.settings.issuer},
                "aud": {"essential": True, "value": self.settings.client_id},
                "sub": {"essential": True},
            },
            params,
        )
        try:
            claims.validate(now=int(time.time()), leeway=LEEWAY_S)
        except JoseError as exc:
            raise SignInFailed(f"the ID token's claims are not valid: {exc}") from exc
        return dict(claims)

    async def _discover(self) -> Mapping[str, Any]:
        fresh = time.monotonic() - self._metadata_at < DISCOVERY_TTL_S
        if self._metadata is not None and fresh:
            return self._metadata
        url = self.settings.issuer + "/.well-known/openid-configuration"
        metadata = await self._get_json(url, "discovery document")
        if metadata.get("issuer") != self.settings.issuer:
            raise SignInFailed(
                f"the discovery document at {url} names issuer {metadata.get('issuer')!r},"
                f" not the configured {self.settings.issuer!r}",
                status=502,
            )
        for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not isinstance(metadata.get(key), str):
                raise SignInFailed(f"the discovery document has no {key}", status=502)
        self._metadata, self._metadata_at = metadata, time.monotonic()
        return metadata

    async def _key_set(self) -> KeySet:
        if self._keys is None:
            metadata = await self._discover()
            document = await self._get_json(metadata["jwks_uri"], "key set")
            try:
                self._keys = KeySet.import_key_set(document)  # type: ignore[arg-type]
            except (JoseError, ValueError, KeyError, TypeError) as exc:
                raise SignInFailed(
                    f"the provider's key set is unusable: {exc}", status=502
                ) from exc
        return self._keys

    async def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            response = await self._http.request("GET", url, withhold_token=True)
        except httpx2.HTTPError as exc:
            raise ProviderUnavailable(f"{what} at {url} unreachable: {exc!r}") from exc
        if response.status_code != 200:
            raise ProviderUnavailable(f"{what} at {url} answered {response.status_code}")
        try:
            body = response.json()
        except ValueError as exc:
            raise SignInFailed(f"{what} at {url} is not JSON", status=502) from exc
        if not isinstance(body, dict):
            raise SignInFailed(f"{what} at {url} is not a JSON object", status=502)
        return body
