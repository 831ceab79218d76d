"""The shadow policy: a candidate decision asked beside the enforced one, never obeyed.

For a sample of calls (`[shadow] sample_rate`), the gateway asks OPA for
`data.regate.shadow.decision` at the same time as the enforced decision. The call
goes on with the enforced decision whatever the shadow says; the shadow's answer
goes into the decision record (`shadow`), and a disagreement (another outcome) is
logged (`shadow_disagreement`) and counted (`GET /admin/api/shadow`).

Latency: both questions are in flight together, so the caller waits for the
slower of the two, and for the shadow at most `max_wait_s` past the enforced
answer; a shadow that is later than that is recorded as `late` and abandoned. A
shadow that fails (undefined, malformed, OPA error) is recorded as such: it
never turns into a deny.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog

from gateway.errors import PolicyUnavailable
from gateway.policy import Decision, parse_decision

log = structlog.get_logger("regate.shadow")

SHADOW_PATH = "/v1/data/regate/shadow/decision"

Enforced = Callable[[Mapping[str, Any]], Awaitable[Decision]]


@dataclass
class ShadowCounts:
    """Since the gateway started. `transitions` counts disagreements by
    "enforced->shadow" outcome, e.g. {"allow->deny": 3}."""

    sampled: int = 0
    agreed: int = 0
    disagreed: int = 0
    failed: int = 0
    transitions: Counter[str] = field(default_factory=Counter)

    def as_json(self) -> dict[str, Any]:
        return {
            "sampled": self.sampled,
            "agreed": self.agreed,
            "disagreed": self.disagreed,
            "failed": self.failed,
            "transitions": dict(sorted(self.transitions.items())),
        }


class ShadowPolicy:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        sample_rate: float,
        max_wait_s: float,
        timeout_s: float,
        sample: Callable[[], float] = random.random,
    ) -> None:
        self._session = session  # the decision client's (gateway/sidecar_http.py)
        self._url = f"{base_url.rstrip('/')}{SHADOW_PATH}?provenance=true"
        self.sample_rate = sample_rate
        self._max_wait_s = max_wait_s
        self._timeout_s = timeout_s
        self._sample = sample
        self.counts = ShadowCounts()

    async def decide_beside(
        self, enforced: Enforced, policy_input: Mapping[str, Any], decision_id: str
    ) -> tuple[Decision, dict[str, Any] | None]:
        """The enforced decision (or its exception, unchanged), and what the shadow
        said for the record (None when this call is not sampled)."""
        if self._sample() >= self.sample_rate:
            return await enforced(policy_input), None
        shadow = asyncio.create_task(self._ask(policy_input), name="shadow-policy")
        try:
            decision = await enforced(policy_input)
        except BaseException:
            shadow.cancel()  # the call is refused anyway; nothing to compare with
            raise
        done, _ = await asyncio.wait({shadow}, timeout=self._max_wait_s)
        if not done:
            shadow.cancel()
            answer: Decision | str = "late"
        else:
            answer = shadow.result()
        return decision, self._compare(decision, answer, policy_input, decision_id)

    async def _ask(self, policy_input: Mapping[str, Any]) -> Decision | str:
        """The shadow decision, or a short code saying why there is none."""
        body = json.dumps({"input": policy_input}).encode()
        try:
            async with asyncio.timeout(self._timeout_s):
                async with self._session.post(
                    self._url, data=body, headers={"Content-Type": "application/json"}
                ) as response:
                    status, raw = response.status, await response.read()
        except TimeoutError:
            return "opa_timeout"
        except aiohttp.ClientError:
            return "opa_unreachable"
        if status != 200:
            return "opa_error"
        try:
            answer = json.loads(raw)
        except ValueError:
            return "opa_bad_json"
        if isinstance(answer, dict) and "result" not in answer:
            return "undefined"  # no shadow package in the bundle, or it does not decide
        try:
            return parse_decision(answer)
        except PolicyUnavailable as exc:
            return str(exc.details.get("cause", "malformed"))

    def _compare(
        self,
        enforced: Decision,
        answer: Decision | str,
        policy_input: Mapping[str, Any],
        decision_id: str,
    ) -> dict[str, Any]:
        self.counts.sampled += 1
        if isinstance(answer, str):
            self.counts.failed += 1
            log.warning("shadow_failed", decision_id=decision_id, error=answer)
            return {"error": answer, "agrees": None}
        agrees = answer.outcome == enforced.outcome
        record = {
            "outcome": answer.outcome,
            "reasons": [{"code": r.code, "message": r.message} for r in answer.reasons],
            "policy_revision": answer.policy_revision,
            "agrees": agrees,
        }
        if agrees:
            self.counts.agreed += 1
            return record
        self.counts.disagreed += 1
        self.counts.transitions[f"{enforced.outcome}->{answer.outcome}"] += 1
        log.warning(
            "shadow_disagreement",
            decision_id=decision_id,
            caller=(policy_input.get("caller") or {}).get("sub"),
            agent_id=(policy_input.get("target") or {}).get("agent_id"),
            tool=(policy_input.get("tool") or {}).get("name"),
            enforced=enforced.outcome,
            shadow=answer.outcome,
            shadow_reasons=[r.code for r in answer.reasons],
        )
        return record
