"""A policy dry run for admins: check an input document, ask the loaded policy, run nothing.

The input must be the versioned document the gateway itself sends
(policies/schema/input.json, docs/policy-input.md), so that what an admin tries is
what a real call would be decided on. The question goes through the gateway's own
OPA client (gateway/policy.py), against the bundle OPA serves now. Nothing is
forwarded, granted or written to the audit store: a dry run decides no call.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import structlog
from jsonschema.validators import Draft7Validator

from gateway.arguments import NO_REMOTE_REFS
from gateway.policy import Decision, PolicyClient
from regate.errors import RegateError
from regate.jsonbody import parse_json
from regate.opa import REPO_ROOT

log = structlog.get_logger("regate.policy_dry_run")

SCHEMA_PATH = Path("schema") / "input.json"  # under the policies directory
MAX_INPUT_BYTES = 64 * 1024


class InvalidPolicyInput(RegateError):
    status = 422
    code = "invalid_policy_input"


class DryRunUnavailable(RegateError):
    status = 503
    code = "dry_run_unavailable"


class InputSchema:
    """The policy input's JSON Schema, read once when the admin listener starts."""

    def __init__(self, schema: Mapping[str, Any], source: Path) -> None:
        Draft7Validator.check_schema(schema)
        self._validator = Draft7Validator(schema, registry=NO_REMOTE_REFS)
        self.source = source

    @classmethod
    def load(cls, policies_dir: Path | None) -> InputSchema | None:
        """The schema beside the policies (the repository's when OPA runs elsewhere), or
        None (logged): dry runs are then refused."""
        path = (policies_dir or REPO_ROOT / "policies") / SCHEMA_PATH
        try:
            return cls(json.loads(path.read_text(encoding="utf-8")), path)
        except (OSError, ValueError, jsonschema.SchemaError) as exc:
            log.error("policy_input_schema_unreadable", path=str(path), error=str(exc))
            return None

    def check(self, document: Any) -> None:
        """Raise `InvalidPolicyInput` naming the first failing field, or return."""
        error = jsonschema.exceptions.best_match(self._validator.iter_errors(document))
        if error is None:
            return
        path = "/" + "/".join(str(p) for p in error.absolute_path)
        raise InvalidPolicyInput(
            f"the input at {path} does not match the policy input schema: {error.message}"
            " (see docs/policy-input.md)",
            path=path,
            schema_rule=error.validator,
        )


def parse_input(text: str) -> Any:
    """The dry-run form's text area: strict JSON, size-capped."""
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) > MAX_INPUT_BYTES:
        raise InvalidPolicyInput(f"the input is over {MAX_INPUT_BYTES // 1024} KiB")
    if not raw.strip():
        raise InvalidPolicyInput("paste a policy input document (a JSON object) to evaluate")
    return parse_json(raw, what="the policy input")


async def dry_run(
    policy: PolicyClient, schema: InputSchema | None, document: Any, *, actor: str
) -> Decision:
    """The decision the loaded policy gives `document`, or a clear refusal."""
    if schema is None:
        raise DryRunUnavailable(
            f"the policy input schema ({SCHEMA_PATH} under the policies directory) could not"
            " be read when the admin listener started, so inputs cannot be checked; fix it"
            " and restart"
        )
    schema.check(document)
    decision = await policy.decide(document)  # PolicyUnavailable (503) if OPA cannot say
    log.info(
        "policy_dry_run",
        actor=actor,
        outcome=decision.outcome,
        policy_revision=decision.policy_revision,
    )
    return decision
