"""Who is calling: a bearer JWT becomes a `Caller` here, and nowhere else.

The token's `iss` only routes to that issuer's configuration; its `kid` names a
key in that issuer's set alone. Every check is in regate/crypto.py; this module
adds the per-issuer policy (algorithms, `typ`, maximum age, `jti` replay).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from gateway.errors import InvalidToken, MissingToken
from gateway.jwks import KeySource, key_source
from regate import crypto
from regate.settings import IssuerSettings


@dataclass(frozen=True)
class TrustedIssuer:
    issuer: str
    keys: KeySource
    algorithms: tuple[str, ...]
    typ: str | None = None
    max_token_age_s: int = 86400
    require_jti: bool = False


@dataclass(frozen=True)
class Caller:
    """A verified caller: every field comes from a token whose signature checked."""

    sub: str
    iss: str
    claims: Mapping[str, Any]

    @property
    def act(self) -> Mapping[str, Any] | None:
        """The acting party when an agent acts for a user (RFC 8693 `act`)."""
        act = self.claims.get("act")
        return act if isinstance(act, dict) and isinstance(act.get("sub"), str) else None


def load_issuers(
    settings: tuple[IssuerSettings, ...], client: httpx.AsyncClient
) -> dict[str, TrustedIssuer]:
    return {
        s.issuer: TrustedIssuer(
            issuer=s.issuer,
            keys=key_source(s, client),
            algorithms=s.algorithms,
            typ=s.typ,
            max_token_age_s=s.max_token_age_s,
            require_jti=s.require_jti,
        )
        for s in settings
    }


@dataclass
class ReplayCache:
    """(`iss`, `jti`) pairs seen, each kept until its token expires."""

    clock: Callable[[], float] = time.time
    seen: dict[tuple[str, str], float] = field(default_factory=dict)
    max_entries: int = 1_000_000

    def first_use(self, iss: str, jti: str, expires: float) -> bool:
        now = self.clock()
        if len(self.seen) >= self.max_entries // 2:
            self.seen = {k: exp for k, exp in self.seen.items() if exp >= now}
        if len(self.seen) >= self.max_entries:
            return False  # full of live entries: refuse rather than forget (fail closed)
        if (iss, jti) in self.seen:
            return False
        self.seen[(iss, jti)] = expires
        return True


class TokenVerifier:
    def __init__(
        self,
        issuers: Mapping[str, TrustedIssuer],
        *,
        audience: str,
        leeway_s: int,
        replay: ReplayCache | None = None,
    ) -> None:
        if not issuers:
            raise ValueError("no trusted issuers: refusing to verify tokens against nothing")
        self._issuers = dict(issuers)
        self._audience = audience
        self._leeway_s = leeway_s
        self._replay = replay or ReplayCache()

    async def authenticate(self, authorization: str | None) -> Caller:
        """Verify the `Authorization: Bearer` header and return the caller, or raise."""
        if not authorization:
            raise MissingToken("send 'Authorization: Bearer <JWT>' from a trusted issuer")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise InvalidToken("the Authorization header must be 'Bearer <JWT>'")
        token = token.strip()
        try:
            header = crypto.strict_header(token)
            if header.get("typ") in crypto.FOREIGN_TYPES:
                raise InvalidToken(f"a {header['typ']} is not a bearer token")
            # The issuer claim only routes to a key set; the signature check below
            # is what makes it true.
            iss = crypto.strict_claims(token).get("iss")
            issuer = self._issuers.get(iss) if isinstance(iss, str) else None
            if issuer is None:
                raise InvalidToken(f"token issuer {_short(iss)} is not trusted by this gateway")
            key = await issuer.keys.key_for(header.get("kid"))
            claims = crypto.verify_jwt_with_key(
                token,
                key,
                algorithms=issuer.algorithms,
                audience=self._audience,
                issuer=issuer.issuer,
                leeway_s=self._leeway_s,
                max_age_s=issuer.max_token_age_s,
                typ=issuer.typ,
            )
        except crypto.CryptoError as exc:
            raise InvalidToken(str(exc)) from exc
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise InvalidToken("token has no 'sub' claim naming the caller")
        self._check_replay(issuer, claims)
        return Caller(sub=sub, iss=issuer.issuer, claims=claims)

    def _check_replay(self, issuer: TrustedIssuer, claims: Mapping[str, Any]) -> None:
        jti = claims.get("jti")
        if jti is None and not issuer.require_jti:
            return
        if not isinstance(jti, str) or not jti:
            raise InvalidToken("this issuer's tokens must carry a 'jti' (a unique token id)")
        if issuer.require_jti and not self._replay.first_use(issuer.issuer, jti, claims["exp"]):
            raise InvalidToken("token was already used ('jti' replay); mint a new one")


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
