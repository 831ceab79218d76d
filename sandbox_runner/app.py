"""The sandbox runner's Starlette app: run one granted call, report tool health."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from regate import crypto
from regate.canonical import digest
from regate.error_handlers import exception_handlers
from regate.errors import NotFound, RegateError
from regate.grants import Grant, GrantError, GrantKeys, verify_grant
from regate.jsonbody import read_json_object
from regate.manifest_dir import load_manifest_dir
from regate.middleware import RequestIdMiddleware
from regate.settings import ManifestSettings, RunnerSettings
from sandbox_runner import cgroups
from sandbox_runner.limits import Limits
from sandbox_runner.nsjail import find_nsjail
from sandbox_runner.outcome import RunOutcome
from sandbox_runner.pool import PoolKey, SandboxPool
from sandbox_runner.redact import redact
from sandbox_runner.registry import ToolHealth, ToolRegistry, build_registry, make_work_dir
from sandbox_runner.replay import ReplayGuard
from sandbox_runner.sandbox import Sandbox, Started, finish, run_tool, start

log = structlog.get_logger("regate.runner")
MAX_BODY_BYTES = 1024 * 1024
MAX_GRANT_LIFETIME_S = 300
POOLED_TOOLS = 16  # tools kept warm at once when the pool is on


class GrantRequired(RegateError):
    status = 401
    code = "grant_required"


class GrantRejected(RegateError):
    status = 403
    code = "grant_rejected"


class GrantReplayed(RegateError):
    status = 409
    code = "grant_replayed"


class ToolUnavailable(RegateError):
    status = 503
    code = "tool_unavailable"


@dataclass
class RunnerState:
    settings: RunnerSettings
    grant_keys: GrantKeys
    registry: ToolRegistry
    sandbox: Sandbox
    ceiling: Limits
    replay: ReplayGuard
    slots: asyncio.Semaphore
    pool: SandboxPool | None = None


def create_app(settings: RunnerSettings, manifests: ManifestSettings) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        work_dir = settings.work_dir or make_work_dir()
        verified, _ = load_manifest_dir(
            manifests.dir, crypto.load_jwks(manifests.publishers_jwks), manifests.revoked_kids
        )
        ceiling = Limits(
            settings.max_timeout_s,
            settings.max_memory_mb,
            settings.max_output_kb,
            settings.max_pids,
        )
        state = RunnerState(
            settings=settings,
            grant_keys=GrantKeys(settings.grant_jwks),
            registry=build_registry(verified, settings.agents_dir, work_dir),
            sandbox=Sandbox(
                sandbox_binary(settings, work_dir),
                settings.sandbox_uid,
                settings.sandbox_gid,
                cgroups=cgroups.detect(),
                nproc_budget=nproc_budget(settings),
                backend=settings.backend,
            ),
            ceiling=ceiling,
            replay=ReplayGuard(),
            slots=asyncio.Semaphore(settings.max_concurrent),
        )
        try:
            state.sandbox.resolve()
        except RegateError as exc:
            log.error("sandbox_unavailable", message=exc.message)  # keep serving health
        else:
            state.pool = make_pool(settings, state.sandbox)
        log.info(
            "runner_started",
            listen=str(settings.listen),
            work_dir=str(work_dir),
            sandbox=state.sandbox.describe(),
        )
        try:
            yield {"runner": state}
        finally:
            if state.pool is not None:
                await state.pool.close()
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
        exception_handlers=exception_handlers(
            event="request_refused", not_found_hint="the runner serves /v1/run and /v1/tools"
        ),
        lifespan=lifespan,
    )


def nproc_budget(settings: RunnerSettings) -> int:
    """RLIMIT_NPROC for the sandbox uid: room for every call at once, and for every
    sandbox waiting in the pool (each may be a tool's whole process tree)."""
    sandboxes = settings.max_concurrent + settings.pool_size * POOLED_TOOLS
    return sandboxes * (settings.max_pids + 8)


def make_pool(settings: RunnerSettings, sandbox: Sandbox) -> SandboxPool | None:
    if settings.pool_size == 0:
        return None
    if settings.backend != "bwrap":
        # nsjail's own --time_limit runs from its start, not from the call's.
        log.warning("sandbox_pool_off", reason="only the bwrap backend is pooled")
        return None

    async def start_for(key: PoolKey) -> Started:
        return await start(sandbox, key.tool_dir, key.entrypoint, key.limits)

    pool = SandboxPool(start_for, settings.pool_size, max_tools=POOLED_TOOLS)
    pool.open()
    log.info("sandbox_pool", size=settings.pool_size, max_tools=POOLED_TOOLS)
    return pool


def sandbox_binary(settings: RunnerSettings, work_dir: Path) -> str:
    """The configured sandbox program. nsjail may live in a virtualenv the sandbox
    uid cannot reach (a checkout under /root): a root runner copies it into its
    own work dir, as it does the tools."""
    if settings.backend != "nsjail":
        return settings.bwrap
    found = find_nsjail(settings.nsjail)
    if found is None or os.geteuid() != 0:
        return settings.nsjail
    staged = work_dir / "bin" / "nsjail"
    staged.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(found, staged)
    staged.chmod(0o755)
    return str(staged)


async def run(request: Request) -> Response:
    state: RunnerState = request.state.runner
    grant = _grant(request, state)
    body = await read_json_object(request, MAX_BODY_BYTES)
    arguments = body.get("arguments")
    if not isinstance(arguments, dict) or digest(arguments) != grant.arguments_sha256:
        raise GrantRejected("the arguments are not the ones the grant was issued for")
    tool = _tool(state, grant)
    if not state.replay.first_use(grant.decision_id, grant.expires_at):
        raise GrantReplayed("this grant was already used; each grant runs exactly one call")
    try:
        limits = Limits.from_grant(grant.limits, state.ceiling)
    except ValueError as exc:
        raise GrantRejected(f"the grant's limits are unusable: {exc}") from exc

    started = time.perf_counter()
    key = PoolKey(state.registry.agent_dir(grant.agent_id), tuple(tool.spec.entrypoint), limits)
    async with state.slots:
        outcome = await run_in_sandbox(state, key, arguments)
    duration_ms = round((time.perf_counter() - started) * 1000, 3)
    state.registry.record(tool, outcome.ok, outcome.error, duration_ms)
    if outcome.ok:
        filtered = redact(outcome.result)
        outcome.result = filtered.value
        outcome.metrics["redactions"] = filtered.count
    return JSONResponse(outcome.as_json(), background=BackgroundTask(log_run, grant, tool, outcome))


async def log_run(grant: Grant, tool: ToolHealth, outcome: RunOutcome) -> None:
    """The run's log line, written once the answer is on its way (in the request's
    task, after the response): the caller does not wait for it."""
    log.info(
        "tool_run",
        decision_id=grant.decision_id,
        tool=tool.name,
        ok=outcome.ok,
        error=outcome.error,
        metrics=outcome.metrics,
    )


async def run_in_sandbox(state: RunnerState, key: PoolKey, arguments: dict[str, Any]) -> RunOutcome:
    """A pre-started sandbox from the pool when one with these limits waits, else a
    fresh one; either way it serves this call alone and is destroyed after it."""
    if state.pool is None:
        return await run_tool(state.sandbox, key.tool_dir, key.entrypoint, arguments, key.limits)
    with state.pool.call():
        started = state.pool.take(key)
        pooled = started is not None
        if started is None:
            started = await start(state.sandbox, key.tool_dir, key.entrypoint, key.limits)
        outcome = await finish(state.sandbox, started, arguments)
    outcome.metrics["pooled"] = pooled
    return outcome


def _grant(request: Request, state: RunnerState) -> Grant:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise GrantRequired("send the gateway's execution grant as 'Authorization: Bearer'")
    try:
        grant = verify_grant(token.strip(), state.grant_keys.current())
    except GrantError as exc:
        log.warning("grant_rejected", reason=str(exc))
        raise GrantRejected(str(exc)) from exc
    if grant.expires_at - time.time() > MAX_GRANT_LIFETIME_S:
        raise GrantRejected(f"grants may live at most {MAX_GRANT_LIFETIME_S} s")
    return grant


def _tool(state: RunnerState, grant: Grant) -> ToolHealth:
    """The registry's tool for this grant; the grant must name its verified entrypoint."""
    tool = state.registry.get(grant.agent_id, grant.tool)
    if tool is None:
        raise NotFound(f"this runner has no verified tool {grant.agent_id}.{grant.tool}")
    if tuple(grant.entrypoint) != tool.spec.entrypoint:
        raise GrantRejected("the grant's entrypoint is not the one in the verified manifest")
    if tool.state == "unavailable":
        raise ToolUnavailable(f"tool {tool.name} cannot run: {tool.detail}")
    return tool


async def list_tools(request: Request) -> Response:
    state: RunnerState = request.state.runner
    return JSONResponse(
        {
            "sandbox": state.sandbox.describe(),
            "pool": state.pool.describe() if state.pool is not None else None,
            "summary": state.registry.summary(),
            "tools": [t.as_json() for t in state.registry.tools.values()],
        }
    )


async def get_tool(request: Request) -> Response:
    state: RunnerState = request.state.runner
    tool = state.registry.tools.get(request.path_params["name"])
    if tool is None:
        raise NotFound(f"no tool {request.path_params['name']!r}; GET /v1/tools lists them")
    return JSONResponse(tool.as_json())


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})
