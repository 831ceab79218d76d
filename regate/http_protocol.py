"""uvicorn's h11 protocol with a deadline for request headers.

uvicorn closes idle keep-alive connections, but once a client has sent one byte
of a request it waits for the rest for ever: a few slow clients (slowloris) could
hold connections open indefinitely. Here every request's headers must arrive
within `header_timeout_s` of its first byte (or of the connection), else the
client gets 408 and the connection is closed. Bodies have their own deadline,
enforced where they are read (regate/jsonbody.py).

h11 is the parser on purpose: pure Python, strict about framing (it refuses
Content-Length with Transfer-Encoding, conflicting lengths, any transfer coding
but chunked, and malformed chunk lines), and it bounds a request's line plus
headers by `h11_max_incomplete_event_size`.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import h11
import structlog
from uvicorn.protocols.http.h11_impl import H11Protocol

from regate.canonical import canonical_json
from regate.errors import error_body

log = structlog.get_logger("regate.http")


def guarded_h11(header_timeout_s: float, max_head_bytes: int) -> type[H11Protocol]:
    class GuardedH11Protocol(H11Protocol):
        _header_deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            waiting = self.cycle is None or self.cycle.response_complete
            if waiting and self._header_deadline is None:
                self._arm()  # the first byte of a new request on a kept-alive connection
            super().data_received(data)
            if self.cycle is not None and not self.cycle.response_complete:
                self._disarm()  # headers are in: a request is being handled

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._header_deadline = self.loop.call_later(header_timeout_s, self._too_slow)

        def _disarm(self) -> None:
            if self._header_deadline is not None:
                self._header_deadline.cancel()
                self._header_deadline = None

        def _too_slow(self) -> None:
            self._header_deadline = None
            if self.transport.is_closing():
                return
            if self.cycle is not None and not self.cycle.response_complete:
                return  # a request is being handled; its body has its own deadline
            if self.conn.our_state is h11.IDLE:
                message = f"request headers did not arrive within {header_timeout_s:g} s"
                self._refuse(408, "Request Timeout", "request_timeout", message)
            self.transport.close()

        def send_400_response(self, msg: str) -> None:
            # h11 refused the bytes (framing, header syntax, size): answer in our
            # envelope, with a request id of ours, and close: nothing after it is read.
            self._refuse(
                400,
                "Bad Request",
                "bad_request",
                "the request is not valid HTTP/1.1: check the request line, header syntax"
                f" and size (at most {max_head_bytes} bytes), and send"
                " either Content-Length or Transfer-Encoding: chunked, never both",
            )
            self.transport.close()

        def _refuse(self, status: int, reason: str, code: str, message: str) -> None:
            rid = uuid.uuid4().hex
            log.info("http_refused", status=status, code=code, request_id=rid)
            body = canonical_json(error_body(code, message, rid))
            head = (
                f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
                f"x-request-id: {rid}\r\nconnection: close\r\n"
                f"content-length: {len(body)}\r\n\r\n"
            ).encode()
            self.transport.write(head + body)

    return GuardedH11Protocol
