"""OPA over a unix socket: `[opa] url` and `listen` as `unix:` paths, through `regate up`."""

from __future__ import annotations

import re
import shutil
import stat

import httpx
import pytest
from conftest import build_stack_files, world_traversable_tmpdir

from regate.demo import mint_token
from regate.opa import find_opa
from regate.settings import load_settings
from regate.supervisor import Stack

pytestmark = pytest.mark.integration


def test_the_gateway_asks_opa_over_a_unix_socket() -> None:
    root = world_traversable_tmpdir("regate-opa-unix-")
    try:
        config = build_stack_files(root)
        text = re.sub(r'(?m)^url = "http://127\.0\.0\.1:\d+"$', 'url = "unix:state/opa/opa.sock"', config.read_text(), count=1)  # fmt: skip
        text = re.sub(r'(?m)^listen = "127\.0\.0\.1:\d+"\n(policies_dir)', r'listen = "unix:state/opa/opa.sock"\n\1', text, count=1)  # fmt: skip
        config.write_text(text)
        settings = load_settings(config)
        socket = settings.opa.url.uds
        assert socket is not None
        assert settings.opa.listen is not None
        assert settings.opa.listen.uds == socket
        socket.parent.mkdir(parents=True, exist_ok=True)
        socket.write_text("stale")  # left by an earlier run: must not stop OPA
        stack = Stack(settings, config, log_dir=root / "logs")
        stack.start(find_opa())
        try:
            assert stat.S_IMODE(socket.parent.stat().st_mode) == 0o700
            assert stat.S_ISSOCK(socket.stat().st_mode)
            base = f"http://127.0.0.1:{settings.gateway.listen.port}"
            token = mint_token(settings, "test-client")
            with httpx.Client(base_url=base, timeout=30) as client:
                headers = {"Authorization": f"Bearer {token}"}
                allowed = client.post(
                    "/v1/invoke/calculator/add",
                    json={"arguments": {"a": 1, "b": 2}},
                    headers=headers,
                )
                denied = client.post(
                    "/v1/invoke/ops/shell", json={"arguments": {"command": "id"}}, headers=headers
                )
                ready = client.get("/readyz")
            assert allowed.status_code == 200, allowed.text
            assert allowed.json()["result"] == {"sum": 3}
            assert denied.status_code == 403, denied.text
            assert denied.json()["error"]["code"] == "policy_denied"
            assert ready.json()["checks"]["opa"] is True
        finally:
            stack.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
