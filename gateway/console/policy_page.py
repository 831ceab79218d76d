"""Policy: is OPA serving, which bundle revision, how the shadow policy compares, and a
dry run of an input against the enforced policy."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.console.forms import read_form, text_field
from gateway.console.templating import page, pretty_json, render
from gateway.decision_log import DecisionLog, DecisionQuery, check_decision_id
from gateway.policy import Decision, PolicyClient
from gateway.policy_dry_run import MAX_INPUT_BYTES, dry_run, parse_input
from gateway.shadow import ShadowPolicy
from regate.errors import RegateError


@page
async def policy(request: Request) -> Response:
    """GET /admin/policy: status, and the dry-run form holding a real input to start from:
    the decision named by `?from=`, else the newest decision that reached policy."""
    source = request.query_params.get("from", "")
    text, origin = await starting_input(request.state.decisions, source)
    return await render_policy(request, text=text, origin=origin)


@page
async def evaluate(request: Request) -> Response:
    """POST /admin/policy/eval: evaluate the posted input; nothing runs, nothing is recorded."""
    form = await read_form(request)
    text = text_field(form, "input", max_chars=MAX_INPUT_BYTES)
    try:
        decision = await dry_run(
            request.state.policy,
            request.state.input_schema,
            parse_input(text),
            actor=request.state.user.actor,
        )
    except RegateError as exc:
        return await render_policy(request, text=text, error=exc)
    return await render_policy(request, text=text, result=decision)


async def render_policy(
    request: Request,
    *,
    text: str,
    origin: str | None = None,
    result: Decision | None = None,
    error: RegateError | None = None,
) -> Response:
    client: PolicyClient = request.state.policy
    status = await client.status()
    shadow: ShadowPolicy | None = getattr(request.state, "shadow", None)
    return render(
        request,
        "policy.html",
        {
            "nav": "policy",
            "status": status,
            "shadow": {"sample_rate": shadow.sample_rate, **shadow.counts.as_json()}
            if shadow
            else None,
            "schema_ready": request.state.input_schema is not None,
            "input_text": text,
            "origin": origin,
            "result": result.as_record() if result else None,
            "error": error,
        },
        status=error.status if error else 200,
    )


async def starting_input(log: DecisionLog, source: str) -> tuple[str, str | None]:
    """The text to prefill the form with, and the decision it came from."""
    decision_id = source
    if not decision_id:
        newest = await log.search(DecisionQuery(limit=20))
        decision_id = next((d.decision_id for d in newest.decisions if d.policy_revision), "")
    if not decision_id:
        return pretty_json(SKELETON), None
    check_decision_id(decision_id)
    trail = await log.get(decision_id)
    document: Any = trail.decision.body.get("input")
    if not isinstance(document, dict):
        return pretty_json(SKELETON), None
    return pretty_json(document), decision_id


# The shape of an input (docs/policy-input.md), when no decision has one to copy.
SKELETON = {
    "input_version": 1,
    "caller": {"sub": "caller-id", "iss": "https://issuer.example", "claims": {}, "act": None},
    "target": {
        "agent_id": "calculator",
        "version": "1.0.0",
        "manifest_sha256": "0" * 64,
        "publisher": "publisher",
    },
    "tool": {
        "name": "add",
        "permissions": ["net:none"],
        "limits": {"timeout_s": 5, "memory_mb": 128, "output_kb": 64, "pids": 16},
    },
    "arguments": {"a": 1, "b": 2},
    "request": {
        "id": "dry-run",
        "time": "2026-01-01T12:00:00Z",
        "source_ip": "127.0.0.1",
        "source_ip_from": "peer",
        "method": "POST",
        "path": "/v1/invoke/calculator/add",
    },
    "usage": {"calls_last_minute": 0},
}
