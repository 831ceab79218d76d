"""Each trusted issuer's signing keys: from a JWKS file or an HTTPS URL, cached.

A key is looked up by `kid` in *one issuer's* set only (never "try every key",
never merged across issuers). For a URL:

- fetched with a time and size bound; refreshed every `refresh_s`;
- an unknown `kid` triggers at most one refetch per `cooldown_s` (rotation is
  picked up at once, a storm of made-up kids costs one fetch), and unknown kids
  are remembered for that long;
- through an outage the last good set keeps working for `max_stale_s`; after
  that every token of the issuer is refused (fail closed) until a fetch succeeds.

A file is re-read when its modification time changes, so rotation by file needs
no restart either.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import httpx
import structlog

from regate import crypto
from regate.settings import IssuerSettings

log = structlog.get_logger("regate.jwks")
MAX_JWKS_BYTES = 64 * 1024
FETCH_TIMEOUT_S = 3.0


class KeySource(Protocol):
    async def key_for(self, kid: object) -> crypto.Jwk: ...


class StaticKeys:
    """A fixed key set (tests, and files that never change)."""

    def __init__(self, keys: crypto.KeySet) -> None:
        self.keys = keys

    async def key_for(self, kid: object) -> crypto.Jwk:
        return self.keys.get(kid)


class FileKeys:
    def __init__(self, path: Path, algorithms: tuple[str, ...]) -> None:
        self.path = path
        self.algorithms = algorithms
        self._stamp = self._mtime()
        self._keys = crypto.load_jwks(path, algorithms)

    def _mtime(self) -> int:
        try:
            return self.path.stat().st_mtime_ns
        except OSError:
            return -1

    async def key_for(self, kid: object) -> crypto.Jwk:
        stamp = self._mtime()
        if stamp != self._stamp:
            try:
                self._keys = crypto.load_jwks(self.path, self.algorithms)
                self._stamp = stamp
                log.info("jwks_reloaded", source=str(self.path))
            except crypto.CryptoError as exc:
                log.error("jwks_reload_failed", source=str(self.path), error=str(exc))
        return self._keys.get(kid)


class UrlKeys:
    def __init__(
        self,
        url: str,
        algorithms: tuple[str, ...],
        client: httpx.AsyncClient,
        *,
        refresh_s: float,
        cooldown_s: float,
        max_stale_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.algorithms = algorithms
        self.client = client
        self.refresh_s = refresh_s
        self.cooldown_s = cooldown_s
        self.max_stale_s = max_stale_s
        self.clock = clock
        self.fetches = 0
        self._keys: crypto.KeySet | None = None
        self._fetched_at = float("-inf")  # last success
        self._tried_at = float("-inf")  # last attempt
        self._unknown: dict[str, float] = {}
        self._lock = asyncio.Lock()

    async def key_for(self, kid: object) -> crypto.Jwk:
        now = self.clock()
        if self._keys is None or now - self._fetched_at > self.refresh_s:
            await self._refresh()
        elif (
            isinstance(kid, str)
            and kid not in self._keys.keys
            and now - self._unknown.get(kid, float("-inf")) >= self.cooldown_s
        ):
            await self._refresh()  # maybe a rotation: look once (per cool-down)
            if self._keys is not None and kid not in self._keys.keys:
                if len(self._unknown) > 10_000:
                    self._unknown.clear()  # bounded memory under a kid storm
                self._unknown[kid] = self.clock()
        keys = self._keys
        if keys is None:
            raise crypto.CryptoError(f"the issuer's keys at {self.url} could not be fetched")
        if self.clock() - self._fetched_at > self.max_stale_s:
            raise crypto.CryptoError(
                f"the issuer's keys at {self.url} are older than {self.max_stale_s:g} s and"
                " cannot be refreshed; refusing its tokens until they can"
            )
        return keys.get(kid)

    async def _refresh(self) -> None:
        async with self._lock:  # one fetch at a time; latecomers reuse its result
            if self.clock() - self._tried_at < self.cooldown_s:
                return
            self._tried_at = self.clock()
            self.fetches += 1
            try:
                keys = await self._fetch()
            except (httpx.HTTPError, crypto.CryptoError, ValueError) as exc:
                log.error("jwks_fetch_failed", url=self.url, error=str(exc))
                return
            self._keys, self._fetched_at = keys, self.clock()
            self._unknown.clear()
            log.info("jwks_fetched", url=self.url, kids=sorted(keys.keys))

    async def _fetch(self) -> crypto.KeySet:
        async with self.client.stream(
            "GET", self.url, timeout=FETCH_TIMEOUT_S, follow_redirects=False
        ) as response:
            if response.status_code != 200:
                raise crypto.CryptoError(f"JWKS fetch answered HTTP {response.status_code}")
            body = b""
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise crypto.CryptoError(f"JWKS is larger than {MAX_JWKS_BYTES} bytes")
        return crypto.parse_jwks(json.loads(body), self.algorithms, self.url)


def key_source(issuer: IssuerSettings, client: httpx.AsyncClient) -> KeySource:
    if issuer.jwks_url:
        return UrlKeys(
            issuer.jwks_url,
            issuer.algorithms,
            client,
            refresh_s=issuer.jwks_refresh_s,
            cooldown_s=issuer.jwks_cooldown_s,
            max_stale_s=issuer.jwks_max_stale_s,
        )
    assert issuer.jwks_file is not None
    return FileKeys(issuer.jwks_file, issuer.algorithms)
