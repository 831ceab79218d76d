"""Decisions: the filterable list, and one decision with its input, reasons and receipt."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway.console.templating import page, render
from gateway.decision_log import OUTCOMES, DecisionLog, check_decision_id, query_from_params
from regate.errors import BadRequest

FILTERS = ("caller", "agent", "tool", "outcome", "since", "until", "tz")
PAGING = ("before", "limit")


@page
async def decisions(request: Request) -> Response:
    """GET /admin/decisions (and /admin): the newest decisions first, filtered by the
    form's fields. Other query parameters are ignored (the API refuses them)."""
    log: DecisionLog = request.state.decisions
    wanted = request.query_params.get("id", "").strip()
    if wanted:
        # An id from an error envelope or a log line: straight to that decision.
        return RedirectResponse(f"/admin/decisions/{check_decision_id(wanted)}", 303)
    params = {k: v for k, v in request.query_params.items() if k in FILTERS + PAGING}
    # The form as the viewer filled it in, to show back (times stay in their zone).
    shown = {name: params.get(name, "") for name in FILTERS}
    context = {
        "nav": "decisions",
        "filters": shown,
        "filtered": any(shown[n] for n in FILTERS if n != "tz"),
        "outcomes": OUTCOMES,
        "error": None,
        "page": None,
    }
    try:
        query = query_from_params(params)
    except BadRequest as exc:
        return render(request, "decisions.html", {**context, "error": exc}, status=400)
    result = await log.search(query)
    return render(
        request,
        "decisions.html",
        {
            **context,
            "page": result,
            "newer": query.before is not None,
            "paging": {k: v for k, v in shown.items() if v},
        },
    )


@page
async def decision(request: Request) -> Response:
    """GET /admin/decisions/{decision_id}: the record, its receipt, its place in the chain."""
    log: DecisionLog = request.state.decisions
    trail = await log.get(request.path_params["decision_id"])
    return render(request, "decision.html", {"nav": "decisions", "trail": trail})
