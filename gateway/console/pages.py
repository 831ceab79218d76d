"""The console's pages: plain handlers, one module per page, gathered here.

routes.py wraps every route listed here with the auth guard.

Each handler reads what it shows from the admin app's lifespan state
(`request.state`): `catalog` (gateway/catalog.py), `decisions` (a
gateway/decision_log.py `DecisionLog`), `policy` (the gateway's OPA client),
`runner` (the gateway's runner client), `input_schema` (policies/schema/input.json),
`shadow` (gateway/shadow.py, or None) and `call_approvals` (gateway/call_approvals.py).
The sign-in guard wrapped around these routes sets `request.state.user` (`name`,
`role`, `can_act`) and `request.state.csrf_token` before a handler runs, lets GETs
through for viewers and admins, and POSTs only for admins with a valid
`csrf_token` form field. Actions name `request.state.user.actor` (`oidc:<name>`, as
in the admin API with a session) as their actor.
"""

from __future__ import annotations

from starlette.routing import Route

from gateway.console import agents_page, approvals_page, decisions_page, policy_page, tools_page

PAGE_ROUTES: list[Route] = [
    Route("/admin", decisions_page.decisions, methods=["GET"]),  # the front page
    Route("/admin/decisions", decisions_page.decisions, methods=["GET"]),
    Route("/admin/decisions/{decision_id}", decisions_page.decision, methods=["GET"]),
    Route("/admin/agents", agents_page.agents, methods=["GET"]),
    Route("/admin/agents/{agent_id}", agents_page.agent, methods=["GET"]),
    Route("/admin/agents/{agent_id}/approve", agents_page.approve, methods=["POST"]),
    Route("/admin/agents/{agent_id}/revoke", agents_page.revoke, methods=["POST"]),
    Route("/admin/approvals", approvals_page.approvals, methods=["GET"]),
    Route("/admin/approvals/{approval_id}/approve", approvals_page.approve, methods=["POST"]),
    Route("/admin/approvals/{approval_id}/deny", approvals_page.deny, methods=["POST"]),
    Route("/admin/policy", policy_page.policy, methods=["GET"]),
    Route("/admin/policy/eval", policy_page.evaluate, methods=["POST"]),
    Route("/admin/tools", tools_page.tools, methods=["GET"]),
]
