"""Misbehaving policy engines on loopback: real sockets, real HTTP, faults on demand.

`SlowOpa` answers `/health` at once but holds every decision request until the test
releases it (or 30 s pass), then answers `allow` — a late allow that must change
nothing. With `hang_up=True` it closes each decision connection without a word.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

HOLD_AT_MOST_S = 30.0


class SlowOpa:
    def __init__(self, port: int = 0, *, hang_up: bool = False) -> None:
        self.hang_up = hang_up
        self.received = 0  # decision requests that arrived
        self.answered = 0  # decision requests answered (all after `release`)
        self.arrived = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> SlowOpa:
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
        self._server.server_close()  # waits for the handler threads, now released
        self._thread.join(10)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer({} if self.path == "/health" else {"error": "not here"})

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with peer._lock:
                    peer.received += 1
                peer.arrived.set()
                if peer.hang_up:
                    self.close_connection = True
                    return  # closed without a status line
                peer.release.wait(HOLD_AT_MOST_S)
                if self._answer({"result": {"outcome": "allow", "reasons": []}}):
                    with peer._lock:
                        peer.answered += 1

            def _answer(self, body: object) -> bool:
                data = json.dumps(body).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    return False  # the gateway gave up and closed the connection
                return True

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet: the test asserts on counts, not on access lines

        return Handler
