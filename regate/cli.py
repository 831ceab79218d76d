"""The `regate` command: run the services, and the operator's tools around them."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from regate import cli_approvals, crypto
from regate.settings import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from gateway.audit_stores import AuditSource

DEFAULT_CONFIG = "examples/regate.toml"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        code: int = args.handler(args)
        return code
    except (ConfigError, crypto.CryptoError) as exc:
        print(f"regate: {exc}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="regate", description=__doc__)
    sub = parser.add_subparsers(metavar="COMMAND")

    def command(name: str, help: str, handler: object) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(handler=handler)
        return p

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--config",
            default=os.environ.get("REGATE_CONFIG", DEFAULT_CONFIG),
            help="TOML settings file (default: $REGATE_CONFIG or %(default)s)",
        )
        return p

    with_config(command("up", "start OPA, the runner and the gateway; Ctrl-C stops all", cmd_up))
    with_config(command("gateway", "run the gateway alone", cmd_gateway))
    with_config(command("runner", "run the sandbox runner alone", cmd_runner))
    demo = with_config(command("demo", "set up the demo, run its calls, verify the log", cmd_demo))
    demo.add_argument("--prepare", action="store_true", help="only create keys and manifests")

    keys = sub.add_parser("keys", help="signing keys").add_subparsers(metavar="ACTION")
    new = keys.add_parser("new", help="new EC P-256 key pair as JWK files")
    new.add_argument("--name", required=True, help="key id; files are NAME.private.jwk/.jwks.json")
    new.add_argument("--dir", type=Path, default=Path("."))
    new.set_defaults(handler=cmd_keys_new)
    rotate = keys.add_parser(
        "rotate", help="new key pair with a new kid; the old public key stays in the JWKS"
    )
    rotate.add_argument("--name", required=True, help="files NAME.private.jwk/.jwks.json")
    rotate.add_argument("--dir", type=Path, default=Path("."))
    rotate.set_defaults(handler=cmd_keys_rotate)
    retire = keys.add_parser("retire", help="drop an old kid from NAME.jwks.json")
    retire.add_argument("--name", required=True)
    retire.add_argument("--dir", type=Path, default=Path("."))
    retire.add_argument("--kid", required=True, help="the key id to drop")
    retire.set_defaults(handler=cmd_keys_retire)

    manifest = sub.add_parser("manifest", help="agent manifests").add_subparsers(metavar="ACTION")
    sign = manifest.add_parser("sign", help="sign manifest.json as a compact JWS")
    sign.add_argument("manifest", type=Path)
    sign.add_argument("--key", type=Path, required=True, help="publisher's private JWK")
    sign.add_argument("--out", type=Path, help="default: stdout")
    sign.set_defaults(handler=cmd_manifest_sign)
    verify = manifest.add_parser("verify", help="verify a signed manifest against a trust store")
    verify.add_argument("signed", type=Path)
    verify.add_argument("--jwks", type=Path, required=True, help="publishers' JWKS")
    verify.set_defaults(handler=cmd_manifest_verify)
    inspect = manifest.add_parser(
        "inspect", help="show a signed manifest's header and contents WITHOUT verifying it"
    )
    inspect.add_argument("signed", type=Path)
    inspect.set_defaults(handler=cmd_manifest_inspect)

    def admin_command_in(actions: Any) -> cli_approvals.AdminCommand:
        """A factory of subcommands that talk to the admin API (`--url`, `--token-file`)."""

        def admin_command(name: str, help: str, handler: object) -> argparse.ArgumentParser:
            p = with_config(actions.add_parser(name, help=help, description=help))
            p.add_argument("--url", help="admin API address (default: [admin] listen)")
            p.add_argument("--token-file", type=Path, help="default: [admin] token_file")
            p.set_defaults(handler=handler)
            return p

        return admin_command

    agents = sub.add_parser("agents", help="agents and their approval, via the admin API")
    admin_command = admin_command_in(agents.add_subparsers(metavar="ACTION"))

    alist = admin_command(
        "list", "every agent with its state, version, signer, digest", cmd_agents_list
    )
    alist.add_argument("--json", action="store_true", help="print the API's JSON")
    ashow = admin_command("show", "one agent in full, with its quarantine diff", cmd_agents_show)
    ashow.add_argument("agent")
    approve = admin_command("approve", "approve an agent's current manifest", cmd_agents_approve)
    approve.add_argument("agent")
    approve.add_argument("--reason", default="", help="recorded in the audit log")
    approve.add_argument(
        "--sha256", help="approve only if the manifest is still this one (from 'agents list')"
    )
    approve.add_argument(
        "--permissions",
        action="append",
        default=[],
        metavar="TOOL=P1,P2",
        help="approve only these of TOOL's requested permissions (repeatable; TOOL= for none)",
    )
    arevoke = admin_command(
        "revoke", "make an agent uncallable until approved again", cmd_agents_revoke
    )
    arevoke.add_argument("agent")
    arevoke.add_argument("--reason", default="", help="recorded in the audit log")

    approvals = sub.add_parser("approvals", help="approve or deny parked calls, via the admin API")
    cli_approvals.add_commands(admin_command_in(approvals.add_subparsers(metavar="ACTION")))

    token = sub.add_parser("token", help="agent tokens").add_subparsers(metavar="ACTION")
    mint = token.add_parser("mint", help="sign a JWT (for tests and the demo)")
    mint.add_argument("--key", type=Path, required=True, help="issuer's private JWK")
    mint.add_argument("--iss", required=True)
    mint.add_argument("--sub", required=True)
    mint.add_argument("--aud", default="regate")
    mint.add_argument("--ttl", type=int, default=300, help="seconds (default %(default)s)")
    mint.set_defaults(handler=cmd_token_mint)

    audit = sub.add_parser("audit", help="the decision log").add_subparsers(metavar="ACTION")
    averify = with_config(
        audit.add_parser("verify", help="check the hash chain, receipts and signed checkpoints")
    )
    averify.add_argument(
        "--db", type=Path, help="a SQLite audit store (default: the config's [audit] store)"
    )
    averify.add_argument(
        "--jwks", type=Path, help="the gateway's public keys (default: beside the store's keys)"
    )
    averify.add_argument(
        "--anchor",
        type=Path,
        action="append",
        default=[],
        help="a file holding a checkpoint token kept off this host (repeatable)",
    )
    averify.set_defaults(handler=cmd_audit_verify)
    acheck = with_config(
        audit.add_parser(
            "checkpoint", help="print the newest signed checkpoint, to keep off this host"
        )
    )
    acheck.add_argument("--db", type=Path)
    acheck.add_argument("--jwks", type=Path, help="check it with these public keys first")
    acheck.set_defaults(handler=cmd_audit_checkpoint)
    export = with_config(audit.add_parser("export", help="write records as JSON lines"))
    export.add_argument("--db", type=Path)
    export.add_argument("--since", help="RFC 3339 time, or a duration back from now: 15m, 2h, 7d")
    export.add_argument(
        "--kind",
        action="append",
        default=[],
        help="only this kind: decision, receipt, manifest, admin (repeatable)",
    )
    export.add_argument(
        "--shadow",
        choices=["agreed", "disagreed", "failed"],
        help="only decisions where the shadow policy agreed, disagreed, or had no answer",
    )
    export.add_argument("--out", type=Path, help="default: stdout")
    export.set_defaults(handler=cmd_audit_export)
    tail = with_config(audit.add_parser("tail", help="print the newest records as JSON lines"))
    tail.add_argument("--db", type=Path)
    tail.add_argument("-n", type=int, default=10)
    tail.set_defaults(handler=cmd_audit_tail)

    policy = sub.add_parser("policy", help="the Rego bundle").add_subparsers(metavar="ACTION")
    ptest = policy.add_parser("test", help="opa fmt, opa check --strict, opa test")
    ptest.add_argument("--dir", type=Path, default=Path("policies"))
    ptest.set_defaults(handler=cmd_policy_test)
    replay = with_config(
        policy.add_parser(
            "replay",
            help="re-evaluate recorded decisions against the working-copy policies",
            description="Re-evaluate the policy inputs recorded in the audit log against"
            " the bundle in --dir with the real opa binary; print what would change.",
        )
    )
    replay.add_argument(
        "--since", required=True, help="RFC 3339 time, or a duration back from now: 15m, 2h, 7d"
    )
    replay.add_argument("--dir", type=Path, default=Path("policies"), help="the working copy")
    replay.add_argument("--db", type=Path, help="audit store (default: from the config)")
    replay.add_argument(
        "--fail-on-change", action="store_true", help="exit 1 when any outcome would change"
    )
    replay.set_defaults(handler=cmd_policy_replay)
    return parser


# --- services ---------------------------------------------------------------


def cmd_gateway(args: argparse.Namespace) -> int:
    from gateway.admin import AdminLink, create_admin_app
    from gateway.app import create_app
    from regate.logs import configure_logging
    from regate.serve import HttpLimits, serve_many

    configure_logging()
    settings = load_settings(args.config)
    gw = settings.gateway
    limits = HttpLimits(header_timeout_s=gw.header_timeout_s, max_connections=gw.max_connections)
    # The admin API, when configured, is a second server in the same process and event
    # loop, on its own listener, acting on the same catalog (gateway/admin.py).
    link = AdminLink() if settings.admin else None
    apps = [(create_app(settings, admin_link=link), gw.listen, limits)]
    if settings.admin is not None and link is not None:
        admin_limits = HttpLimits(header_timeout_s=gw.header_timeout_s, max_connections=64)
        apps.append(
            (create_admin_app(settings, settings.admin, link), settings.admin.listen, admin_limits)
        )
    serve_many(apps)
    return 0


def cmd_runner(args: argparse.Namespace) -> int:
    from regate.logs import configure_logging
    from regate.serve import serve
    from sandbox_runner.app import create_app

    configure_logging()
    settings = load_settings(args.config)
    serve(create_app(settings.runner, settings.manifests), settings.runner.listen)
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from regate.supervisor import Stack, StackError, preflight

    settings = load_settings(args.config)
    stack = Stack(
        settings, Path(args.config).resolve(), log_dir=settings.gateway.state_dir / "logs"
    )
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        stack.start(preflight())
    except StackError as exc:
        print(f"regate up: {exc}", file=sys.stderr)
        return 1
    print(f"OPA sidecar   {settings.opa.url}  (policies: {settings.opa.policies_dir})")
    print(f"runner        {settings.runner.listen}")
    print(f"gateway       {settings.gateway.listen}   POST /v1/invoke/{{agent}}/{{tool}}")
    if settings.admin is not None:
        print(f"admin API     {settings.admin.listen}   GET /admin/api/agents (regate agents list)")
    from gateway.audit_stores import audit_source

    print(f"logs          {stack.log_dir}/   audit: {audit_source(settings)}")
    print("Ctrl-C stops all three.", flush=True)
    try:
        while not stopping:
            dead = [s.name for s in stack.services if s.process and s.process.poll() is not None]
            if dead:
                print(f"regate up: {', '.join(dead)} exited; stopping the rest", file=sys.stderr)
                return 1
            time.sleep(0.2)
    finally:
        stack.stop()
        print("stopped.")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from regate.demo import run_demo

    return run_demo(Path(args.config), prepare_only=args.prepare)


# --- keys, manifests, tokens -------------------------------------------------


def cmd_keys_new(args: argparse.Namespace) -> int:
    private, public = crypto.write_key_pair(args.dir, args.name)
    print(f"wrote {private} (keep secret) and {public}")
    return 0


def cmd_manifest_sign(args: argparse.Namespace) -> int:
    from regate.manifest import ManifestError, sign_manifest

    try:
        document = json.loads(args.manifest.read_text())
        token = sign_manifest(document, crypto.load_private_key(args.key))
    except (OSError, ValueError, ManifestError) as exc:
        print(f"regate manifest sign: {args.manifest}: {exc}", file=sys.stderr)
        return 1
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(token + "\n")
    else:
        print(token)
    return 0


def cmd_manifest_verify(args: argparse.Namespace) -> int:
    from regate.manifest import ManifestError, verify_manifest

    try:
        manifest = verify_manifest(args.signed.read_text(), crypto.load_jwks(args.jwks))
    except (OSError, ManifestError) as exc:
        print(f"INVALID {args.signed}: {exc}", file=sys.stderr)
        return 1
    print(
        f"OK {args.signed}: agent {manifest.agent_id} {manifest.version}, signed by"
        f" {manifest.publisher}, sha256 {manifest.sha256}, tools {sorted(manifest.tools)}"
    )
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    from regate import keyring

    old, new = keyring.rotate(args.dir, args.name)
    print(
        f"new key {new!r} in {args.dir / (args.name + '.private.jwk')}; {args.name}.jwks.json"
        f" now holds {new!r} and {old!r} (both verify).\n"
        f"old private key kept as {args.dir / f'{args.name}.{old}.retired.jwk'}.\n"
        "next: deploy the JWKS, re-sign with the new key, then"
        f" 'regate keys retire --name {args.name} --dir {args.dir} --kid {old}'"
    )
    return 0


def cmd_keys_retire(args: argparse.Namespace) -> int:
    from regate import keyring

    keyring.retire(args.dir, args.name, args.kid)
    print(f"dropped {args.kid!r} from {args.dir / (args.name + '.jwks.json')}")
    return 0


def cmd_manifest_inspect(args: argparse.Namespace) -> int:
    from regate.manifest import read_unverified

    try:
        seen = read_unverified(args.signed.read_text(encoding="ascii", errors="replace"))
    except OSError as exc:
        print(f"regate manifest inspect: {args.signed}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"UNVERIFIED {args.signed}: nothing below is checked; use 'regate manifest verify'")
    print(f"header: {json.dumps(seen.header, sort_keys=True)}")
    if seen.header:
        print(f"signed by kid: {seen.header.get('kid')!r} (claimed)")
    print(f"payload sha256: {seen.payload_sha256}")
    doc = seen.document
    if isinstance(doc, dict):
        print(
            f"agent: {doc.get('agent_id')!r}  version: {doc.get('version')!r}"
            f"  expires: {doc.get('expires')!r}"
        )
        for tool in doc.get("tools") or []:
            if isinstance(tool, dict):
                print(
                    f"  tool {tool.get('name')!r}: permissions {tool.get('permissions')},"
                    f" entrypoint {tool.get('entrypoint')}"
                )
    else:
        print(f"payload: {json.dumps(doc)[:500]}")
    for problem in seen.problems:
        print(f"problem: {problem}")
    return 0


# --- agents (admin API) ----------------------------------------------------


def _admin_client(args: argparse.Namespace) -> Any:
    from regate.admin_client import AdminClient

    return AdminClient.from_settings(
        load_settings(args.config), url=args.url, token_file=args.token_file
    )


def _admin_call(args: argparse.Namespace, action: Any) -> int:
    from regate.admin_client import AdminClientError

    try:
        with _admin_client(args) as client:
            action(client)
    except AdminClientError as exc:
        print(f"regate agents: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_agents_list(args: argparse.Namespace) -> int:
    def run(client: Any) -> None:
        listing = client.agents()
        if args.json:
            print(json.dumps(listing, indent=2, sort_keys=True))
            return
        print(f"{'AGENT':<16} {'STATE':<12} {'CALLABLE':<9} {'VERSION':<10} {'KID':<24} SHA256")
        for agent in listing["agents"]:
            print(
                f"{agent['agent_id']:<16} {agent['state'] or '-':<12}"
                f" {'yes' if agent['callable'] else 'no':<9} {agent['version'] or '-':<10}"
                f" {(agent['signature'] or {}).get('kid', '-'):<24}"
                f" {agent['manifest_sha256'] or '-'}"
            )
            if agent["refused"]:
                print(f"  refused: {agent['refused']}")
        for refused in listing["refused"]:
            print(f"refused file {refused['file']}: {refused['reason']}")

    return _admin_call(args, run)


def cmd_agents_show(args: argparse.Namespace) -> int:
    return _admin_call(
        args, lambda client: print(json.dumps(client.agent(args.agent), indent=2, sort_keys=True))
    )


def cmd_agents_approve(args: argparse.Namespace) -> int:
    permissions: dict[str, list[str]] | None = None
    for item in args.permissions:
        tool, sep, listed = item.partition("=")
        if not sep or not tool:
            print(f"regate agents approve: --permissions {item!r}: use TOOL=P1,P2", file=sys.stderr)
            return 2
        permissions = permissions or {}
        permissions[tool] = [p for p in listed.split(",") if p]

    def run(client: Any) -> None:
        answer = client.approve(
            args.agent, reason=args.reason, permissions=permissions, manifest_sha256=args.sha256
        )
        agent = answer["agent"]
        print(
            f"approved {agent['agent_id']} {agent['version']} (sha256 {agent['manifest_sha256']});"
            f" audit action {answer['action_id']}"
        )
        for tool in agent["tools"]:
            print(f"  {tool['name']}: {tool['approved_permissions']}")

    return _admin_call(args, run)


def cmd_agents_revoke(args: argparse.Namespace) -> int:
    def run(client: Any) -> None:
        answer = client.revoke(args.agent, reason=args.reason)
        print(f"revoked {args.agent}; audit action {answer['action_id']}")

    return _admin_call(args, run)


def cmd_token_mint(args: argparse.Namespace) -> int:
    now = int(time.time())
    claims = {"iss": args.iss, "sub": args.sub, "aud": args.aud, "iat": now, "exp": now + args.ttl}
    print(crypto.sign_jwt(claims, crypto.load_private_key(args.key)))
    return 0


# --- audit ------------------------------------------------------------------


def _audit_source(args: argparse.Namespace) -> AuditSource:
    """`--db FILE` (a SQLite store), else the store the config's [audit] names."""
    from gateway.audit_stores import SqliteSource, audit_source

    if args.db:
        return SqliteSource(Path(args.db))
    return audit_source(load_settings(args.config))


def _gateway_jwks(args: argparse.Namespace) -> Path:
    if args.jwks:
        return Path(args.jwks)
    if args.db:  # a copied store: its keys/ beside it, as in a state dir
        return Path(args.db).parent / "keys" / "gateway.jwks.json"
    settings: Settings = load_settings(args.config)
    return settings.gateway.gateway_jwks


def cmd_audit_verify(args: argparse.Namespace) -> int:
    source = _audit_source(args)
    jwks = _gateway_jwks(args)
    keys = crypto.load_jwks(jwks, ["ES256"]) if jwks.exists() else None
    anchors = [path.read_text().strip() for path in args.anchor]
    report = source.verify(keys, anchors)
    if report.ok:
        print(
            f"OK: {report.records} records, hash chain intact, every receipt chained to its"
            f" decision; {report.checkpoints} signed checkpoints hold, the newest covers"
            f" {report.checkpointed} of {report.records} records ({source})"
        )
        return 0
    if report.unreadable:
        # Not evidence of tampering: nothing could be checked (store missing or down).
        print(f"CANNOT VERIFY: {report.problem}")
        return 2
    where = f"record {report.first_bad_seq}" if report.first_bad_seq else "the store"
    print(f"TAMPERED: {where}: {report.problem} ({report.records} records verified before it)")
    return 1


def cmd_audit_tail(args: argparse.Namespace) -> int:
    from regate.audit_query import QueryError

    try:
        records = _audit_source(args).tail(args.n)
    except (QueryError, sqlite3.DatabaseError) as exc:
        print(f"regate audit tail: {exc}", file=sys.stderr)
        return 2
    for record in records:
        line = {"seq": record.seq, "kind": record.kind, "at": record.recorded_at, **record.body}
        print(json.dumps(line, sort_keys=True))
    return 0


def cmd_audit_checkpoint(args: argparse.Namespace) -> int:
    from gateway.checkpoints import CheckpointError, read_checkpoint
    from regate.audit_query import QueryError

    source = _audit_source(args)
    try:
        token = source.newest_checkpoint()
    except (QueryError, sqlite3.DatabaseError) as exc:
        print(f"regate audit checkpoint: {exc}", file=sys.stderr)
        return 2
    if token is None:
        print(f"regate audit checkpoint: {source} holds no checkpoint yet", file=sys.stderr)
        return 1
    try:
        checkpoint = read_checkpoint(token, crypto.load_jwks(_gateway_jwks(args), ["ES256"]))
    except CheckpointError as exc:
        print(f"regate audit checkpoint: the newest checkpoint is forged: {exc}", file=sys.stderr)
        return 1
    print(checkpoint.token)
    print(f"covers records 1..{checkpoint.seq}, signed {checkpoint.signed_at}", file=sys.stderr)
    return 0


def cmd_audit_export(args: argparse.Namespace) -> int:
    from regate.audit_query import QueryError, export_line, parse_since, shadow_verdict

    try:
        since = parse_since(args.since) if args.since else None
        records = _audit_source(args).select(since=since, kinds=args.kind)
        if args.shadow:
            records = (r for r in records if shadow_verdict(r) == args.shadow)
        out = args.out.open("w") if args.out else sys.stdout
        try:
            count = 0
            for record in records:
                out.write(json.dumps(export_line(record), sort_keys=True) + "\n")
                count += 1
        finally:
            if args.out:
                out.close()
    except QueryError as exc:
        print(f"regate audit export: {exc}", file=sys.stderr)
        return 2
    print(f"exported {count} records", file=sys.stderr)
    return 0


def cmd_policy_replay(args: argparse.Namespace) -> int:
    from regate.audit_query import QueryError, parse_since
    from regate.opa import OpaNotFound, find_opa
    from regate.replay import ReplayError, recorded_decisions, render, replay

    if not (args.dir / ".manifest").is_file():
        message = f"{args.dir} is not a policy bundle (no .manifest); pass --dir"
        print(f"regate policy replay: {message}", file=sys.stderr)
        return 2
    try:
        since = parse_since(args.since)
        records = _audit_source(args).select(since=since, kinds=["decision"])
        report = replay(find_opa(), args.dir, recorded_decisions(records))
    except (QueryError, ReplayError, OpaNotFound) as exc:
        print(f"regate policy replay: {exc}", file=sys.stderr)
        return 2
    print("\n".join(render(report, args.dir)))
    return 1 if args.fail_on_change and report.changes else 0


def cmd_policy_test(args: argparse.Namespace) -> int:
    from regate.policy_check import run_policy_checks

    return run_policy_checks(args.dir)
