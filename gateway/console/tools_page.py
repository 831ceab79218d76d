"""Tools: the sandbox runner's health, per tool state and success/error counts."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.console.templating import page, render
from gateway.errors import RunnerUnavailable
from gateway.runner_client import RunnerClient


def problems_first(tool: dict[str, Any]) -> tuple[int, str]:
    """Tools that cannot run first, then failing ones, then the rest, each by name."""
    order = {"unavailable": 0, "failed": 1}
    return order.get(str(tool.get("state")), 2), str(tool.get("name"))


@page
async def tools(request: Request) -> Response:
    """GET /admin/tools: what the runner's `GET /v1/tools` says, or that it cannot be asked."""
    runner: RunnerClient = request.state.runner
    try:
        health = await runner.tools()
    except RunnerUnavailable as exc:
        return render(request, "tools.html", {"nav": "tools", "health": None, "error": exc})
    listed = health.get("tools")
    rows = sorted(listed, key=problems_first) if isinstance(listed, list) else []
    return render(
        request,
        "tools.html",
        {
            "nav": "tools",
            "health": health,
            "tools": rows,
            "error": None,
        },
    )
