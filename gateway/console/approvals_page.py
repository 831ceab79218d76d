"""Pending call approvals: calls policy parked with `require_approval`, for an admin to decide."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway.console.templating import page, render


@page
async def approvals(request: Request) -> Response:
    """GET /admin/approvals."""
    # Call approvals (gateway/call_approvals.py) are not in this build yet: say so.
    return render(request, "approvals.html", {"nav": "approvals", "available": False})
