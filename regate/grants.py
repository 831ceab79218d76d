"""Execution grants: the gateway's signed permission for the runner to run one call.

A grant names the decision, the agent and tool, the entrypoint from the verified
manifest, the effective limits and the sha256 of the exact arguments, and expires
within seconds. The runner runs nothing without one.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from regate import crypto

GRANT_TYP = "regate-grant+jwt"
GRANT_ISSUER = "regate-gateway"
GRANT_AUDIENCE = "regate-runner"


class GrantError(Exception):
    """The grant is missing, forged, expired or does not match the call."""


@dataclass(frozen=True)
class Grant:
    decision_id: str
    agent_id: str
    tool: str
    entrypoint: tuple[str, ...]
    limits: Mapping[str, int | float]
    arguments_sha256: str
    expires_at: int


def load_or_create_grant_key(private_path: Path) -> crypto.Jwk:
    """The gateway's grant key; made on first start, with its public JWKS beside it."""
    name = private_path.name.removesuffix(".private.jwk")
    if not private_path.exists():
        crypto.write_key_pair(private_path.parent, name)
    return crypto.load_private_key(private_path)


class GrantKeys:
    """The runner's view of the gateway's public grant keys, re-read when the file changes.

    Read on use rather than at start, so the runner can start before the gateway
    has made its key, and picks up a rotated key without a restart.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stamp: tuple[int, int] | None = None
        self._keys: crypto.KeySet | None = None

    def current(self) -> crypto.KeySet:
        try:
            stat = self._path.stat()
        except OSError as exc:
            raise GrantError(f"no grant keys at {self._path} yet; start the gateway first") from exc
        stamp = (stat.st_mtime_ns, stat.st_size)
        if self._keys is None or stamp != self._stamp:
            try:
                self._keys = crypto.load_jwks(self._path, ["ES256"])
            except crypto.CryptoError as exc:
                raise GrantError(f"grant keys unusable: {exc}") from exc
            self._stamp = stamp
        return self._keys


def issue_grant(
    *,
    decision_id: str,
    agent_id: str,
    tool: str,
    entrypoint: Sequence[str],
    limits: Mapping[str, int | float],
    arguments_sha256: str,
    key: crypto.Jwk,
    ttl_s: int,
    now: float | None = None,
) -> str:
    issued = int(now if now is not None else time.time())
    claims = {
        "iss": GRANT_ISSUER,
        "aud": GRANT_AUDIENCE,
        "sub": f"{agent_id}.{tool}",
        "jti": decision_id,
        "iat": issued,
        "exp": issued + ttl_s,
        "agent_id": agent_id,
        "tool": tool,
        "entrypoint": list(entrypoint),
        "limits": dict(limits),
        "args_sha256": arguments_sha256,
    }
    return crypto.sign_jwt(claims, key, typ=GRANT_TYP)


def verify_grant(token: str, keys: crypto.KeySet, *, leeway_s: int = 2) -> Grant:
    try:
        claims = crypto.verify_jwt(
            token,
            keys,
            algorithms=["ES256"],
            audience=GRANT_AUDIENCE,
            issuer=GRANT_ISSUER,
            leeway_s=leeway_s,
            typ=GRANT_TYP,
        )
    except crypto.CryptoError as exc:
        raise GrantError(f"grant rejected: {exc}") from exc
    return _grant_from(claims)


def _grant_from(claims: Mapping[str, Any]) -> Grant:
    def field(name: str, kind: type) -> Any:
        value = claims.get(name)
        if not isinstance(value, kind):
            raise GrantError(f"grant claim {name!r} is missing or not a {kind.__name__}")
        return value

    entrypoint = field("entrypoint", list)
    if not entrypoint or not all(isinstance(p, str) for p in entrypoint):
        raise GrantError("grant claim 'entrypoint' must be a non-empty list of strings")
    return Grant(
        decision_id=field("jti", str),
        agent_id=field("agent_id", str),
        tool=field("tool", str),
        entrypoint=tuple(entrypoint),
        limits=field("limits", dict),
        arguments_sha256=field("args_sha256", str),
        expires_at=field("exp", int),
    )
