"""The HTTP front door under hostile bytes: raw sockets to the real gateway under uvicorn.

Every response on the connection is parsed and counted: a request smuggled inside
another must never produce a second response. Every refusal uses the error
envelope with a request id we generated, and no input produces a 500.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from conftest import RunningStack

pytestmark = pytest.mark.integration


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    raw_head: str = field(repr=False, default="")

    def json(self) -> Any:
        return json.loads(self.body)


def exchange(port: int, data: bytes, *, idle_s: float = 3.0) -> list[RawResponse]:
    """Send `data` on one connection and parse every response until the server closes
    it (or says nothing for `idle_s`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=idle_s) as sock:
        sock.sendall(data)
        buffer = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            buffer += chunk
    return parse_responses(buffer)


def parse_responses(buffer: bytes) -> list[RawResponse]:
    responses = []
    while buffer:
        head, sep, rest = buffer.partition(b"\r\n\r\n")
        assert sep, f"truncated response: {buffer[:200]!r}"
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        responses.append(RawResponse(status, headers, rest[:length], head.decode("latin-1")))
        buffer = rest[length:]
    return responses


def request(
    method: str,
    target: str | bytes,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    *,
    host: str | None = "127.0.0.1",
    close: bool = True,
) -> bytes:
    target_bytes = target if isinstance(target, bytes) else target.encode()
    lines = [method.encode() + b" " + target_bytes + b" HTTP/1.1"]
    if host is not None:
        lines.append(b"Host: " + host.encode())
    for name, value in headers or []:
        lines.append(f"{name}: {value}".encode("latin-1"))
    if close:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def post_json(
    stack: RunningStack, body: bytes, headers: list[tuple[str, str]] | None = None
) -> bytes:
    base = [
        ("Authorization", f"Bearer {stack.token()}"),
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
    ]
    return request("POST", "/v1/invoke/calculator/add", base + (headers or []), body)


# name -> (raw request builder, expected statuses on the connection, expected error code)
Case = tuple[Any, list[int], str | None]


def cases(stack: RunningStack) -> dict[str, Case]:
    token = ("Authorization", f"Bearer {stack.token()}")
    json_ct = ("Content-Type", "application/json")
    smuggled = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    deep = b'{"arguments": {"a": ' + b"[" * 100 + b"1" + b"]" * 100 + b', "b": 1}}'
    return {
        # the path: one canonical string, or 400
        "ok-healthz": (request("GET", "/healthz"), [200], None),
        "dot-dot": (request("GET", "/v1/../healthz"), [400], "bad_path"),
        "dot": (request("GET", "/./healthz"), [400], "bad_path"),
        "trailing-dot-dot": (request("GET", "/healthz/.."), [400], "bad_path"),
        "encoded-dots": (request("GET", "/v1/%2e%2e/healthz"), [400], "bad_path"),
        "encoded-slash": (request("POST", "/v1/invoke/calculator%2fadd", [token]), [400], "bad_path"),
        "double-encoded": (request("GET", "/%252e%252e/healthz"), [400], "bad_path"),
        "backslash": (request("GET", "/v1\\..\\healthz"), [400], None),
        "semicolon-param": (request("GET", "/healthz;x=1"), [400], "bad_path"),
        "encoded-nul": (request("GET", "/healthz%00"), [400], "bad_path"),
        "raw-control-byte": (request("GET", b"/heal\x01thz"), [400], "bad_request"),
        "non-ascii-byte": (request("GET", b"/heal\xc3\xa9thz"), [400], None),
        "fragment": (request("GET", "/healthz#frag"), [400], None),
        "absolute-form": (request("GET", "http://127.0.0.1/healthz"), [400], "bad_path"),
        "empty-segment": (request("GET", "//healthz"), [400], "bad_path"),
        "trailing-slash-no-redirect": (request("GET", "/healthz/"), [404], "not_found"),
        # the Host header
        "unknown-host": (request("GET", "/healthz", host="evil.example"), [400], "unknown_host"),
        "host-with-port": (request("GET", "/healthz", host="localhost:8080"), [200], None),
        "missing-host": (request("GET", "/healthz", host=None), [400], "bad_request"),
        "duplicate-host": (
            request("GET", "/healthz", [("Host", "evil.example")]),
            [400],
            None,
        ),
        # sizes
        "long-request-line": (request("GET", "/" + "a" * 20000), [414], "uri_too_long"),
        # Still incomplete past h11's 16 KiB cap: refused without waiting for the end.
        "unterminated-huge-head": (
            b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"v" * 40000,
            [400],
            "bad_request",
        ),
        "too-many-headers": (
            request("GET", "/healthz", [(f"X-H{i}", "v") for i in range(150)]),
            [431],
            "too_many_headers",
        ),
        "huge-header": (
            request("GET", "/healthz", [("X-Big", "v" * 20000)]),
            [431],
            "headers_too_large",
        ),
        # request smuggling: one request in, at most one response out
        "cl-and-te": (
            request(
                "POST", "/healthz", [("Content-Length", "4"), ("Transfer-Encoding", "chunked")],
                b"0\r\n\r\n" + smuggled, close=False,
            ),
            [400], "ambiguous_length",
        ),
        "te-and-cl": (
            request(
                "POST", "/healthz", [("Transfer-Encoding", "chunked"), ("Content-Length", "4")],
                b"0\r\n\r\n" + smuggled, close=False,
            ),
            [400], "ambiguous_length",
        ),
        "duplicate-content-length": (
            request(
                "POST", "/healthz", [("Content-Length", "0"), ("Content-Length", "44")],
                smuggled, close=False,
            ),
            [400], "bad_request",
        ),
        "te-obfuscated-xchunked": (
            request("POST", "/healthz", [("Transfer-Encoding", "xchunked")], b"0\r\n\r\n", close=False),
            [400], "bad_request",
        ),
        "te-chunked-identity": (
            request(
                "POST", "/healthz", [("Transfer-Encoding", "chunked, identity")], b"0\r\n\r\n",
                close=False,
            ),
            [400], "bad_request",
        ),
        "te-space-before-colon": (
            b"POST /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding : chunked\r\n\r\n"
            b"0\r\n\r\n" + smuggled,
            [400], "bad_request",
        ),
        "bare-lf-chunk": (
            b"POST /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\nhello\n0\n\n" + smuggled,
            [400], "bad_request",
        ),
        # RFC 9112 §5.2 lets a server replace obs-fold with a space: h11 does.
        "obs-fold-header": (
            b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: 1\r\n continued\r\n"
            b"Connection: close\r\n\r\n",
            [200], None,
        ),
        "http-0.9-style": (b"GET /healthz\r\n\r\n", [400], "bad_request"),
        # bodies: size while reading, type, strict JSON
        "no-content-type": (
            request("POST", "/v1/invoke/calculator/add", [token, ("Content-Length", "2")], b"{}"),
            [415], "unsupported_media_type",
        ),
        "text-plain": (
            request(
                "POST", "/v1/invoke/calculator/add",
                [token, ("Content-Type", "text/plain"), ("Content-Length", "2")], b"{}",
            ),
            [415], "unsupported_media_type",
        ),
        "declared-too-large": (
            request(
                "POST", "/v1/invoke/calculator/add",
                [token, json_ct, ("Content-Length", "1000000")], b"{",
            ),
            [413], "payload_too_large",
        ),
        "chunked-too-large": (
            request(
                "POST", "/v1/invoke/calculator/add", [token, json_ct, ("Transfer-Encoding", "chunked")],
                b"".join(b"1000\r\n" + b"x" * 4096 + b"\r\n" for _ in range(4)) + b"0\r\n\r\n",
            ),
            [413], "payload_too_large",
        ),
        "nan": (post_json(stack, b'{"arguments": {"a": NaN, "b": 1}}'), [400], "bad_request"),
        "infinity": (post_json(stack, b'{"arguments": {"a": -Infinity, "b": 1}}'), [400], "bad_request"),
        "float-overflow": (post_json(stack, b'{"arguments": {"a": 1e400, "b": 1}}'), [400], "bad_request"),
        "int-overflow": (
            post_json(stack, b'{"arguments": {"a": 1180591620717411303424, "b": 1}}'),
            [400], "bad_request",
        ),
        "duplicate-keys": (post_json(stack, b'{"arguments": {"a": 1, "a": 2, "b": 1}}'), [400], "bad_request"),
        "deep-nesting": (post_json(stack, deep), [400], "bad_request"),
        "invalid-utf8": (post_json(stack, b'{"arguments": {"a": "\xff", "b": 1}}'), [400], "bad_request"),
        "lone-surrogate": (post_json(stack, b'{"arguments": {"a": "\\ud800", "b": 1}}'), [400], "bad_request"),
        "valid-call": (post_json(stack, b'{"arguments": {"a": 1, "b": 2}}'), [200], None),
        # every route with something malformed: the envelope, never a 500
        "invoke-no-token": (
            request("POST", "/v1/invoke/calculator/add", [json_ct, ("Content-Length", "1")], b"{"),
            [401], "missing_token",
        ),
        "invoke-bad-json": (post_json(stack, b'{"arguments": '), [400], "bad_request"),
        "mcp-bad-json": (
            request(
                "POST", "/mcp",
                [token, json_ct, ("Accept", "application/json, text/event-stream"), ("Content-Length", "5")],
                b"{oops",
            ),
            [400], None,
        ),
        "healthz-wrong-method": (request("PUT", "/healthz"), [405], "method_not_allowed"),
        "readyz-with-body": (
            request("GET", "/readyz", [json_ct, ("Content-Length", "5")], b"{oops"),
            [200], None,
        ),
        "unknown-route": (request("GET", "/v2/whatever"), [404], "not_found"),
    }  # fmt: skip


CASE_NAMES = [
    "ok-healthz", "dot-dot", "dot", "trailing-dot-dot", "encoded-dots", "encoded-slash",
    "double-encoded", "backslash", "semicolon-param", "encoded-nul", "raw-control-byte",
    "non-ascii-byte", "fragment", "absolute-form", "empty-segment", "trailing-slash-no-redirect",
    "unknown-host", "host-with-port", "missing-host", "duplicate-host", "long-request-line",
    "unterminated-huge-head",
    "too-many-headers", "huge-header", "cl-and-te", "te-and-cl", "duplicate-content-length",
    "te-obfuscated-xchunked", "te-chunked-identity", "te-space-before-colon", "bare-lf-chunk",
    "obs-fold-header", "http-0.9-style", "no-content-type", "text-plain", "declared-too-large",
    "chunked-too-large", "nan", "infinity", "float-overflow", "int-overflow", "duplicate-keys",
    "deep-nesting", "invalid-utf8", "lone-surrogate", "valid-call", "invoke-no-token",
    "invoke-bad-json", "mcp-bad-json", "healthz-wrong-method", "readyz-with-body", "unknown-route",
]  # fmt: skip


def test_case_list_is_complete(stack: RunningStack) -> None:
    assert sorted(CASE_NAMES) == sorted(cases(stack))
    assert len(CASE_NAMES) >= 30


@pytest.mark.parametrize("name", CASE_NAMES)
def test_front_door(stack: RunningStack, name: str) -> None:
    raw, statuses, code = cases(stack)[name]
    port = stack.settings.gateway.listen.port

    responses = exchange(port, raw)

    assert [r.status for r in responses] == statuses, [r.raw_head for r in responses]
    for response in responses:
        assert response.status < 500
        assert "location" not in response.headers  # never a redirect
        rid = response.headers.get("x-request-id")
        assert rid, response.raw_head
        if response.status >= 400:
            error = response.json()["error"]
            if "jsonrpc" in response.json():  # MCP: Regate's code and ids in error.data
                error = error["data"]
            assert error["request_id"] == rid
            if code is not None:
                assert error["code"] == code, error


def test_untrusted_x_forwarded_for_is_ignored(stack: RunningStack) -> None:
    # The header names an address; nothing is ever sent to it.
    raw = post_json(stack, b'{"arguments": {"a": 1, "b": 2}}', [("X-Forwarded-For", "203.0.113.7")])
    (response,) = exchange(stack.settings.gateway.listen.port, raw)
    assert response.status == 200
    record = stack.audit_rows(response.json()["decision_id"])[0]
    assert record["input"]["request"]["source_ip"] == "127.0.0.1"
    assert record["input"]["request"]["source_ip_from"] == "peer"


def test_slow_headers_are_cut_off_while_normal_calls_go_through(stack: RunningStack) -> None:
    """Slowloris: connections that dribble headers get 408 at the header deadline
    (2 s in the test config), and a normal call made meanwhile succeeds."""
    port = stack.settings.gateway.listen.port
    slow: list[socket.socket] = []
    stop = threading.Event()

    def dribble(sock: socket.socket) -> None:
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            for i in range(40):
                if stop.wait(0.25):
                    return
                sock.sendall(f"X-Slow-{i}: y\r\n".encode())
        except OSError:
            return  # the server cut us off: that is the point

    threads = []
    for _ in range(20):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        slow.append(sock)
        thread = threading.Thread(target=dribble, args=(sock,), daemon=True)
        thread.start()
        threads.append(thread)
    try:
        time.sleep(0.5)
        started = time.monotonic()
        (normal,) = exchange(port, request("GET", "/healthz"))
        assert normal.status == 200
        assert time.monotonic() - started < 1.0

        for sock in slow:
            data = b""
            sock.settimeout(5)
            while True:
                try:
                    chunk = sock.recv(4096)
                except OSError:
                    break
                if not chunk:
                    break
                data += chunk
            responses = parse_responses(data)
            assert [r.status for r in responses] == [408]
            assert responses[0].json()["error"]["code"] == "request_timeout"
    finally:
        stop.set()
        for sock in slow:
            sock.close()
        for thread in threads:
            thread.join(5)
