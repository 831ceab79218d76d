"""The sandbox runner's Starlette app: run one granted call, report tool health."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from regate.canonical import digest
from regate.errors import NotFound, RegateError, error_response
from regate.grants import Grant, GrantError, GrantKeys, verify_grant
from regate.jsonbody import read_json_object
from regate.middleware import RequestIdMiddleware, request_id
from regate.settings import RunnerSettings
from sandbox_runner.bwrap import Limits, Sandbox, run_tool
from sandbox_runner.registry import ToolRegistry, make_work_dir, stage_tools
from sandbox_runner.replay import ReplayGuard

log = structlog.get_logger("regate.runner")
MAX_BODY_BYTES = 1024 * 1024


class GrantRequired(RegateError):
    status = 401
    code = "grant_required"


class GrantRejected(RegateError):
    status = 403
    code = "grant_rejected"


class GrantReplayed(RegateError):
    status = 409
    code = "grant_replayed"


@dataclass
class RunnerState:
    settings: RunnerSettings
    grant_keys: GrantKeys
    registry: ToolRegistry
    sandbox: Sandbox
    replay: ReplayGuard


def create_app(settings: RunnerSettings) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        work_dir = settings.work_dir or make_work_dir()
        state = RunnerState(
            settings=settings,
            grant_keys=GrantKeys(settings.grant_jwks),
            registry=stage_tools(settings.agents_dir, work_dir),
            sandbox=Sandbox(settings.bwrap, settings.sandbox_uid, settings.sandbox_gid),
            replay=ReplayGuard(),
        )
        try:
            state.sandbox.resolve()
        except RegateError as exc:
            log.error("sandbox_unavailable", message=exc.message)  # keep serving health
        log.info("runner_started", listen=str(settings.listen), work_dir=str(work_dir))
        try:
            yield {"runner": state}
        finally:
            if settings.work_dir is None:
                shutil.rmtree(work_dir, ignore_errors=True)

    return Starlette(
        routes=[
            Route("/v1/run", run, methods=["POST"]),
            Route("/v1/tools", list_tools, methods=["GET"]),
            Route("/v1/tools/{name}", get_tool, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        middleware=[RequestIdMiddleware.as_middleware()],
        exception_handlers={RegateError: _error},
        lifespan=lifespan,
    )


async def run(request: Request) -> Response:
    state: RunnerState = request.state.runner
    grant = _grant(request, state)
    body = await read_json_object(request, MAX_BODY_BYTES)
    arguments = body.get("arguments")
    if not isinstance(arguments, dict) or digest(arguments) != grant.arguments_sha256:
        raise GrantRejected("the arguments are not the ones the grant was issued for")
    if not state.replay.first_use(grant.decision_id, grant.expires_at):
        raise GrantReplayed("this grant was already used; each grant runs exactly one call")
    tool_dir = state.registry.agent_dir(grant.agent_id)
    if tool_dir is None:
        raise NotFound(f"this runner has no tools for agent {grant.agent_id!r}")
    outcome = await run_tool(
        state.sandbox, tool_dir, grant.entrypoint, arguments, Limits.from_grant(grant.limits)
    )
    state.registry.count(grant.agent_id, grant.tool, outcome.ok)
    log.info(
        "tool_run",
        decision_id=grant.decision_id,
        tool=f"{grant.agent_id}.{grant.tool}",
        ok=outcome.ok,
        error=outcome.error,
        metrics=outcome.metrics,
    )
    return JSONResponse(outcome.as_json())


def _grant(request: Request, state: RunnerState) -> Grant:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise GrantRequired("send the gateway's execution grant as 'Authorization: Bearer'")
    try:
        return verify_grant(token.strip(), state.grant_keys.current())
    except GrantError as exc:
        log.warning("grant_rejected", reason=str(exc))
        raise GrantRejected(str(exc)) from exc


async def list_tools(request: Request) -> Response:
    state: RunnerState = request.state.runner
    return JSONResponse({"tools": [t.as_json() for t in state.registry.tools.values()]})


async def get_tool(request: Request) -> Response:
    state: RunnerState = request.state.runner
    tool = state.registry.tools.get(request.path_params["name"])
    if tool is None:
        raise NotFound(f"no tool {request.path_params['name']!r}; GET /v1/tools lists them")
    return JSONResponse(tool.as_json())


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RegateError)
    log.info("request_refused", code=exc.code, status=exc.status, message=exc.message)
    return error_response(exc, request_id(request))
