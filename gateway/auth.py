"""Who is calling: a bearer JWT becomes a `Caller` here, and nowhere else."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.errors import InvalidToken, MissingToken
from regate import crypto
from regate.settings import IssuerSettings


@dataclass(frozen=True)
class TrustedIssuer:
    issuer: str
    keys: crypto.KeySet
    algorithms: tuple[str, ...]


@dataclass(frozen=True)
class Caller:
    """A verified caller: every field comes from a token whose signature checked."""

    sub: str
    iss: str
    claims: Mapping[str, Any]

    @property
    def act(self) -> Mapping[str, Any] | None:
        act = self.claims.get("act")
        return act if isinstance(act, dict) and isinstance(act.get("sub"), str) else None


def load_issuers(settings: tuple[IssuerSettings, ...]) -> dict[str, TrustedIssuer]:
    return {
        s.issuer: TrustedIssuer(
            issuer=s.issuer,
            keys=crypto.load_jwks(s.jwks_file, s.algorithms),
            algorithms=s.algorithms,
        )
        for s in settings
    }


class TokenVerifier:
    def __init__(
        self, issuers: Mapping[str, TrustedIssuer], *, audience: str, leeway_s: int
    ) -> None:
        if not issuers:
            raise ValueError("no trusted issuers: refusing to verify tokens against nothing")
        self._issuers = dict(issuers)
        self._audience = audience
        self._leeway_s = leeway_s

    def authenticate(self, authorization: str | None) -> Caller:
        """Verify the `Authorization: Bearer` header and return the caller, or raise."""
        if not authorization:
            raise MissingToken("send 'Authorization: Bearer <JWT>' from a trusted issuer")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise InvalidToken("the Authorization header must be 'Bearer <JWT>'")
        token = token.strip()
        try:
            # The issuer claim only routes to a key set; the signature check below
            # is what makes it true.
            iss = crypto.unverified_claims(token).get("iss")
            issuer = self._issuers.get(iss) if isinstance(iss, str) else None
            if issuer is None:
                raise InvalidToken(f"token issuer {_short(iss)} is not trusted by this gateway")
            claims = crypto.verify_jwt(
                token,
                issuer.keys,
                algorithms=issuer.algorithms,
                audience=self._audience,
                issuer=issuer.issuer,
                leeway_s=self._leeway_s,
            )
        except crypto.CryptoError as exc:
            raise InvalidToken(str(exc)) from exc
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise InvalidToken("token has no 'sub' claim naming the caller")
        return Caller(sub=sub, iss=issuer.issuer, claims=claims)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
