"""The sandbox runner client: hand over a grant and the arguments, get a run result.

Over aiohttp, as the OPA client (gateway/sidecar_http.py says why).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import aiohttp
import structlog

from gateway.errors import RunnerUnavailable

log = structlog.get_logger("regate.runner_client")

# Time the runner may take beyond the tool's own timeout (sandbox start, teardown).
OVERHEAD_S = 10.0


class RunnerClient:
    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self._session = session
        self._base_url = base_url.rstrip("/")

    async def run(
        self, grant: str, arguments: Mapping[str, Any], *, tool_timeout_s: float
    ) -> dict[str, Any]:
        try:
            status, body = await self._exchange(
                "POST",
                "/v1/run",
                deadline_s=tool_timeout_s + OVERHEAD_S,
                data=json.dumps({"arguments": arguments}).encode(),
                headers={"Authorization": f"Bearer {grant}", "Content-Type": "application/json"},
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.error("runner_unreachable", error=f"{type(exc).__name__}: {exc}")
            raise RunnerUnavailable(
                "the sandbox runner could not be reached; the tool did not run", cause="unreachable"
            ) from exc
        if status != 200 or not _is_result(body):
            log.error("runner_error", status=status, body=str(body)[:500])
            raise RunnerUnavailable(
                "the sandbox runner refused or failed the run; the tool's result is unknown",
                cause="runner_error",
            )
        assert isinstance(body, dict)
        return body

    async def healthy(self) -> bool:
        try:
            status, _ = await self._exchange("GET", "/healthz", deadline_s=QUICK_S)
        except (aiohttp.ClientError, TimeoutError):
            return False
        return status == 200

    async def tools(self) -> dict[str, Any]:
        """The runner's `GET /v1/tools`: sandbox, summary and every tool's state and counts."""
        try:
            status, body = await self._exchange("GET", "/v1/tools", deadline_s=QUICK_S)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.error("runner_unreachable", error=f"{type(exc).__name__}: {exc}")
            raise RunnerUnavailable(
                "the sandbox runner could not be reached for its tool list", cause="unreachable"
            ) from exc
        if status != 200 or not isinstance(body, dict):
            log.error("runner_error", status=status, body=str(body)[:500])
            raise RunnerUnavailable(
                "the sandbox runner did not give its tool list", cause="runner_error"
            )
        return body

    async def tool_health(self) -> dict[str, Any] | None:
        """The runner's sandbox and tool-state summary, or None if it cannot say."""
        try:
            status, body = await self._exchange("GET", "/v1/tools", deadline_s=QUICK_S)
        except (aiohttp.ClientError, TimeoutError):
            return None
        if status != 200 or not isinstance(body, dict):
            return None
        return {"sandbox": body.get("sandbox"), "tools": body.get("summary")}

    async def _exchange(
        self, method: str, path: str, *, deadline_s: float, **kwargs: Any
    ) -> tuple[int, Any]:
        """The status and the JSON body (None if the body is not JSON), within
        `deadline_s` for the whole exchange (and 2 s to connect)."""
        async with asyncio.timeout(deadline_s):
            async with self._session.request(
                method, self._base_url + path, timeout=_CONNECT, **kwargs
            ) as response:
                raw = await response.read()
                status = response.status
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, None


QUICK_S = 2.0  # health and tool lists
_CONNECT = aiohttp.ClientTimeout(total=None, sock_connect=2.0)


def _is_result(body: Any) -> bool:
    return (
        isinstance(body, dict)
        and isinstance(body.get("ok"), bool)
        and ("result" in body or "error" in body)
        and isinstance(body.get("metrics", {}), dict)
    )
