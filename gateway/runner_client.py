"""The sandbox runner client: hand over a grant and the arguments, get a run result."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import structlog

from gateway.errors import RunnerUnavailable

log = structlog.get_logger("regate.runner_client")

# Time the runner may take beyond the tool's own timeout (sandbox start, teardown).
OVERHEAD_S = 10.0


class RunnerClient:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def run(
        self, grant: str, arguments: Mapping[str, Any], *, tool_timeout_s: float
    ) -> dict[str, Any]:
        try:
            response = await self._client.post(
                "/v1/run",
                json={"arguments": arguments},
                headers={"Authorization": f"Bearer {grant}"},
                timeout=httpx.Timeout(tool_timeout_s + OVERHEAD_S, connect=2.0),
            )
        except httpx.HTTPError as exc:
            log.error("runner_unreachable", error=f"{type(exc).__name__}: {exc}")
            raise RunnerUnavailable(
                "the sandbox runner could not be reached; the tool did not run", cause="unreachable"
            ) from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code != 200 or not _is_result(body):
            log.error("runner_error", status=response.status_code, body=str(body)[:500])
            raise RunnerUnavailable(
                "the sandbox runner refused or failed the run; the tool's result is unknown",
                cause="runner_error",
            )
        assert isinstance(body, dict)
        return body

    async def healthy(self) -> bool:
        try:
            response = await self._client.get("/healthz", timeout=2.0)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def tools(self) -> dict[str, Any]:
        """The runner's `GET /v1/tools`: sandbox, summary and every tool's state and counts."""
        try:
            response = await self._client.get("/v1/tools", timeout=2.0)
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.error("runner_unreachable", error=f"{type(exc).__name__}: {exc}")
            raise RunnerUnavailable(
                "the sandbox runner could not be reached for its tool list", cause="unreachable"
            ) from exc
        if response.status_code != 200 or not isinstance(body, dict):
            log.error("runner_error", status=response.status_code, body=str(body)[:500])
            raise RunnerUnavailable(
                "the sandbox runner did not give its tool list", cause="runner_error"
            )
        return body

    async def tool_health(self) -> dict[str, Any] | None:
        """The runner's sandbox and tool-state summary, or None if it cannot say."""
        try:
            response = await self._client.get("/v1/tools", timeout=2.0)
            body = response.json()
        except (httpx.HTTPError, ValueError):
            return None
        if response.status_code != 200 or not isinstance(body, dict):
            return None
        return {"sandbox": body.get("sandbox"), "tools": body.get("summary")}


def _is_result(body: Any) -> bool:
    return (
        isinstance(body, dict)
        and isinstance(body.get("ok"), bool)
        and ("result" in body or "error" in body)
        and isinstance(body.get("metrics", {}), dict)
    )
