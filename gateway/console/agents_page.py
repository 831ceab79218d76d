"""Agents: their manifests, signatures and states, and the admin's approve and revoke.

The data is the admin API's own view of an agent (`gateway.admin.agent_view`), and
the actions are the catalog's (`Catalog.approve`, `Catalog.revoke`): the same checks,
the same audit records, with the signed-in admin as the actor.
"""

from __future__ import annotations

from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway.admin import SHA256_HEX, agent_view
from gateway.catalog import Catalog
from gateway.console.forms import read_form, text_field
from gateway.console.templating import page, path_part, render
from regate.errors import BadRequest, RegateError
from regate.middleware import request_id

# After an action the page says what the agent's record says now (who approved or
# revoked it, when), never what the URL claims, so a crafted link cannot fake one.
DONE = {"approve": "approved", "revoke": "revoked"}


def _view(catalog: Catalog, agent_id: str) -> dict[str, Any]:
    entry = catalog.entry(agent_id)
    return agent_view(entry, entry.agent_id in catalog.registry.agents)


@page
async def agents(request: Request) -> Response:
    """GET /admin/agents: every agent the gateway knows, and the manifests it refused."""
    catalog: Catalog = request.state.catalog
    callable_now = catalog.registry.agents
    views = [agent_view(e, e.agent_id in callable_now) for e in catalog.entries()]
    waiting = [v for v in views if v["state"] in ("pending", "quarantined")]
    return render(
        request,
        "agents.html",
        {
            "nav": "agents",
            "agents": views,
            "waiting": len(waiting),
            "refused": sorted(catalog.refused.items()),
        },
    )


@page
async def agent(request: Request) -> Response:
    """GET /admin/agents/{agent_id}: the manifest, signature, state, diff and actions."""
    done = DONE.get(request.query_params.get("done", ""))
    return render_agent(request, request.path_params["agent_id"], done=done)


def render_agent(
    request: Request, agent_id: str, *, done: str | None = None, error: RegateError | None = None
) -> Response:
    catalog: Catalog = request.state.catalog
    view = _view(catalog, agent_id)
    return render(
        request,
        "agent.html",
        {
            "nav": "agents",
            "agent": view,
            "done": done if done == view["state"] else None,
            "error": error,
        },
        status=error.status if error else 200,
    )


@page
async def approve(request: Request) -> Response:
    """POST /admin/agents/{agent_id}/approve: the manifest the admin looked at, with the
    permissions left ticked (each a subset of what its tool requested)."""
    catalog: Catalog = request.state.catalog
    agent_id = request.path_params["agent_id"]
    form = await read_form(request)
    try:
        expect = text_field(form, "manifest_sha256", max_chars=64)
        if not SHA256_HEX.match(expect):
            raise BadRequest("the form lost the manifest digest; reload the page and try again")
        await catalog.approve(
            agent_id,
            actor=request.state.user.actor,
            reason=text_field(form, "reason"),
            permissions=chosen_permissions(form, catalog, agent_id),
            expect_sha256=expect,
            request_id=request_id(request),
        )
    except RegateError as exc:
        # Shown on the agent's page, beside what the admin was looking at.
        return render_agent(request, agent_id, error=exc)
    return done_redirect(agent_id, "approve")


@page
async def revoke(request: Request) -> Response:
    """POST /admin/agents/{agent_id}/revoke."""
    catalog: Catalog = request.state.catalog
    agent_id = request.path_params["agent_id"]
    form = await read_form(request)
    try:
        await catalog.revoke(
            agent_id,
            actor=request.state.user.actor,
            reason=text_field(form, "reason"),
            request_id=request_id(request),
        )
    except RegateError as exc:
        return render_agent(request, agent_id, error=exc)
    return done_redirect(agent_id, "revoke")


def chosen_permissions(form: FormData, catalog: Catalog, agent_id: str) -> dict[str, list[str]]:
    """The ticked `perm` boxes (`<tool>:<permission>`), for every tool of the manifest
    served now: a tool with none ticked is approved with none."""
    entry = catalog.entry(agent_id)
    tools = entry.manifest.tools if entry.manifest else {}
    chosen: dict[str, list[str]] = {name: [] for name in tools}
    for value in form.getlist("perm"):
        tool, sep, permission = str(value).partition(":")
        if not sep or tool not in chosen:
            raise BadRequest(f"the form names a tool this agent does not have: {tool!r}")
        chosen[tool].append(permission)
    return chosen


def done_redirect(agent_id: str, done: str) -> Response:
    """Post/redirect/get: a reload does not repeat the action."""
    return RedirectResponse(f"/admin/agents/{path_part(agent_id)}?done={done}", status_code=303)
