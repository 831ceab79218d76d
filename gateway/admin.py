"""The admin API: JSON on its own listener (`[admin] listen`), never on the agents' port.

Scripts use one bearer token read from `[admin] token_file` at start, compared in
constant time; without it the API is not served at all (docs/trust.md). With
`[admin.oidc]` the same listener serves the console (gateway/console/, docs/admin.md)
and the API also takes the console's session cookie, with its CSRF token on every
change and the admin role for it. The app runs in the gateway's process and event
loop and acts on the same catalog as the agents' app (gateway/catalog.py); every
action is audited with its actor.

    GET  /admin/api/agents                      every agent: state, manifest, signature, permissions
    GET  /admin/api/agents/{agent_id}           one agent
    GET  /admin/api/agents/{agent_id}/diff      what changed since approval (quarantine)
    POST /admin/api/agents/{agent_id}/approve   {"permissions"?, "reason"?, "manifest_sha256"?}
    POST /admin/api/agents/{agent_id}/revoke    {"reason"?}
    GET  /admin/api/decisions                   search the decision log (filters, paging)
    GET  /admin/api/decisions/{decision_id}     one decision, its receipt, its chain place
    GET  /admin/api/policy                      OPA status and bundle revision
    POST /admin/api/policy/eval                 {"input"}: a dry run against the loaded policy
    GET  /admin/api/tools                       the runner's tool health
    GET  /admin/api/shadow                      shadow policy: sample rate, (dis)agreements
    GET  /admin/api/call-approvals?status=      parked calls, newest first
    GET  /admin/api/call-approvals/{id}         one, with masked arguments and policy reasons
    POST /admin/api/call-approvals/{id}/approve {"reason"}  (required)
    POST /admin/api/call-approvals/{id}/deny    {"reason"}  (required)
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import stat
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.call_approvals import CallApprovals, admin_view
from gateway.catalog import Catalog, Entry
from gateway.console.auth import Console
from gateway.console.csrf import SAFE_METHODS
from gateway.console.security import SecurityHeaders
from gateway.decision_log import DecisionLog, open_decision_log, query_from_params
from gateway.errors import AdminTokenInvalid, AdminTokenMissing
from gateway.lifecycle import QUARANTINED, tool_pin
from gateway.policy import PolicyClient
from gateway.policy_dry_run import InputSchema, dry_run
from gateway.runner_client import RunnerClient
from gateway.shadow import ShadowPolicy
from regate.error_handlers import exception_handlers
from regate.errors import BadRequest, NotFound
from regate.front_door import FrontDoor
from regate.jsonbody import parse_json, read_capped
from regate.middleware import RequestIdMiddleware, request_id
from regate.settings import AdminSettings, ConfigError, Settings

log = structlog.get_logger("regate.admin")

# Who acted, in the audit log, until admins sign in with SSO.
TOKEN_ACTOR = "admin-token"  # noqa: S105 (a name for the log, not a secret)
MIN_TOKEN_CHARS = 32
MAX_BODY_BYTES = 64 * 1024
MAX_REASON_CHARS = 1000
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


class AdminLink:
    """The agents' app creates the catalog and its clients in its lifespan; the admin
    app waits for them, and shares them (one OPA client, one runner client)."""

    def __init__(self) -> None:
        self.catalog: Catalog | None = None
        self.policy: PolicyClient | None = None
        self.runner: RunnerClient | None = None
        self.shadow: ShadowPolicy | None = None  # None: no shadow policy configured
        self.call_approvals: CallApprovals | None = None  # parked calls (not manifests)
        self._ready = asyncio.Event()

    def connect(self, catalog: Catalog, *, policy: PolicyClient, runner: RunnerClient) -> None:
        self.catalog, self.policy, self.runner = catalog, policy, runner
        self._ready.set()

    async def wait(self, timeout_s: float) -> Catalog:
        await asyncio.wait_for(self._ready.wait(), timeout_s)
        assert self.catalog is not None
        return self.catalog


class AdminToken:
    """The admin bearer token, held as its sha256 so comparisons take the same time
    whatever the length or content of what a client sends."""

    def __init__(self, token: str) -> None:
        if len(token) < MIN_TOKEN_CHARS:
            raise ConfigError(f"the admin token must be at least {MIN_TOKEN_CHARS} characters")
        self._digest = hashlib.sha256(token.encode()).digest()

    @classmethod
    def from_file(cls, path: Path) -> AdminToken:
        try:
            mode = path.stat().st_mode
            token = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"admin.token_file {path}: cannot read it ({exc}); the admin API is never"
                " served without a token"
            ) from exc
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"admin.token_file {path} is readable by other users; chmod 600 it")
        return cls(token)

    def check(self, authorization: str | None) -> str:
        """The actor for a request carrying `authorization`, or `AdminTokenInvalid`."""
        if not authorization:
            raise AdminTokenMissing("send the admin token: 'Authorization: Bearer <token>'")
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise AdminTokenInvalid("the admin API takes 'Authorization: Bearer <token>'")
        digest = hashlib.sha256(presented.strip().encode()).digest()
        if not hmac.compare_digest(digest, self._digest):
            raise AdminTokenInvalid("the admin token is not valid")
        return TOKEN_ACTOR


def create_admin_app(settings: Settings, admin: AdminSettings, link: AdminLink) -> Starlette:
    token = AdminToken.from_file(admin.token_file)
    console = Console.from_settings(admin.oidc) if admin.oidc else None
    console_routes: list[BaseRoute] = []
    if console is not None:
        # Imported here: the pages build on this module's views of agents.
        from gateway.console.routes import console_routes as make_console_routes

        console_routes = make_console_routes()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        # Served only once the agents' app has loaded the catalog.
        catalog = await link.wait(timeout_s=120)
        log.info("admin_started", listen=str(admin.listen), console=console is not None)
        try:
            yield {
                "catalog": catalog,
                "admin_token": token,
                "console": console,
                "decisions": open_decision_log(settings),
                "policy": link.policy,
                "runner": link.runner,
                "shadow": link.shadow,
                "input_schema": InputSchema.load(settings.opa.policies_dir),
                "call_approvals": link.call_approvals,
            }
        finally:
            if console is not None:
                await console.aclose()

    app = Starlette(
        routes=[
            Route("/admin/api/agents", list_agents, methods=["GET"]),
            Route("/admin/api/agents/{agent_id}", show_agent, methods=["GET"]),
            Route("/admin/api/agents/{agent_id}/diff", show_diff, methods=["GET"]),
            Route("/admin/api/agents/{agent_id}/approve", approve, methods=["POST"]),
            Route("/admin/api/agents/{agent_id}/revoke", revoke, methods=["POST"]),
            Route("/admin/api/decisions", list_decisions, methods=["GET"]),
            Route("/admin/api/decisions/{decision_id}", show_decision, methods=["GET"]),
            Route("/admin/api/policy", policy_status, methods=["GET"]),
            Route("/admin/api/policy/eval", policy_eval, methods=["POST"]),
            Route("/admin/api/shadow", shadow_counts, methods=["GET"]),
            Route("/admin/api/tools", tool_health, methods=["GET"]),
            Route("/admin/api/call-approvals", list_call_approvals, methods=["GET"]),
            Route("/admin/api/call-approvals/{approval_id}", show_call_approval, methods=["GET"]),
            Route(
                "/admin/api/call-approvals/{approval_id}/approve",
                approve_call,
                methods=["POST"],
            ),
            Route("/admin/api/call-approvals/{approval_id}/deny", deny_call, methods=["POST"]),
            *console_routes,
        ],
        middleware=[
            RequestIdMiddleware.as_middleware(),
            Middleware(SecurityHeaders),
            Middleware(FrontDoor, allowed_hosts=settings.gateway.allowed_hosts),
        ],
        exception_handlers=exception_handlers(
            event="admin_request_refused",
            not_found_hint="the admin API is under /admin/api/agents and /admin/api/call-approvals",
        ),
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False
    return app


Handler = Callable[[Request, Catalog, str], Awaitable[Response]]


def authenticated(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Check the token (or the console session) before anything else; hand the handler
    the catalog and the actor."""

    async def endpoint(request: Request) -> Response:
        console: Console | None = request.state.console
        if (
            console is not None
            and "authorization" not in request.headers
            and console.has_session_cookie(request)
        ):
            # A browser's session: the console's CSRF and role checks apply.
            needs_admin = request.method not in SAFE_METHODS
            actor = (await console.api_user(request, needs_admin=needs_admin)).actor
            return await handler(request, request.state.catalog, actor)
        token: AdminToken = request.state.admin_token
        try:
            actor = token.check(request.headers.get("authorization"))
        except AdminTokenInvalid:
            log.warning("admin_auth_failed", path=request.url.path)
            raise
        return await handler(request, request.state.catalog, actor)

    return endpoint


@authenticated
async def list_agents(request: Request, catalog: Catalog, actor: str) -> Response:
    callable_agents = catalog.registry.agents
    return JSONResponse(
        {
            "agents": [agent_view(e, e.agent_id in callable_agents) for e in catalog.entries()],
            "refused": [{"file": f, "reason": r} for f, r in sorted(catalog.refused.items())],
        }
    )


@authenticated
async def show_agent(request: Request, catalog: Catalog, actor: str) -> Response:
    entry = catalog.entry(request.path_params["agent_id"])
    return JSONResponse(agent_view(entry, entry.agent_id in catalog.registry.agents))


@authenticated
async def show_diff(request: Request, catalog: Catalog, actor: str) -> Response:
    entry = catalog.entry(request.path_params["agent_id"])
    record = entry.record
    return JSONResponse(
        {
            "agent_id": entry.agent_id,
            "state": record.state if record else None,
            "approved_version": record.approval.version if record and record.approval else None,
            "version": entry.manifest.version if entry.manifest else None,
            "diff": list(record.diff) if record and record.state == QUARANTINED else [],
        }
    )


@authenticated
async def approve(request: Request, catalog: Catalog, actor: str) -> Response:
    body = await read_body(request, allowed={"permissions", "reason", "manifest_sha256"})
    permissions = body.get("permissions")
    if permissions is not None and not (
        isinstance(permissions, dict)
        and all(
            isinstance(v, list) and all(isinstance(p, str) for p in v) for v in permissions.values()
        )
    ):
        raise BadRequest('"permissions" must map tool names to lists of permission strings')
    expect = body.get("manifest_sha256")
    if expect is not None and not (isinstance(expect, str) and SHA256_HEX.match(expect)):
        raise BadRequest('"manifest_sha256" must be 64 lowercase hex digits')
    action_id, entry = await catalog.approve(
        request.path_params["agent_id"],
        actor=actor,
        reason=reason_of(body),
        permissions=permissions,
        expect_sha256=expect,
        request_id=request_id(request),
    )
    callable_now = entry.agent_id in catalog.registry.agents
    return JSONResponse({"action_id": action_id, "agent": agent_view(entry, callable_now)})


@authenticated
async def revoke(request: Request, catalog: Catalog, actor: str) -> Response:
    body = await read_body(request, allowed={"reason"})
    action_id, entry = await catalog.revoke(
        request.path_params["agent_id"],
        actor=actor,
        reason=reason_of(body),
        request_id=request_id(request),
    )
    callable_now = entry.agent_id in catalog.registry.agents
    return JSONResponse({"action_id": action_id, "agent": agent_view(entry, callable_now)})


@authenticated
async def list_decisions(request: Request, catalog: Catalog, actor: str) -> Response:
    decisions: DecisionLog = request.state.decisions
    page = await decisions.search(query_from_params(request.query_params))
    return JSONResponse(page.as_json())


@authenticated
async def show_decision(request: Request, catalog: Catalog, actor: str) -> Response:
    decisions: DecisionLog = request.state.decisions
    trail = await decisions.get(request.path_params["decision_id"])
    return JSONResponse(trail.as_json())


@authenticated
async def shadow_counts(request: Request, catalog: Catalog, actor: str) -> Response:
    shadow: ShadowPolicy | None = request.state.shadow
    if shadow is None:
        return JSONResponse({"enabled": False, "sample_rate": 0.0})
    return JSONResponse(
        {"enabled": True, "sample_rate": shadow.sample_rate, **shadow.counts.as_json()}
    )


@authenticated
async def policy_status(request: Request, catalog: Catalog, actor: str) -> Response:
    policy: PolicyClient = request.state.policy
    return JSONResponse((await policy.status()).as_json())


@authenticated
async def policy_eval(request: Request, catalog: Catalog, actor: str) -> Response:
    body = await read_body(request, allowed={"input"})
    if "input" not in body:
        raise BadRequest('send {"input": {...}}: the policy input document to evaluate')
    decision = await dry_run(
        request.state.policy, request.state.input_schema, body["input"], actor=actor
    )
    return JSONResponse({"decision": decision.as_record()})


@authenticated
async def tool_health(request: Request, catalog: Catalog, actor: str) -> Response:
    runner: RunnerClient = request.state.runner
    return JSONResponse(await runner.tools())


async def read_body(request: Request, *, allowed: set[str]) -> dict[str, Any]:
    """A JSON object (an empty body counts as `{}`) with only the `allowed` fields."""
    raw = await read_capped(request, MAX_BODY_BYTES)
    if not raw.strip():
        return {}
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise BadRequest("send the body as JSON with 'Content-Type: application/json'")
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadRequest(f"unknown fields {unknown}; this endpoint takes {sorted(allowed)}")
    return body


def reason_of(body: Mapping[str, Any]) -> str:
    reason = body.get("reason", "")
    if not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS:
        raise BadRequest(f'"reason" must be a string of at most {MAX_REASON_CHARS} characters')
    return reason


def agent_view(entry: Entry, callable_now: bool) -> dict[str, Any]:
    """One agent for admins: what it asks for, who signed it, what was approved, and why
    it is (not) callable. Descriptions and schemas are data here, never rendered."""
    manifest, record = entry.manifest, entry.record
    approval = record.approval if record else None
    # The approved permissions apply to the approved manifest only.
    current = (
        approval
        if approval is not None
        and manifest is not None
        and approval.manifest_sha256 == manifest.sha256
        else None
    )
    pins = approval.pins() if approval else {}
    tools = []
    for tool in manifest.tools.values() if manifest else ():
        tools.append(
            {
                "name": tool.name,
                "description": tool.description,
                "input_schema": tool.input_schema,
                "entrypoint": list(tool.entrypoint),
                "limits": dict(tool.limits),
                "requested_permissions": list(tool.permissions),
                "approved_permissions": list(current.permissions.get(tool.name, ()))
                if current
                else None,
                "definition_sha256": tool_pin(tool),
                "pinned_sha256": pins.get(tool.name),
                "flags": [{"code": f.code, "message": f.message} for f in tool.flags],
            }
        )
    return {
        "agent_id": entry.agent_id,
        "state": record.state if record else None,
        "callable": callable_now,
        "version": manifest.version if manifest else None,
        "highest_version_seen": record.highest_version if record else None,
        "manifest_sha256": manifest.sha256 if manifest else None,
        "signature": {
            "verified": True,
            "kid": manifest.publisher,
            "alg": manifest.algorithm,
            "expires": manifest.expires.isoformat() if manifest.expires else None,
        }
        if manifest
        else None,
        "refused": entry.refused,
        "first_seen_at": record.first_seen_at if record else None,
        "tools": tools,
        "approval": {k: v for k, v in approval.as_json().items() if k != "tools"}
        if approval
        else None,
        "revocation": record.revocation.as_json() if record and record.revocation else None,
        "diff": list(record.diff) if record else [],
    }


# --- approvals of calls (gateway/call_approvals.py) ----------------------------


def call_approvals_of(request: Request) -> CallApprovals:
    approvals: CallApprovals | None = request.state.call_approvals
    if approvals is None:  # an admin app wired without them (tests of the agents API)
        raise NotFound("call approvals are not served by this admin API")
    return approvals


@authenticated
async def list_call_approvals(request: Request, catalog: Catalog, actor: str) -> Response:
    status = request.query_params.get("status") or None
    approvals = await call_approvals_of(request).list(status)
    return JSONResponse({"approvals": [admin_view(a) for a in approvals]})


@authenticated
async def show_call_approval(request: Request, catalog: Catalog, actor: str) -> Response:
    approval = await call_approvals_of(request).get(request.path_params["approval_id"])
    return JSONResponse(admin_view(approval))


@authenticated
async def approve_call(request: Request, catalog: Catalog, actor: str) -> Response:
    return await decide_call(request, actor, "approved")


@authenticated
async def deny_call(request: Request, catalog: Catalog, actor: str) -> Response:
    return await decide_call(request, actor, "denied")


async def decide_call(request: Request, actor: str, verdict: str) -> Response:
    body = await read_body(request, allowed={"reason"})
    approvals = call_approvals_of(request)
    decide = approvals.approve if verdict == "approved" else approvals.deny
    approval = await decide(request.path_params["approval_id"], actor, reason_of(body))
    log.info(f"call_approval_{verdict}", approval_id=approval.approval_id, actor=actor)
    return JSONResponse(admin_view(approval))
