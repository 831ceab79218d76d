"""The request path of one tool call, top to bottom.

authenticate → read arguments → resolve target → check arguments → ask policy →
[approval: park the call, or spend the approval it replays] → log the decision
(durably) → forward to the runner with a grant → log the receipt.

Every step returns the next value or raises a `RegateError`. Whatever happens, the
call leaves exactly one decision record; an allowed call also leaves a receipt
chained after it. Both transports, `POST /v1/invoke` and MCP's `tools/call`, come
through here; they differ only in how they read the arguments (`Call`).
Transport (HTTP parsing, JSON-RPC, clients) lives elsewhere.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from gateway.agents import AgentRegistry
from gateway.arguments import validate_arguments
from gateway.audit import AuditRecord, AuditStore
from gateway.auth import Caller, TokenVerifier
from gateway.call_approvals import Binding, CallApprovals, parse_approval_id
from gateway.errors import CallParked, PolicyDenied, RateLimited, ToolFlagged
from gateway.policy import Decision, PolicyClient
from gateway.policy_input import RequestFacts, build_policy_input
from gateway.runner_client import RunnerClient
from gateway.shadow import ShadowPolicy
from gateway.usage import UsageCounter
from regate import crypto
from regate.canonical import digest
from regate.errors import RegateError
from regate.grants import issue_grant
from regate.manifest import ToolSpec

MAX_RATE_COST = 10_000  # one call never weighs more than this many units


@dataclass(frozen=True)
class Call:
    """One tool call as its transport saw it: `/v1/invoke` or an MCP `tools/call`.

    `read_arguments` returns the call's arguments object or raises (`BadRequest`,
    `PayloadTooLarge`, ...); it runs after authentication, so an anonymous caller
    never gets a body parsed. `request.path` says which transport carried the call.
    `approval_id` is what the caller sent to replay a parked call (the
    `Regate-Approval` header, or MCP's `_meta`), unchecked: None when not a replay.
    """

    agent_id: str
    tool: str
    authorization: str | None
    read_arguments: Callable[[], Awaitable[dict[str, Any]]]
    request: RequestFacts
    approval_id: str | None = None


@dataclass
class Trail:
    """What the decision record will say, filled in as the call moves along."""

    decision_id: str
    call: Call
    caller: Caller | None = None
    target: dict[str, Any] | None = None
    policy_input: dict[str, Any] | None = None
    decision: Decision | None = None
    shadow: dict[str, Any] | None = None  # what the shadow policy said, when sampled
    approval_id: str | None = None  # the call approval this call parked or spent
    stages_ms: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.stages_ms[name] = round((time.perf_counter() - start) * 1000, 3)

    def record(self, *, outcome: str, status: int, code: str, message: str = "") -> dict[str, Any]:
        decision = self.decision.as_record() if self.decision else None
        return {
            "decision_id": self.decision_id,
            "request_id": self.call.request.id,
            "time": self.call.request.time,
            "outcome": outcome,
            "status": status,
            "code": code,
            "message": message,
            "caller": {"sub": self.caller.sub, "iss": self.caller.iss} if self.caller else None,
            "target": self.target or {"agent_id": self.call.agent_id},
            "tool": self.call.tool,
            "source_ip": self.call.request.source_ip,
            "policy": decision,
            "input": masked(self.policy_input, self.decision),
            "approval_id": self.approval_id,
            "stages_ms": self.stages_ms,
            **({"shadow": self.shadow} if self.shadow is not None else {}),
        }


def masked(policy_input: dict[str, Any] | None, decision: Decision | None) -> dict[str, Any] | None:
    """The policy input as the log keeps it: arguments the policy names in
    `obligations.redact` are masked (the tool and the argument digest see the real ones)."""
    names = decision.obligations.get("redact") if decision else None
    if policy_input is None or not isinstance(names, list):
        return policy_input
    arguments = {
        key: "[redacted]" if key in names else value
        for key, value in policy_input.get("arguments", {}).items()
    }
    return {**policy_input, "arguments": arguments}


class Pipeline:
    def __init__(
        self,
        *,
        verifier: TokenVerifier,
        agents: AgentRegistry,
        policy: PolicyClient,
        audit: AuditStore,
        runner: RunnerClient,
        usage: UsageCounter,
        approvals: CallApprovals,
        grant_key: crypto.Jwk,
        grant_ttl_s: int,
        shadow: ShadowPolicy | None = None,
    ) -> None:
        self.verifier = verifier
        self.agents = agents
        self.policy = policy
        self.audit = audit
        self.runner = runner
        self.usage = usage
        self.approvals = approvals
        self.grant_key = grant_key
        self.grant_ttl_s = grant_ttl_s
        self.shadow = shadow

    async def invoke(self, call: Call) -> dict[str, Any]:
        trail = Trail(decision_id=str(uuid.uuid4()), call=call)
        try:
            with trail.stage("authenticate"):
                trail.caller = caller = await self.verifier.authenticate(call.authorization)
            with trail.stage("read_arguments"):
                arguments = await call.read_arguments()
                approval_id = parse_approval_id(call.approval_id) if call.approval_id else None
            with trail.stage("resolve"):
                agent, tool = self.agents.resolve(call.agent_id, call.tool)
                trail.target = {
                    "agent_id": agent.agent_id,
                    "version": agent.version,
                    "manifest_sha256": agent.sha256,
                    "publisher": agent.publisher,
                }
                refuse_flagged(agent.agent_id, tool)
            with trail.stage("validate"):
                validate_arguments(tool.input_schema, arguments)
            trail.policy_input = build_policy_input(
                caller=caller,
                agent=agent,
                tool=tool,
                arguments=arguments,
                request=call.request,
                usage=self.usage.record(caller.sub, agent.agent_id, tool.name),
            )
            with trail.stage("policy"):
                decision, trail.shadow = await self.decide(trail.policy_input, trail.decision_id)
                trail.decision = decision
            enforce(decision, trail.decision_id)
            if decision.outcome == "require_approval":
                binding = Binding(
                    caller_iss=caller.iss,
                    caller_sub=caller.sub,
                    agent_id=agent.agent_id,
                    manifest_sha256=agent.sha256,
                    tool=tool.name,
                    arguments_sha256=digest(arguments),
                )
                with trail.stage("approval"):
                    await self.park_or_redeem(trail, binding, approval_id)
            # It will run: it uses its rate cost (one unit was counted when it came in).
            extra = rate_cost(decision.obligations) - 1
            self.usage.charge(caller.sub, agent.agent_id, tool.name, extra)
        except RegateError as exc:
            await self._refused(trail, exc)
            raise

        with trail.stage("audit"):
            decided = await self.audit.append(
                "decision",
                trail.decision_id,
                trail.record(
                    outcome="allow",
                    status=200,
                    code="approved_call" if trail.approval_id else "allowed",
                ),
            )
        limits = tightened(tool.limits, decision.obligations)
        grant = issue_grant(
            decision_id=trail.decision_id,
            agent_id=agent.agent_id,
            tool=tool.name,
            entrypoint=tool.entrypoint,
            limits=limits,
            arguments_sha256=digest(arguments),
            key=self.grant_key,
            ttl_s=self.grant_ttl_s,
        )
        started = time.perf_counter()
        try:
            result = await self.runner.run(
                grant, arguments, tool_timeout_s=float(limits["timeout_s"])
            )
        except RegateError as exc:
            exc.details["decision_id"] = trail.decision_id
            await self.audit.append(
                "receipt", trail.decision_id, receipt(decided, None, exc, started)
            )
            raise
        await self.audit.append(
            "receipt", trail.decision_id, receipt(decided, result, None, started)
        )
        return {
            "decision_id": trail.decision_id,
            "ok": result["ok"],
            **({"result": result["result"]} if result["ok"] else {"error": result.get("error")}),
            "metrics": result.get("metrics", {}),
        }

    async def decide(
        self, policy_input: dict[str, Any], decision_id: str
    ) -> tuple[Decision, dict[str, Any] | None]:
        """The enforced decision, and the shadow policy's answer beside it when this
        call is sampled (gateway/shadow.py): it is recorded, never obeyed."""
        if self.shadow is None:
            return await self.policy.decide(policy_input), None
        return await self.shadow.decide_beside(self.policy.decide, policy_input, decision_id)

    async def park_or_redeem(self, trail: Trail, binding: Binding, approval_id: str | None) -> None:
        """A call policy sends for approval runs only by spending an approval granted for
        exactly this call; without one it is parked (`CallParked`, answered 202)."""
        if approval_id is not None:
            trail.approval_id = approval_id
            await self.approvals.redeem(approval_id, binding, trail.decision_id)
            return
        assert trail.decision is not None
        assert trail.target is not None
        reasons = [{"code": r.code, "message": r.message} for r in trail.decision.reasons]
        masked_input = masked(trail.policy_input, trail.decision) or {}
        approval = await self.approvals.park(
            decision_id=trail.decision_id,
            binding=binding,
            agent_version=trail.target["version"],
            masked_arguments=masked_input.get("arguments", {}),
            reasons=reasons,
        )
        trail.approval_id = approval.approval_id
        raise CallParked(
            f"policy requires an admin's approval for this call; it waits as approval"
            f" {approval.approval_id} until {approval.expires_at}: poll"
            f" GET /v1/approvals/{approval.approval_id}, and once it is approved send the"
            " same call again with the approval id (on /v1/invoke the header"
            " 'Regate-Approval: <id>', on MCP params._meta 'regate.dev/approval_id')",
            approval_id=approval.approval_id,
            status="pending",
            expires_at=approval.expires_at,
            reasons=reasons,
        )

    async def refuse(self, call: Call, exc: RegateError, caller: Caller | None = None) -> None:
        """Record a call its transport refused before it could come in (e.g. an MCP
        `tools/call` on an unknown session), so that it too leaves its one record."""
        await self._refused(Trail(decision_id=str(uuid.uuid4()), call=call, caller=caller), exc)

    async def _refused(self, trail: Trail, exc: RegateError) -> None:
        exc.details["decision_id"] = trail.decision_id
        if isinstance(exc, CallParked):
            outcome = "require_approval"
        else:
            outcome = "deny" if exc.status < 500 else "error"
        await self.audit.append(
            "decision",
            trail.decision_id,
            trail.record(outcome=outcome, status=exc.status, code=exc.code, message=exc.message),
        )


def refuse_flagged(agent_id: str, tool: ToolSpec) -> None:
    """A tool whose description hides something is not approved, so not callable.

    Interim rule until admins approve manifests (issues 4 and 7): see docs/mcp.md.
    """
    if tool.flags:
        raise ToolFlagged(
            f"tool {tool.name!r} of agent {agent_id!r} is withheld: its description was"
            f" flagged ({'; '.join(f.message for f in tool.flags)}); the publisher must fix"
            " it and re-sign the manifest",
            flags=[{"code": f.code, "message": f.message} for f in tool.flags],
        )


def enforce(decision: Decision, decision_id: str) -> None:
    """Turn a `deny` into the caller's 403 (or 429 for a rate limit). `allow` goes on to
    the runner, `require_approval` to the approval step (`Pipeline.park_or_redeem`)."""
    if decision.outcome in ("allow", "require_approval"):
        return
    reasons = [{"code": r.code, "message": r.message} for r in decision.reasons]
    first = decision.reasons[0].message if decision.reasons else "no reason given"
    if decision.reasons and all(r.code == "rate_limited" for r in decision.reasons):
        retry = decision.obligations.get("retry_after_s")
        seconds = math.ceil(retry) if isinstance(retry, int | float) and retry > 0 else 60
        raise RateLimited(
            f"rate limited by policy: {first}; retry after {seconds} s",
            headers={"Retry-After": str(seconds)},
            reasons=reasons,
            retry_after_s=seconds,
        )
    raise PolicyDenied(f"denied by policy: {first}", reasons=reasons)


def tightened(
    limits: Mapping[str, int | float], obligations: Mapping[str, Any]
) -> dict[str, int | float]:
    """Apply a policy's `obligations.limits`: they may lower a limit, never raise it."""
    result = dict(limits)
    tighter = obligations.get("limits")
    if isinstance(tighter, dict):
        for name, value in tighter.items():
            if name in result and isinstance(value, int | float) and not isinstance(value, bool):
                result[name] = min(result[name], value)
    return result


def rate_cost(obligations: Mapping[str, Any]) -> int:
    """The units of the rate limits a call uses: policy's `obligations.rate_cost`, a
    whole number from 1 to `MAX_RATE_COST`; anything else counts as 1 (ignored)."""
    cost = obligations.get("rate_cost")
    if isinstance(cost, bool) or not isinstance(cost, int) or not 1 <= cost <= MAX_RATE_COST:
        return 1
    return cost


def receipt(
    decided: AuditRecord,
    result: Mapping[str, Any] | None,
    exc: RegateError | None,
    started: float,
) -> dict[str, Any]:
    """The execution's record, chained to its decision: it names the decision record's
    hash, and `regate audit verify` checks that record is earlier in the log."""
    body: dict[str, Any] = {
        "decision_id": decided.decision_id,
        "decision_seq": decided.seq,
        "decision_hash": decided.hash,
        "wall_ms": round((time.perf_counter() - started) * 1000, 3),
    }
    if exc is not None:
        body.update(ok=False, status=exc.status, error={"type": exc.code, "message": exc.message})
        return body
    assert result is not None
    error = result.get("error")
    body.update(
        ok=result["ok"],
        status=200,
        error={"type": error.get("type"), "message": error.get("message")}
        if isinstance(error, dict)
        else None,
        output_sha256=digest(result.get("result")) if result["ok"] else None,
        metrics=result.get("metrics", {}),
    )
    return body
