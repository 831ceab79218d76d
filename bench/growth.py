"""Growth curves: grants in policy data, audit log size, memory over a soak.

    .venv/bin/python bench/growth.py [--grants 10,1000,100000] [--duration 4]
                                     [--audit-records 1000000] [--soak-seconds 60]
                                     [--only grants|audit|soak]

grants   For each size, a stack whose policy data (data.regate.grants) holds that
         many grants: OPA queried directly and a denied call through the gateway
         (the worst case: no grant matches, so policy looks at all of them),
         c=8 from a separate process; and OPA's resident memory.
audit    An audit store of N records (decision + receipt pairs, as the gateway
         writes them, hash-chained), built in bulk; then the time of
         `regate audit verify` (gateway.audit.verify_chain), of one decision's trail
         by id, of the newest 50 denials, and of a filter no index serves (a caller
         that made one call: every record's JSON is read).
soak     A stack (pool on) under a steady mix of denied calls (c=4) and sandboxed
         calls (c=2) for --soak-seconds; the resident memory (RSS) of the gateway,
         the runner and OPA sampled through it, as a table: flat is the target.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from decision_path import DENIED_CALL, LOAD, load, opa_input
from stack import REPO, running_stack

from gateway.audit import GENESIS, connect, hash_with_body, verify_chain
from gateway.decision_log import DecisionQuery, SqliteDecisionLog
from regate.canonical import canonical_json
from regate.demo import mint_token

# --- grants ------------------------------------------------------------------------


def policies_with_grants(count: int, root: Path) -> Path:
    """A copy of policies/ whose data.regate.grants holds `count` grants (or just the
    shipped ones, when there are more of those): others for other callers, spread
    over 500 other agents."""
    target = root / f"policies-{count}"
    shutil.copytree(REPO / "policies", target)
    data_file = target / "regate" / "data.json"
    data = json.loads(data_file.read_text())
    grants: dict[str, list[dict[str, object]]] = data["grants"]
    shipped = sum(len(agent_grants) for agent_grants in grants.values())
    for i in range(max(count - shipped, 0)):
        grants.setdefault(f"agent-{i % 500}", []).append({"caller": f"caller-{i}", "tools": ["*"]})
    data_file.write_text(json.dumps(data))
    return target


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def grants_curve(sizes: list[int], duration: float) -> str:
    lines = [
        f"{'grants':>8}{'opa p50':>9}{'opa p99':>9}{'opa r/s':>9}"
        f"{'deny p50':>10}{'deny p99':>10}{'deny r/s':>10}{'not 403':>9}{'opa MB':>8}"
        f"   (c=8, {duration:g} s, ms)"
    ]
    with tempfile.TemporaryDirectory(prefix="regate-grants-") as tmp:
        for count in sizes:
            policies = policies_with_grants(count, Path(tmp))
            with running_stack("bwrap", policies=policies) as stack:
                opa_url = f"{stack.settings.opa.url.base_url}/v1/data/regate/authz/decision"
                direct = load(
                    opa_url, method="POST", body=opa_input("demo-client"), expect=200,
                    concurrency=8, duration=duration,
                )  # fmt: skip
                token = mint_token(stack.settings, "demo-client", ttl_s=3600)
                denied = load(
                    f"{stack.gateway_url}/v1/invoke/ops/shell", method="POST", body=DENIED_CALL,
                    headers=f"Authorization: Bearer {token}", expect=403,
                    concurrency=8, duration=duration,
                )  # fmt: skip
                opa_mb = rss_mb(stack.pids["opa"])
            lines.append(
                f"{count:>8}{direct['p50_ms']:9.2f}{direct['p99_ms']:9.2f}{direct['rps']:9.0f}"
                f"{denied['p50_ms']:10.2f}{denied['p99_ms']:10.2f}{denied['rps']:10.0f}"
                f"{denied['errors']:9.0f}{opa_mb:8.0f}"
            )
    return "\n".join(lines)


# --- audit -------------------------------------------------------------------------

PLACEHOLDER = "00000000-0000-4000-8000-000000000000"


def decision_template() -> dict[str, Any]:
    return {
        "decision_id": PLACEHOLDER,
        "request_id": "0" * 32,
        "time": "2026-11-22T12:00:00.000Z",
        "outcome": "allow",
        "status": 200,
        "code": "allowed",
        "message": "",
        "caller": {"sub": "demo-client", "iss": "https://issuer.bench.regate"},
        "target": {"agent_id": "calculator", "version": "1.0.0", "manifest_sha256": "a" * 64, "publisher": "publisher"},
        "tool": "add",
        "source_ip": "127.0.0.1",
        "policy": {"outcome": "allow", "reasons": [{"code": "granted", "message": "caller has a grant"}], "obligations": {}, "policy_revision": "unversioned"},
        "input": {"arguments": {"a": 1, "b": 2}},
        "stages_ms": {"authenticate": 0.21, "read_arguments": 0.05, "resolve": 0.01, "validate": 0.04, "policy": 1.2},
    }  # fmt: skip


def build_audit_store(path: Path, records: int) -> float:
    """`records` records (decision + receipt pairs; every tenth decision a denial,
    without a receipt) chained as the gateway chains them. The bodies are canonical
    JSON from a template with the ids put in, which is what canonicalizing each body
    would give (ids are plain ASCII), at a fraction of the cost. Returns seconds."""
    started = time.perf_counter()
    conn = connect(path)
    allow = canonical_json(decision_template()).decode()
    deny_body = decision_template() | {"outcome": "deny", "status": 403, "code": "policy_denied"}
    deny = canonical_json(deny_body).decode()
    receipt = canonical_json(
        {"decision_id": PLACEHOLDER, "decision_hash": "H" * 64, "ok": True, "status": 200, "wall_ms": 12.5, "output_sha256": "b" * 64, "metrics": {"wall_ms": 11.0}}
    ).decode()  # fmt: skip
    base = datetime(2026, 11, 1, tzinfo=UTC)
    rows: list[tuple[Any, ...]] = []
    seq, head, n = 0, GENESIS, 0
    conn.execute("BEGIN")
    while seq < records:
        decision_id = str(uuid.UUID(int=n + 1, version=4))
        denied = n % 10 == 9
        kinds = [("decision", (deny if denied else allow).replace(PLACEHOLDER, decision_id))]
        if not denied:
            kinds.append(("receipt", receipt.replace(PLACEHOLDER, decision_id)))
        for kind, body in kinds:
            if seq >= records:
                break
            seq += 1
            if kind == "receipt":
                body = body.replace("H" * 64, head)  # the decision record just written
            at = (base + timedelta(microseconds=seq * 1000)).isoformat(timespec="microseconds")
            digest = hash_with_body(seq, kind, decision_id, at, body.encode(), head)
            rows.append((seq, kind, decision_id, at, body, head, digest))
            head = digest
        n += 1
        if len(rows) >= 50_000:
            conn.executemany("INSERT INTO audit_log VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            rows.clear()
    conn.executemany("INSERT INTO audit_log VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    conn.execute("COMMIT")
    conn.close()
    return time.perf_counter() - started


def timed(fn: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return (time.perf_counter() - started) * 1000, result


def audit_curve(records: int) -> str:
    with tempfile.TemporaryDirectory(prefix="regate-audit-") as tmp:
        path = Path(tmp) / "audit.sqlite3"
        built_s = build_audit_store(path, records)
        size_mb = path.stat().st_size / 2**20
        verify_ms, report = timed(lambda: verify_chain(path))
        if not report.ok or report.records != records:
            raise SystemExit(f"the generated audit store does not verify: {report}")
        log = SqliteDecisionLog(path)
        middle = str(uuid.UUID(int=records // 4, version=4))
        get_ms, trail = timed(lambda: asyncio.run(log.get(middle)))
        assert trail.decision is not None
        deny_ms, page = timed(lambda: asyncio.run(log.search(DecisionQuery(outcome="deny", limit=50))))  # fmt: skip
        assert len(page.decisions) == 50
        scan_ms, nobody = timed(lambda: asyncio.run(log.search(DecisionQuery(caller="rare-caller"))))  # fmt: skip
        assert len(nobody.decisions) == 0
    rate = records / (verify_ms / 1000)
    return "\n".join(
        [
            f"audit store of {records:,} records ({size_mb:.0f} MiB, built in {built_s:.1f} s)",
            f"  verify (whole chain)          {verify_ms / 1000:8.2f} s   ({rate:,.0f} records/s)",
            f"  one decision's trail by id    {get_ms:8.2f} ms  (index on decision_id)",
            f"  newest 50 denials             {deny_ms:8.2f} ms  (newest first, stops at 50)",
            f"  caller filter, no match       {scan_ms:8.2f} ms  (reads every record's JSON)",
        ]
    )


# --- soak --------------------------------------------------------------------------


def soak_curve(seconds: float, samples: int = 10) -> str:
    allowed = '{"arguments": {"a": 1, "b": 2}}'
    with running_stack("bwrap", pool_size=2) as stack:
        token = mint_token(stack.settings, "demo-client", ttl_s=int(seconds) + 3600)
        auth = ["--header", f"Authorization: Bearer {token}", "--method", "POST"]
        loads = [
            [f"{stack.gateway_url}/v1/invoke/ops/shell", DENIED_CALL, "403", "4"],
            [f"{stack.gateway_url}/v1/invoke/calculator/add", allowed, "200", "2"],
        ]
        procs = []
        for url, body, expect, concurrency in loads:
            argv = [sys.executable, LOAD, "--url", url, "--body", body, "--expect", expect]
            argv += ["--concurrency", concurrency, "--duration", str(seconds), *auth]
            procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE))
        names = ("gateway", "runner", "opa")
        rows = [f"{'t s':>6}" + "".join(f"{n + ' MB':>12}" for n in names)]
        started = time.monotonic()
        for i in range(samples + 1):
            wake = started + 1 + i * seconds / samples  # after load.py's 1 s warm-up
            time.sleep(max(0.0, wake - time.monotonic()))
            mbs = [rss_mb(stack.pids[n]) for n in names]
            rows.append(f"{time.monotonic() - started:6.0f}" + "".join(f"{m:12.1f}" for m in mbs))
        results = [json.loads(p.communicate(timeout=seconds + 120)[0]) for p in procs]
    rows.append(
        f"load: denied {results[0]['count']} calls ({results[0]['errors']} errors),"
        f" sandboxed {results[1]['count']} calls ({results[1]['errors']} errors)"
    )
    return "\n".join(rows)


def main(args: argparse.Namespace) -> None:
    parts = {args.only} if args.only else {"grants", "audit", "soak"}
    if "grants" in parts:
        sizes = [int(n) for n in args.grants.split(",")]
        print(grants_curve(sizes, args.duration), flush=True)
    if "audit" in parts:
        print(audit_curve(args.audit_records), flush=True)
    if "soak" in parts:
        print(soak_curve(args.soak_seconds), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grants", default="10,1000,100000")
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--audit-records", type=int, default=1_000_000)
    parser.add_argument("--soak-seconds", type=float, default=60.0)
    parser.add_argument("--only", choices=["grants", "audit", "soak"])
    main(parser.parse_args())
