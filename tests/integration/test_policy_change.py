"""Changing policy safely, on a real stack with its own copy of policies/:
the shadow policy beside the enforced one, and reload under traffic."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import REPO, RunningStack, start_stack, stop_stack

pytestmark = pytest.mark.integration

# The candidate: test-client may make no calls at all; everything else as enforced.
CANDIDATE = {"candidate": {"rate_limits": {"per_minute": 600, "callers": {"test-client": {"per_minute": 0}}}}}  # fmt: skip


def write_atomically(path: Path, text: str) -> None:
    """As an editor saving a file would; OPA never reads half of it."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


@pytest.fixture(scope="module")
def own_stack() -> Iterator[RunningStack]:
    running = start_stack(
        "regate-policy-",
        policies=REPO / "policies",
        extra_config="\n[shadow]\nsample_rate = 1.0\nmax_wait_s = 5.0\n",
    )
    try:
        yield running
    finally:
        stop_stack(running)


@pytest.fixture(scope="module")
def shadowed(own_stack: RunningStack) -> RunningStack:
    """The stack with the candidate in its policies and OPA serving it."""
    policies = own_stack.settings.opa.policies_dir
    assert policies is not None
    write_atomically(policies / "regate" / "shadow" / "data.json", json.dumps(CANDIDATE))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        response = own_stack.invoke("calculator", "add", {"a": 1, "b": 1})
        shadow = own_stack.audit_rows(response.json()["decision_id"])[0].get("shadow")
        if shadow and shadow.get("outcome") == "deny":
            return own_stack
        time.sleep(0.2)
    pytest.fail("OPA did not load the shadow candidate within 30 s")


def decision_record(stack: RunningStack, response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    decision_id = body.get("decision_id") or body["error"]["decision_id"]
    (record,) = [r for r in stack.audit_rows(decision_id) if r["kind"] == "decision"]
    return record


def admin_get(stack: RunningStack, path: str) -> dict[str, Any]:
    assert stack.settings.admin is not None
    token = stack.settings.admin.token_file.read_text().strip()
    listen = stack.settings.admin.listen
    with httpx.Client(base_url=f"http://{listen.host_port}", timeout=10) as client:
        response = client.get(path, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_shadow_disagreement_is_recorded_logged_and_counted(shadowed: RunningStack) -> None:
    before = admin_get(shadowed, "/admin/api/shadow")

    response = shadowed.invoke("calculator", "add", {"a": 2, "b": 3})

    # The enforced decision stands: the tool ran.
    assert response.status_code == 200, response.text
    assert response.json()["result"] == {"sum": 5}
    record = decision_record(shadowed, response)
    assert record["policy"]["outcome"] == "allow"
    assert record["shadow"]["outcome"] == "deny"
    assert record["shadow"]["agrees"] is False
    assert [r["code"] for r in record["shadow"]["reasons"]] == ["rate_limited"]
    assert record["shadow"]["policy_revision"] == record["policy"]["policy_revision"]

    exported = subprocess.run(
        [sys.executable, "-m", "regate", "audit", "export", "--config", str(shadowed.config),
         "--since", "30m", "--shadow", "disagreed"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    lines = [json.loads(line) for line in exported.stdout.splitlines()]
    assert record["decision_id"] in {line["decision_id"] for line in lines}
    assert {line["body"]["shadow"]["agrees"] for line in lines} == {False}

    after = admin_get(shadowed, "/admin/api/shadow")
    assert after["enabled"] is True
    assert after["sample_rate"] == 1.0
    assert after["disagreed"] == before["disagreed"] + 1
    assert after["transitions"]["allow->deny"] == before["transitions"]["allow->deny"] + 1
    log = (shadowed.root / "logs" / "gateway.log").read_text()
    lines = [json.loads(line) for line in log.splitlines() if "shadow_disagreement" in line]
    assert any(
        line["decision_id"] == record["decision_id"]
        and (line["enforced"], line["shadow"]) == ("allow", "deny")
        for line in lines
    )


def test_shadow_agreement_and_a_denied_call(shadowed: RunningStack) -> None:
    before = admin_get(shadowed, "/admin/api/shadow")
    demo = shadowed.invoke(
        "calculator", "add", {"a": 1, "b": 1}, token=shadowed.token("demo-client")
    )
    stranger = shadowed.invoke(
        "calculator", "add", {"a": 1, "b": 1}, token=shadowed.token("stranger")
    )

    assert demo.status_code == 200
    assert decision_record(shadowed, demo)["shadow"]["agrees"] is True
    # A deny the candidate agrees with stays a deny, and is compared too.
    assert stranger.status_code == 403
    denied = decision_record(shadowed, stranger)
    assert (denied["shadow"]["outcome"], denied["shadow"]["agrees"]) == ("deny", True)
    after = admin_get(shadowed, "/admin/api/shadow")
    assert after["agreed"] == before["agreed"] + 2
    assert after["sampled"] == before["sampled"] + 2


def test_calls_refused_before_policy_carry_no_shadow(shadowed: RunningStack) -> None:
    response = shadowed.invoke("calculator", "add", {"a": "two", "b": 1})
    assert response.status_code in (400, 422)
    assert "shadow" not in decision_record(shadowed, response)


def test_policy_reloads_under_traffic_without_a_failed_call(own_stack: RunningStack) -> None:
    policies = own_stack.settings.opa.policies_dir
    assert policies is not None
    manifest = json.loads((policies / ".manifest").read_text())
    old_revision, new_revision = manifest["revision"], manifest["revision"] + "-reloaded"
    probe = own_stack.token("reload-probe")
    assert own_stack.invoke("calculator", "add", {"a": 1, "b": 1}, token=probe).status_code == 403

    statuses: list[int] = []
    decision_ids: list[str] = []
    switched = threading.Event()
    stop = threading.Event()

    def traffic() -> None:
        token = own_stack.token()
        with own_stack.client() as client:
            for n in range(3000):  # bounded, whatever happens
                if stop.is_set():
                    return
                response = client.post(
                    "/v1/invoke/calculator/add",
                    json={"arguments": {"a": n, "b": 1}},
                    headers={"Authorization": f"Bearer {token}"},
                )
                statuses.append(response.status_code)
                if response.status_code == 200:
                    decision_ids.append(response.json()["decision_id"])

    workers = [threading.Thread(target=traffic) for _ in range(2)]
    for worker in workers:
        worker.start()
    try:
        flowing = time.monotonic() + 30
        while len(decision_ids) < 5 and time.monotonic() < flowing:
            time.sleep(0.05)  # calls are flowing before the edit
        grants = json.loads((policies / "regate" / "data.json").read_text())
        grants["grants"]["calculator"].append({"caller": "reload-probe", "tools": ["add"]})
        write_atomically(policies / "regate" / "data.json", json.dumps(grants, indent=2))
        write_atomically(policies / ".manifest", json.dumps({**manifest, "revision": new_revision}))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not switched.is_set():
            if decision_ids and (
                decision_record_by_id(own_stack, decision_ids[-1])["policy"]["policy_revision"]
                == new_revision
            ):
                switched.set()
            time.sleep(0.1)
        time.sleep(0.3)  # and keep flowing a little after the switch
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=60)

    assert switched.is_set(), "decision records never showed the new revision"
    assert statuses
    assert set(statuses) == {200}, f"failed calls during reload: {sorted(set(statuses))}"
    revisions = [
        decision_record_by_id(own_stack, d)["policy"]["policy_revision"] for d in decision_ids
    ]
    assert set(revisions) == {old_revision, new_revision}
    assert revisions[0] == old_revision
    assert revisions[-1] == new_revision
    # The new policy is the one enforced, not only reported.
    after = own_stack.invoke("calculator", "add", {"a": 1, "b": 1}, token=probe)
    assert after.status_code == 200, after.text


def decision_record_by_id(stack: RunningStack, decision_id: str) -> dict[str, Any]:
    (record,) = [r for r in stack.audit_rows(decision_id) if r["kind"] == "decision"]
    return record


def test_replay_shows_what_a_working_copy_would_change(
    own_stack: RunningStack, tmp_path: Path
) -> None:
    kept = own_stack.invoke("calculator", "add", {"a": 1, "b": 1})
    demo = own_stack.invoke(
        "calculator", "add", {"a": 1, "b": 1}, token=own_stack.token("demo-client")
    )
    assert (kept.status_code, demo.status_code) == (200, 200)
    policies = own_stack.settings.opa.policies_dir
    assert policies is not None
    working = tmp_path / "policies"
    shutil.copytree(policies, working)
    data = json.loads((working / "regate" / "data.json").read_text())
    data["grants"] = {
        agent: [g for g in grants if g.get("caller") != "test-client"]
        for agent, grants in data["grants"].items()
    }
    (working / "regate" / "data.json").write_text(json.dumps(data))

    result = subprocess.run(
        [sys.executable, "-m", "regate", "policy", "replay", "--config", str(own_stack.config),
         "--since", "30m", "--dir", str(working), "--fail-on-change"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    assert result.returncode == 1, result.stdout + result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if " -> " in line[36:]}
    kept_id, demo_id = kept.json()["decision_id"], demo.json()["decision_id"]
    assert "allow -> deny [no_grant]" in rows[kept_id]
    assert "test-client" in rows[kept_id]
    assert demo_id not in rows
    assert "would change" in result.stdout
    assert "allow -> deny:" in result.stdout
