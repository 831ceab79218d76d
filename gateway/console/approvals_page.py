"""Call approvals: calls policy parked with `require_approval`, for an admin to decide.

The service is gateway/call_approvals.py (`list`, `get`, `approve`, `deny`), the same
the admin API uses; the signed-in admin is the actor, and a reason is required (the
caller sees it, the audit log keeps it).
"""

from __future__ import annotations

import contextlib
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway.call_approval_store import STATUSES
from gateway.call_approvals import APPROVAL_ID, CallApprovals, admin_view
from gateway.console.forms import read_form, text_field
from gateway.console.templating import page, path_part, render
from regate.errors import BadRequest, RegateError

DONE = ("approved", "denied")


@page
async def approvals(request: Request) -> Response:
    """GET /admin/approvals?status=pending|approved|denied|expired|used|all."""
    return await render_approvals(request)


async def render_approvals(request: Request, *, error: RegateError | None = None) -> Response:
    service: CallApprovals | None = getattr(request.state, "call_approvals", None)
    if service is None:
        return render(request, "approvals.html", {"nav": "approvals", "available": False})
    status = request.query_params.get("status", "pending")
    listed = await service.list(None if status == "all" else status)
    context: dict[str, Any] = {
        "nav": "approvals",
        "available": True,
        "status": status,
        "statuses": STATUSES,
        "approvals": [admin_view(a) for a in listed],
        "done": None,
        "error": error,
    }
    # After an action: what the approval's record says now, never what the URL claims.
    done_id = request.query_params.get("done", "")
    if error is None and APPROVAL_ID.match(done_id):
        with contextlib.suppress(RegateError):  # an unknown id: no banner, nothing else
            decided = admin_view(await service.get(done_id))
            context["done"] = decided if decided["status"] in DONE else None
    return render(request, "approvals.html", context, status=error.status if error else 200)


@page
async def approve(request: Request) -> Response:
    """POST /admin/approvals/{approval_id}/approve."""
    return await decide(request, "approve")


@page
async def deny(request: Request) -> Response:
    """POST /admin/approvals/{approval_id}/deny."""
    return await decide(request, "deny")


async def decide(request: Request, action: str) -> Response:
    service: CallApprovals | None = getattr(request.state, "call_approvals", None)
    if service is None:
        raise BadRequest("call approvals are not enabled on this gateway")
    approval_id = request.path_params["approval_id"]
    form = await read_form(request)
    try:
        reason = text_field(form, "reason")
        act = service.approve if action == "approve" else service.deny
        await act(approval_id, request.state.user.actor, reason)
    except RegateError as exc:
        return await render_approvals(request, error=exc)
    return RedirectResponse(
        f"/admin/approvals?status=all&done={path_part(approval_id)}", status_code=303
    )
