"""The gateway's Starlette app: routes, the lifespan that owns shared clients, errors."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import httpx
import structlog
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.admin import AdminLink
from gateway.agents import AgentRegistry
from gateway.approvals import FILE_NAME as APPROVALS_FILE
from gateway.approvals import ApprovalStore
from gateway.arguments import extract_arguments
from gateway.audit_stores import open_audit_store
from gateway.auth import TokenVerifier, load_issuers
from gateway.breaker import CircuitBreaker
from gateway.call_approval_store import FILE_NAME as CALL_APPROVALS_FILE
from gateway.call_approval_store import CallApprovalStore
from gateway.call_approvals import CallApprovals, caller_view
from gateway.catalog import Catalog
from gateway.checkpoints import CheckpointSigner
from gateway.errors import CallParked
from gateway.mcp import mcp_endpoint
from gateway.mcp_sessions import SessionStore
from gateway.pipeline import Call, Pipeline
from gateway.policy import PolicyClient
from gateway.request_facts import request_facts
from gateway.runner_client import RunnerClient
from gateway.shadow import ShadowPolicy
from gateway.sidecar_http import sidecar_session
from gateway.usage import UsageCounter
from regate.error_handlers import exception_handlers
from regate.front_door import FrontDoor
from regate.grants import load_or_create_grant_key
from regate.jsonbody import read_json_object
from regate.middleware import RequestIdMiddleware
from regate.settings import Settings

log = structlog.get_logger("regate.gateway")

# The header that replays a parked call with its approval (docs/api.md).
APPROVAL_HEADER = "regate-approval"


def create_app(
    settings: Settings,
    *,
    admin_link: AdminLink | None = None,
    jwks_transport: httpx.AsyncBaseTransport | None = None,
) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        opa = sidecar_session(settings.opa.url)  # decisions, and the shadow's questions
        runner_http = sidecar_session(settings.runner.url)
        # JWKS fetches: httpx's default transport (TLS verification on), not the hot path.
        jwks_http = httpx.AsyncClient(transport=jwks_transport)
        grant_key = load_or_create_grant_key(settings.gateway.grant_key)
        audit = open_audit_store(
            settings,
            checkpoints=CheckpointSigner(
                grant_key,
                every_records=settings.gateway.audit_checkpoint_records,
                every_s=settings.gateway.audit_checkpoint_s,
            ),
        )
        approvals = ApprovalStore(settings.gateway.state_dir / APPROVALS_FILE)
        catalog = Catalog(settings.manifests, approvals, audit)
        await catalog.start()
        call_approval_store = CallApprovalStore(settings.gateway.state_dir / CALL_APPROVALS_FILE)
        call_approvals = CallApprovals(
            call_approval_store,
            audit,
            ttl_s=settings.call_approvals.ttl_s,
            max_pending_per_caller=settings.call_approvals.max_pending_per_caller,
        )
        pipeline = Pipeline(
            verifier=TokenVerifier(
                load_issuers(settings.issuers, jwks_http),
                audience=settings.gateway.audience,
                leeway_s=settings.gateway.leeway_s,
            ),
            agents=catalog.registry,
            policy=PolicyClient(
                opa,
                settings.opa.url.base_url,
                timeout_s=settings.opa.timeout_s,
                breaker=CircuitBreaker(
                    "opa",
                    failure_threshold=settings.opa.breaker_failures,
                    cooldown_s=settings.opa.breaker_cooldown_s,
                ),
            ),
            audit=audit,
            runner=RunnerClient(runner_http, settings.runner.url.base_url),
            usage=UsageCounter(),
            approvals=call_approvals,
            grant_key=grant_key,
            grant_ttl_s=settings.gateway.grant_ttl_s,
            shadow=shadow_policy(settings, opa),
        )
        log_flagged_tools(pipeline.agents)
        catalog.on_change(lambda registry: setattr(pipeline, "agents", registry))
        watcher = asyncio.create_task(catalog.watch(), name="manifest-watcher")
        if admin_link is not None:
            admin_link.shadow = pipeline.shadow
            admin_link.call_approvals = call_approvals
            admin_link.connect(catalog, policy=pipeline.policy, runner=pipeline.runner)
        log.info("gateway_started", listen=str(settings.gateway.listen))
        try:
            yield {"pipeline": pipeline, "settings": settings, "mcp_sessions": SessionStore()}
        finally:
            await opa.close()
            await runner_http.close()
            await jwks_http.aclose()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await approvals.close()
            await call_approval_store.close()
            await audit.close()

    app = Starlette(
        routes=[
            Route("/v1/invoke/{agent_id}/{tool}", invoke, methods=["POST"]),
            Route("/v1/approvals/{approval_id}", approval_status, methods=["GET"]),
            Route("/mcp", mcp_endpoint, methods=["GET", "POST", "DELETE"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
        ],
        middleware=[
            RequestIdMiddleware.as_middleware(),
            Middleware(FrontDoor, allowed_hosts=settings.gateway.allowed_hosts),
        ],
        exception_handlers=exception_handlers(
            event="request_refused",
            not_found_hint="agents call POST /v1/invoke/{agent_id}/{tool}",
        ),
        lifespan=lifespan,
    )
    # A slash redirect would be built from the client's Host header: never.
    app.router.redirect_slashes = False
    return app


def shadow_policy(settings: Settings, opa: aiohttp.ClientSession) -> ShadowPolicy | None:
    shadow = settings.shadow
    if shadow.sample_rate <= 0:
        return None
    log.info("shadow_policy_on", sample_rate=shadow.sample_rate, max_wait_s=shadow.max_wait_s)
    return ShadowPolicy(
        opa,
        settings.opa.url.base_url,
        sample_rate=shadow.sample_rate,
        max_wait_s=shadow.max_wait_s,
        timeout_s=settings.opa.timeout_s,
    )


def log_flagged_tools(agents: AgentRegistry) -> None:
    """Say which tools are withheld for their descriptions (regate/descriptions.py)."""
    for agent in agents.agents.values():
        for tool in agent.tools.values():
            if tool.flags:
                log.warning(
                    "tool_description_flagged",
                    agent_id=agent.agent_id,
                    tool=tool.name,
                    reasons=[{"code": f.code, "message": f.message} for f in tool.flags],
                )


async def invoke(request: Request) -> Response:
    pipeline: Pipeline = request.state.pipeline
    settings: Settings = request.state.settings

    async def read_arguments() -> dict[str, Any]:
        gw = settings.gateway
        body = await read_json_object(request, gw.max_body_bytes, gw.body_timeout_s)
        return extract_arguments(body)

    call = Call(
        agent_id=request.path_params["agent_id"],
        tool=request.path_params["tool"],
        authorization=request.headers.get("authorization"),
        read_arguments=read_arguments,
        request=request_facts(request, settings.gateway.trusted_proxies),
        approval_id=request.headers.get(APPROVAL_HEADER),
    )
    try:
        return JSONResponse(await pipeline.invoke(call))
    except CallParked as parked:
        approval_id = parked.details["approval_id"]
        return JSONResponse(
            {
                "decision_id": parked.details["decision_id"],
                "approval_id": approval_id,
                "status": "pending",
                "expires_at": parked.details["expires_at"],
                "reasons": parked.details["reasons"],
                "message": parked.message,
            },
            status_code=202,
            headers={"Location": f"/v1/approvals/{approval_id}"},
        )


async def approval_status(request: Request) -> Response:
    """`GET /v1/approvals/{id}`: the caller's own parked call; anyone else's is a 404."""
    pipeline: Pipeline = request.state.pipeline
    caller = await pipeline.verifier.authenticate(request.headers.get("authorization"))
    approval = await pipeline.approvals.for_caller(
        request.path_params["approval_id"], caller.iss, caller.sub
    )
    return JSONResponse(caller_view(approval))


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    pipeline: Pipeline = request.state.pipeline
    checks = {
        "opa": await pipeline.policy.healthy(),
        "runner": await pipeline.runner.healthy(),
        "audit": await pipeline.audit.healthy(),
    }
    ready = all(checks.values())
    # Tool states are reported, not required: one failed tool does not make the
    # gateway unready for every other tool.
    runner = await pipeline.runner.tool_health() if checks["runner"] else None
    return JSONResponse(
        {
            "status": "ready" if ready else "not_ready",
            "checks": checks,
            "policy_breaker": pipeline.policy.breaker.snapshot(),
            "runner": runner,
        },
        status_code=200 if ready else 503,
    )
