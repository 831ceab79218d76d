"""`regate approvals ...`: approvals of parked calls, through the admin API.

Not `regate agents approve`, which approves an agent's *manifest*. These decide one
call that policy sent for an admin's approval (docs/api.md, "Approvals of calls").
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from regate.settings import load_settings

STATUSES = ("pending", "approved", "denied", "expired", "used")


# (name, help, handler) -> the subcommand's parser, with --config, --url, --token-file.
AdminCommand = Callable[[str, str, object], argparse.ArgumentParser]


def add_commands(command: AdminCommand) -> None:
    """`regate approvals ACTION`: `command` makes each action's parser (regate/cli.py)."""
    listing = command("list", "parked calls, newest first", cmd_list)
    listing.add_argument("--status", choices=STATUSES, help="only these (e.g. pending)")
    listing.add_argument("--json", action="store_true", help="print the API's JSON")
    show = command("show", "one parked call: caller, tool, masked arguments, reasons", cmd_show)
    show.add_argument("approval_id")
    for verdict, help in (("approve", "let the call run once"), ("deny", "refuse the call")):
        p = command(verdict, help, cmd_decide)
        p.add_argument("approval_id")
        p.add_argument("--reason", required=True, help="shown to the caller and audited")
        p.set_defaults(verdict=verdict)


def _call(args: argparse.Namespace, action: Callable[[Any], None]) -> int:
    from regate.admin_client import AdminClient, AdminClientError

    try:
        settings = load_settings(args.config)
        with AdminClient.from_settings(settings, url=args.url, token_file=args.token_file) as c:
            action(c)
    except AdminClientError as exc:
        print(f"regate approvals: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    def run(client: Any) -> None:
        listing = client.call_approvals(status=args.status)
        if args.json:
            print(json.dumps(listing, indent=2, sort_keys=True))
            return
        print(f"{'APPROVAL':<36}  {'STATUS':<8}  {'CALLER':<20}  {'TOOL':<28}  EXPIRES")
        for a in listing["approvals"]:
            tool = f"{a['target']['agent_id']}.{a['tool']}"
            print(
                f"{a['approval_id']:<36}  {a['status']:<8}  {a['caller']['sub']:<20}"
                f"  {tool:<28}  {a['expires_at']}"
            )

    return _call(args, run)


def cmd_show(args: argparse.Namespace) -> int:
    def run(client: Any) -> None:
        print(json.dumps(client.call_approval(args.approval_id), indent=2, sort_keys=True))

    return _call(args, run)


def cmd_decide(args: argparse.Namespace) -> int:
    def run(client: Any) -> None:
        decide = client.approve_call if args.verdict == "approve" else client.deny_call
        approval = decide(args.approval_id, reason=args.reason)
        print(
            f"{approval['status']} {approval['approval_id']}"
            f" ({approval['caller']['sub']} -> {approval['target']['agent_id']}.{approval['tool']})"
            f" by {approval['decided_by']}: {approval['reason']}"
        )

    return _call(args, run)
