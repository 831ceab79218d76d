"""`regate demo`: keys and signed manifests on first run, then a few real calls."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

from regate import crypto
from regate.grants import load_or_create_grant_key
from regate.keyring import ensure_token_file
from regate.settings import Settings, load_settings

DEMO_CALLER = "demo-client"


def key_name(jwks_file: Path) -> str:
    return jwks_file.name.removesuffix(".jwks.json")


def ensure_key(jwks_file: Path) -> Path:
    """Create NAME.private.jwk beside NAME.jwks.json unless both exist; return the private one."""
    private = jwks_file.with_name(f"{key_name(jwks_file)}.private.jwk")
    if not (private.exists() and jwks_file.exists()):
        crypto.write_key_pair(jwks_file.parent, key_name(jwks_file))
    return private


def prepare_state(settings: Settings) -> None:
    """Keys for the issuer, the publisher and the gateway; every example manifest signed."""
    from regate.manifest import sign_manifest

    for issuer in settings.issuers:
        if issuer.jwks_file is not None:  # a URL issuer's keys are someone else's
            ensure_key(issuer.jwks_file)
    # The gateway signs grants with state_dir/keys/gateway.private.jwk; the runner
    # trusts the public half (runner.grant_jwks, by default beside it).
    load_or_create_grant_key(settings.gateway.grant_key)
    if settings.admin is not None:
        ensure_token_file(settings.admin.token_file)  # the admin API's bearer token
    publisher = crypto.load_private_key(ensure_key(settings.manifests.publishers_jwks))
    settings.manifests.dir.mkdir(parents=True, exist_ok=True)
    for source in sorted(settings.runner.agents_dir.glob("*/manifest.json")):
        document = json.loads(source.read_text())
        target = settings.manifests.dir / f"{document['agent_id']}.jws"
        target.write_text(sign_manifest(document, publisher) + "\n")


def mint_token(settings: Settings, sub: str, ttl_s: int = 300, **extra: Any) -> str:
    issuer = next(i for i in settings.issuers if i.jwks_file is not None)
    assert issuer.jwks_file is not None
    key = crypto.load_private_key(
        issuer.jwks_file.with_name(f"{key_name(issuer.jwks_file)}.private.jwk")
    )
    now = int(time.time())
    claims = {"iss": issuer.issuer, "sub": sub, "aud": settings.gateway.audience}
    return crypto.sign_jwt({**claims, "iat": now, "exp": now + ttl_s, **extra}, key)


DEMO_CALLS: list[tuple[str, str, str, dict[str, Any], bool]] = [
    ("a harmless tool, granted", "calculator", "add", {"a": 2, "b": 40}, True),
    ("another granted tool", "calculator", "stats", {"values": [3, 1, 4, 1, 5]}, True),
    ("a tool policy denies to this caller", "ops", "shell", {"command": "cat /etc/shadow"}, True),
    ("arguments that fail the tool's schema", "calculator", "add", {"a": "two", "b": 2}, True),
    ("no token at all", "calculator", "add", {"a": 1, "b": 1}, False),
]


def run_demo(config: Path, *, prepare_only: bool = False) -> int:
    from regate.cli import cmd_audit_verify
    from regate.supervisor import Stack, StackError, preflight

    settings = load_settings(config)
    prepare_state(settings)
    print(f"keys and signed manifests ready under {settings.gateway.state_dir}")
    if prepare_only:
        return 0
    stack = Stack(settings, config.resolve(), log_dir=settings.gateway.state_dir / "logs")
    try:
        stack.start(preflight())
    except StackError as exc:
        print(f"regate demo: {exc}")
        return 1
    try:
        approve_pending(settings)
        token = mint_token(settings, DEMO_CALLER)
        base = f"http://{settings.gateway.listen.host}:{settings.gateway.listen.port}"
        with httpx.Client(base_url=base, timeout=30) as client:
            for title, agent, tool, arguments, with_token in DEMO_CALLS:
                headers = {"Authorization": f"Bearer {token}"} if with_token else {}
                response = client.post(
                    f"/v1/invoke/{agent}/{tool}", json={"arguments": arguments}, headers=headers
                )
                print_outcome(title, f"{agent}.{tool}", arguments, response)
    finally:
        stack.stop()
    print()
    import argparse

    return cmd_audit_verify(
        argparse.Namespace(
            db=settings.gateway.audit_db,
            config=str(config),
            jwks=settings.gateway.gateway_jwks,
            anchor=[],
        )
    )


def approve_pending(settings: Settings) -> None:
    """What an admin does first: approve the agents' manifests (regate agents approve)."""
    from regate.admin_client import AdminClient

    if settings.admin is None:
        return
    with AdminClient.from_settings(settings) as admin:
        for agent in admin.agents()["agents"]:
            if agent["state"] != "pending" or agent["manifest_sha256"] is None:
                continue
            admin.approve(
                agent["agent_id"],
                reason="regate demo",
                manifest_sha256=agent["manifest_sha256"],
            )
            print(
                f"\n# an admin approves {agent['agent_id']} {agent['version']}"
                f" (signed by {agent['signature']['kid']}, sha256"
                f" {agent['manifest_sha256'][:16]}…)"
            )


def print_outcome(title: str, target: str, arguments: Any, response: httpx.Response) -> None:
    body = response.json()
    error = body.get("error") or {}
    decision = body.get("decision_id") or error.get("decision_id", "-")
    print(f"\n# {title}\n  POST {target} {json.dumps(arguments)}")
    print(f"  -> {response.status_code}  decision {decision}")
    if response.status_code == 200:
        print(f"     result: {json.dumps(body.get('result') if body['ok'] else body['error'])}")
    else:
        print(f"     {error.get('code')}: {error.get('message')}")
        for reason in error.get("reasons", []):
            print(f"     reason {reason['code']}")
