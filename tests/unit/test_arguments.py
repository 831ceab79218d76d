"""Argument validation (`gateway.arguments`) never fetches a schema from anywhere.

jsonschema's default registry retrieves remote `$ref`s with urllib. Manifests with
them are refused at load (tests/unit/test_manifest.py); this is the second wall:
even a schema that got past that is never resolved over the network.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

from gateway.arguments import validate_arguments
from gateway.errors import InvalidArguments
from regate.errors import InternalError


class Canary:
    """A loopback listener that counts connections and closes them at once, so that a
    fetch would fail fast (and be counted) rather than hang."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/schema.json"
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def canary() -> Iterator[Canary]:
    c = Canary()
    try:
        yield c
    finally:
        c.close()


def test_a_remote_reference_is_never_fetched(canary: Canary) -> None:
    schema = {"type": "object", "properties": {"a": {"$ref": canary.url}}}
    with pytest.raises(InternalError, match="does not resolve"):
        validate_arguments(schema, {"a": 1})
    assert canary.connections == 0


def test_a_remote_dynamic_reference_is_never_fetched(canary: Canary) -> None:
    schema = {"type": "object", "properties": {"a": {"$dynamicRef": canary.url}}}
    with contextlib.suppress(InternalError):
        validate_arguments(schema, {"a": 1})
    assert canary.connections == 0


def test_local_references_still_work() -> None:
    schema = {
        "type": "object",
        "$defs": {"n": {"type": "number"}},
        "properties": {"a": {"$ref": "#/$defs/n"}},
    }
    validate_arguments(schema, {"a": 1})
    with pytest.raises(InvalidArguments) as caught:
        validate_arguments(schema, {"a": "x"})
    assert caught.value.details["path"] == "/a"
