"""A scripted HTTP peer on loopback, standing in for OPA or the runner: real sockets,
real HTTP, any answer on demand.

Each (method, path) is given an action: an answer (any status, any body), a hang-up
(the connection closed without a status line) or a stall (held until the test ends
or the stall's time passes). Requests are recorded as they arrive, so tests can see
what the client sent and count what reached the peer.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

STALL_AT_MOST_S = 30.0


@dataclass(frozen=True)
class Seen:
    method: str
    target: str  # path and query, as sent
    headers: dict[str, str]  # lower-case names
    body: bytes
    client_port: int  # which connection it came on

    @property
    def path(self) -> str:
        return urlsplit(self.target).path


Action = Callable[[BaseHTTPRequestHandler, "ScriptedPeer"], None]


def answer(status: int = 200, *, json_body: Any = None, body: bytes | None = None) -> Action:
    data = (
        body
        if body is not None
        else json.dumps(json_body).encode()
        if json_body is not None
        else b""
    )

    def act(handler: BaseHTTPRequestHandler, peer: ScriptedPeer) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    return act


def decision(**result: Any) -> Action:
    return answer(json_body={"result": {"outcome": "allow", **result}})


def hang_up() -> Action:
    def act(handler: BaseHTTPRequestHandler, peer: ScriptedPeer) -> None:
        handler.close_connection = True  # closed without a status line

    return act


def stall(then: Action | None = None, seconds: float = STALL_AT_MOST_S) -> Action:
    def act(handler: BaseHTTPRequestHandler, peer: ScriptedPeer) -> None:
        peer.release.wait(seconds)
        with contextlib.suppress(OSError):  # the client gave up and closed the connection
            (then or answer(json_body={}))(handler, peer)

    return act


class ScriptedPeer:
    def __init__(self, port: int = 0) -> None:
        self.actions: dict[tuple[str, str], Action] = {}
        self.seen: list[Seen] = []
        self.arrived = threading.Event()  # set by each request as it arrives
        self.release = threading.Event()  # ends every stall
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def on(self, method: str, path: str, action: Action) -> None:
        self.actions[(method, path)] = action

    def count(self, method: str, path: str) -> int:
        with self._lock:
            return sum(1 for s in self.seen if (s.method, s.path) == (method, path))

    def __enter__(self) -> ScriptedPeer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        peer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as OPA's server

            def do_GET(self) -> None:
                self._act("GET")

            def do_POST(self) -> None:
                self._act("POST")

            def _act(self, method: str) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                seen = Seen(method, self.path, headers, body, self.client_address[1])
                with peer._lock:
                    peer.seen.append(seen)
                peer.arrived.set()
                action = peer.actions.get((method, seen.path), answer(404, json_body={}))
                action(self, peer)

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet: tests assert on what was seen, not on access lines

        return Handler
