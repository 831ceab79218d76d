"""Signed cookies: the console session, and the sign-in in progress.

A value is `base64url(json).base64url(hmac-sha256)`, keyed by a subkey of the cookie
secret per purpose, so a login cookie can never pass for a session. Nothing in them is
secret from the browser that holds them (HttpOnly keeps them from scripts); what
matters is that nobody can make or alter one. Sessions carry their own clock: `iat`
bounds the absolute lifetime, `seen` the idle time (refreshed as the admin works).
Signed cookies let several gateway replicas share sessions through the one secret; a
logout is remembered by the replica that served it until the session would have
expired anyway (docs/admin.md).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import stat
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from regate.settings import ConfigError

Role = Literal["admin", "viewer"]
MIN_SECRET_BYTES = 32
REFRESH_AFTER_S = 60  # re-issue the cookie (new `seen`) at most once a minute


class BadCookie(Exception):
    """Not a cookie we made, or one that has expired; `reason` is for the log."""

    def __init__(self, reason: str, *, expired: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.expired = expired


def read_secret_file(path: Path, key: str, *, min_bytes: int = 1) -> bytes:
    """A secret from a file only its owner can read; a clear `ConfigError` otherwise."""
    try:
        mode = path.stat().st_mode
        value = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"{key} {path}: cannot read it ({exc.strerror})") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{key} {path} is readable by other users; chmod 600 it")
    if len(value) < min_bytes:
        raise ConfigError(
            f"{key} {path} holds {len(value)} bytes; it needs at least {min_bytes}"
            " (e.g. `openssl rand -hex 32 > FILE`)"
        )
    return value


def subkey(secret: bytes, purpose: str) -> bytes:
    return hmac.new(secret, b"regate-console:" + purpose.encode(), hashlib.sha256).digest()


class Signer:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def sign(self, payload: dict[str, Any]) -> str:
        body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
        return body + "." + _b64(self._mac(body))

    def unsign(self, value: str) -> dict[str, Any]:
        body, dot, mac = value.partition(".")
        if not dot or not hmac.compare_digest(_b64(self._mac(body)), mac):
            raise BadCookie("signature does not match")
        try:
            payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except ValueError as exc:
            raise BadCookie("payload is not JSON") from exc
        if not isinstance(payload, dict):
            raise BadCookie("payload is not an object")
        return payload

    def _mac(self, body: str) -> bytes:
        return hmac.new(self._key, body.encode(), hashlib.sha256).digest()


@dataclass(frozen=True)
class Session:
    sid: str
    sub: str
    name: str
    role: Role
    iat: int  # signed in at
    seen: int  # last refreshed at


class Sessions:
    """Issue, check, refresh and revoke sessions. `now` is injected for the tests."""

    def __init__(
        self,
        secret: bytes,
        *,
        idle_s: int,
        max_s: int,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._signer = Signer(subkey(secret, "session"))
        self.idle_s, self.max_s = idle_s, max_s
        self._now = now
        self._revoked: dict[str, int] = {}  # sid -> when it would have expired anyway

    def issue(self, *, sub: str, name: str, role: Role) -> tuple[Session, str]:
        now = int(self._now())
        session = Session(secrets.token_urlsafe(24), sub, name, role, now, now)
        return session, self._signer.sign(asdict(session))

    def load(self, value: str) -> Session:
        payload = self._signer.unsign(value)
        try:
            session = Session(**payload)
        except TypeError as exc:
            raise BadCookie("not a session") from exc
        if session.role not in ("admin", "viewer"):
            raise BadCookie("unknown role")
        now = int(self._now())
        if now - session.iat >= self.max_s:
            raise BadCookie("session reached its maximum lifetime", expired=True)
        if now - session.seen >= self.idle_s:
            raise BadCookie("session idle for too long", expired=True)
        if session.sid in self._revoked:
            raise BadCookie("session was signed out", expired=True)
        return session

    def refreshed(self, session: Session) -> str | None:
        """A new cookie value with `seen` = now, or None if the old one is recent enough."""
        now = int(self._now())
        if now - session.seen < REFRESH_AFTER_S:
            return None
        return self._signer.sign(asdict(session) | {"seen": now})

    def revoke(self, session: Session) -> None:
        now = int(self._now())
        self._revoked = {sid: end for sid, end in self._revoked.items() if end > now}
        self._revoked[session.sid] = session.iat + self.max_s


class LoginCookies:
    """The sign-in in progress: state, nonce, PKCE verifier and where to go after."""

    def __init__(
        self, secret: bytes, *, ttl_s: int = 600, now: Callable[[], float] = time.time
    ) -> None:
        self._signer = Signer(subkey(secret, "login"))
        self.ttl_s = ttl_s
        self._now = now

    def make(self, *, state: str, nonce: str, code_verifier: str, next_path: str) -> str:
        return self._signer.sign(
            {
                "state": state,
                "nonce": nonce,
                "verifier": code_verifier,
                "next": next_path,
                "iat": int(self._now()),
            }
        )

    def load(self, value: str) -> dict[str, str]:
        payload = self._signer.unsign(value)
        fields = ("state", "nonce", "verifier", "next")
        if not all(isinstance(payload.get(k), str) for k in fields):
            raise BadCookie("not a login cookie")
        iat = payload.get("iat")
        if not isinstance(iat, int) or int(self._now()) - iat >= self.ttl_s:
            raise BadCookie("sign-in took too long", expired=True)
        return {k: payload[k] for k in fields}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
