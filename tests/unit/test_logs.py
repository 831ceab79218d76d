"""The JSON log (`regate.logs.configure_logging`): one line per event, ours and
uvicorn's alike, secrets masked, tracebacks included, the level honoured.

Each case runs in a fresh interpreter: logging is process-wide configuration."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from conftest import REPO

JWS = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"

PROGRAM = f"""
import logging, structlog
from regate.logs import configure_logging
configure_logging("info")
log = structlog.get_logger("regate.test")
log.info("request", status=403, token="t0ken", headers={{"Authorization": "Bearer x"}})
log.debug("not shown")
try:
    raise ValueError("bad {JWS}")
except ValueError:
    log.exception("unhandled_error")
logging.getLogger("uvicorn.error").info("Started server process")
logging.getLogger("uvicorn.error").debug("not shown either")
"""


def log_lines() -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    return [json.loads(line) for line in done.stderr.splitlines()]


def test_events_are_json_lines_with_secrets_masked() -> None:
    request, error, uvicorn = log_lines()  # the debug lines are filtered out
    assert request["event"] == "request"
    assert (request["level"], request["status"]) == ("info", 403)
    assert request["token"] == "[redacted]"
    assert request["headers"] == {"Authorization": "[redacted]"}
    assert request["timestamp"].endswith("Z")
    assert error["level"] == "error"
    assert "ValueError: bad [redacted-jws]" in error["exception"]
    assert JWS not in json.dumps(error)
    assert (uvicorn["event"], uvicorn["level"]) == ("Started server process", "info")
