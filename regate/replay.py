"""`regate policy replay`: what a policy change would have decided on recorded calls.

Each decision record holds the policy input the gateway sent and the decision OPA
gave. Replay sends those inputs, in batches, to the real `opa eval` on the
working-copy bundle and compares the outcomes. Inputs are as recorded: the request
time and the usage counters of the day (so time windows and rate limits replay
faithfully), and arguments the policy had masked (`[redacted]`) stay masked, so a
rule that reads a masked argument sees the mask: those rows are marked.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.audit import AuditRecord

BATCH = 500
MASK = "[redacted]"
# An object keyed by the input's index, so an undefined decision leaves a gap
# rather than shifting the others.
QUERY = "{i: d | some i, r in input.records; d := data.regate.authz.decision with input as r}"
UNDEFINED = "undefined"


class ReplayError(Exception):
    """OPA could not evaluate the working copy, or the log could not be read."""


@dataclass(frozen=True)
class Recorded:
    decision_id: str
    recorded_at: str
    caller: str
    call: str  # agent.tool
    outcome: str  # what the policy decided then
    policy_input: dict[str, Any]
    masked: bool  # some argument was redacted in the log


@dataclass(frozen=True)
class Change:
    recorded: Recorded
    outcome: str  # what the working copy decides
    reasons: tuple[str, ...]  # its reason codes


@dataclass
class ReplayReport:
    replayed: int = 0
    skipped: int = 0  # records without a policy decision (refused before policy, OPA down)
    changes: list[Change] = field(default_factory=list)
    transitions: Counter[str] = field(default_factory=Counter)


def recorded_decisions(records: Iterable[AuditRecord]) -> Iterator[Recorded | None]:
    """The decision records among `records` (from any audit store); None for those
    that never reached the policy."""
    for record in records:
        if record.kind != "decision":
            continue
        body = record.body
        policy, policy_input = body.get("policy"), body.get("input")
        if not isinstance(policy, dict) or not isinstance(policy_input, dict):
            yield None
            continue
        arguments = policy_input.get("arguments")
        yield Recorded(
            decision_id=record.decision_id,
            recorded_at=record.recorded_at,
            caller=str((body.get("caller") or {}).get("sub", "-")),
            call=f"{(body.get('target') or {}).get('agent_id', '-')}.{body.get('tool', '-')}",
            outcome=str(policy.get("outcome")),
            policy_input=policy_input,
            masked=isinstance(arguments, dict) and MASK in arguments.values(),
        )


def replay(opa: str, policies: Path, records: Iterable[Recorded | None]) -> ReplayReport:
    report = ReplayReport()
    batch: list[Recorded] = []
    for recorded in records:
        if recorded is None:
            report.skipped += 1
            continue
        batch.append(recorded)
        if len(batch) == BATCH:
            _compare(report, batch, evaluate(opa, policies, [r.policy_input for r in batch]))
            batch = []
    if batch:
        _compare(report, batch, evaluate(opa, policies, [r.policy_input for r in batch]))
    return report


def _compare(
    report: ReplayReport, batch: Sequence[Recorded], decisions: Sequence[dict[str, Any] | None]
) -> None:
    for recorded, decision in zip(batch, decisions, strict=True):
        report.replayed += 1
        outcome = str(decision.get("outcome")) if decision else UNDEFINED
        if outcome == recorded.outcome:
            continue
        reasons = tuple(
            str(r.get("code")) for r in (decision or {}).get("reasons", []) if isinstance(r, dict)
        )
        report.changes.append(Change(recorded, outcome, reasons))
        report.transitions[f"{recorded.outcome} -> {outcome}"] += 1


def evaluate(
    opa: str, policies: Path, inputs: Sequence[dict[str, Any]]
) -> list[dict[str, Any] | None]:
    """The working copy's decision for each input (None where it is undefined)."""
    argv = [opa, "eval", "--bundle", str(policies), "--stdin-input", "--format", "json", QUERY]
    try:
        result = subprocess.run(
            argv,
            input=json.dumps({"records": list(inputs)}),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ReplayError(f"could not run {opa} eval: {exc}") from exc
    if result.returncode != 0:
        raise ReplayError(
            f"opa eval could not evaluate the bundle in {policies} (run 'regate policy test"
            f" --dir {policies}' to see why): {(result.stderr or result.stdout).strip()[:2000]}"
        )
    try:
        value = json.loads(result.stdout)["result"][0]["expressions"][0]["value"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ReplayError(f"opa eval answered something unexpected: {result.stdout[:300]}") from exc
    return [value.get(str(i)) for i in range(len(inputs))]


def bundle_revision(policies: Path) -> str:
    try:
        return str(json.loads((policies / ".manifest").read_text()).get("revision", "?"))
    except (OSError, ValueError, AttributeError):
        return "unversioned"


def render(report: ReplayReport, policies: Path) -> list[str]:
    """The table of what would change, then the counts."""
    lines: list[str] = []
    if report.changes:
        lines.append(
            f"{'DECISION ID':<36}  {'RECORDED AT':<19}  {'CALLER':<16}  {'CALL':<24}  CHANGE"
        )
        for change in report.changes:
            recorded = change.recorded
            mark = "  (masked arguments*)" if recorded.masked else ""
            lines.append(
                f"{recorded.decision_id:<36}  {recorded.recorded_at[:19]:<19}"
                f"  {recorded.caller[:16]:<16}  {recorded.call[:24]:<24}"
                f"  {recorded.outcome} -> {change.outcome}"
                f" [{', '.join(change.reasons) or '-'}]{mark}"
            )
        lines.append("")
    lines.append(
        f"replayed {report.replayed} decisions against {policies} (revision"
        f" {bundle_revision(policies)}): {len(report.changes)} would change,"
        f" {report.replayed - len(report.changes)} unchanged;"
        f" {report.skipped} skipped (no policy decision recorded)"
    )
    for transition, count in sorted(report.transitions.items()):
        lines.append(f"  {transition}: {count}")
    if any(change.recorded.masked for change in report.changes):
        lines.append(
            "* arguments masked in the log were replayed as '[redacted]': a rule reading"
            " them saw the mask, not the value"
        )
    return lines
