"""MCP at `/mcp`: the Streamable HTTP transport (JSON-RPC 2.0 over POST), answered in JSON.

Every POST, top to bottom: origin → Accept and Content-Type → body (size-capped) →
bearer token → JSON-RPC messages → session → one answer per request. Refusals
before the messages are handled are HTTP statuses with a JSON-RPC error body; a
`tools/call` goes through the same pipeline as `POST /v1/invoke` and leaves its
one decision record, including when it is refused here (token, session).
Regate never streams: each request gets one JSON answer, notifications a 202.
See docs/mcp.md.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway import mcp_jsonrpc as jsonrpc
from gateway.auth import Caller
from gateway.errors import AgentNotFound, CallParked, ToolNotFound
from gateway.mcp_errors import (
    MethodNotAllowed,
    NotAcceptable,
    OriginRefused,
    SessionRequired,
    UnsupportedProtocolVersion,
    rpc_error,
)
from gateway.mcp_jsonrpc import Invalid, Message, RpcError
from gateway.mcp_jsonrpc import Request as RpcRequest
from gateway.mcp_sessions import Session, SessionStore
from gateway.mcp_tools import (
    META_APPROVAL_ID,
    call_result,
    callable_tools,
    parked_result,
    split_name,
)
from gateway.pipeline import Call, Pipeline
from gateway.policy_input import RequestFacts
from gateway.request_facts import request_facts
from regate.errors import BadRequest, RegateError, UnsupportedMediaType
from regate.jsonbody import parse_json, read_capped
from regate.middleware import request_id
from regate.settings import Settings

log = structlog.get_logger("regate.mcp")

# Handshake-era revisions with the Streamable HTTP transport, oldest to newest.
SUPPORTED_VERSIONS = ("2025-03-26", "2025-06-18", "2025-11-25")
LATEST_VERSION = SUPPORTED_VERSIONS[-1]
# JSON-RPC batches exist only in 2025-03-26; 2025-06-18 removed them.
BATCH_VERSIONS = frozenset({"2025-03-26"})
SESSION_HEADER = "mcp-session-id"
VERSION_HEADER = "mcp-protocol-version"
SERVER_INFO = {"name": "regate", "title": "Regate", "version": version("regate")}


class BatchRefused(RegateError):
    status = 400
    code = "batch_not_supported"


class ParseError(BadRequest):
    code = "parse_error"


async def mcp_endpoint(request: Request) -> Response:
    exchange = Exchange(
        request=request,
        pipeline=request.state.pipeline,
        sessions=request.state.mcp_sessions,
        settings=request.state.settings,
        facts=request_facts(request, request.state.settings.gateway.trusted_proxies),
    )
    try:
        check_origin(request)
        if request.method == "POST":
            return await exchange.post()
        if request.method == "DELETE":
            return await exchange.delete()
        raise MethodNotAllowed(
            "Regate does not open a server-to-client stream on GET; send requests with POST",
            headers={"Allow": "POST, DELETE"},
        )
    except RegateError as exc:
        log.info("mcp_refused", code=exc.code, status=exc.status, message=exc.message)
        code = jsonrpc.PARSE_ERROR if isinstance(exc, ParseError) else jsonrpc.INVALID_REQUEST
        error = RpcError(
            code, exc.message, {"code": exc.code, "request_id": exchange.rid, **exc.details}
        )
        return JSONResponse(jsonrpc.error(None, error), status_code=exc.status, headers=exc.headers)


@dataclass
class Exchange:
    """One HTTP request to `/mcp` and everything needed to answer it."""

    request: Request
    pipeline: Pipeline
    sessions: SessionStore
    settings: Settings
    facts: RequestFacts

    @property
    def rid(self) -> str:
        return request_id(self.request)

    @property
    def authorization(self) -> str | None:
        return self.request.headers.get("authorization")

    async def post(self) -> Response:
        check_accept(self.request)
        check_content_type(self.request)
        gw = self.settings.gateway
        body = await read_capped(self.request, gw.max_body_bytes, gw.body_timeout_s)
        try:
            caller = await self.pipeline.verifier.authenticate(self.authorization)
        except RegateError as exc:
            await self.record_refused_calls(quietly_parsed(body), exc, None)
            raise
        messages, is_batch = parse_messages(body)
        if not is_batch and isinstance(messages[0], Invalid):
            return JSONResponse(jsonrpc.error(messages[0].id, messages[0].error), status_code=400)
        try:
            session = self.session_for(messages, is_batch, caller)
        except RegateError as exc:
            await self.record_refused_calls(messages, exc, caller)
            raise

        if session is None:  # a lone `initialize`: the request that opens a session
            (message,) = messages
            assert isinstance(message, RpcRequest)
            try:
                result, session = self.initialize(message.params, caller)
            except RpcError as exc:
                return JSONResponse(jsonrpc.error(message.id, exc))
            return JSONResponse(
                jsonrpc.result(message.id, result), headers={"Mcp-Session-Id": session.id}
            )

        answers: list[dict[str, Any]] = []
        for message in messages:
            if isinstance(message, RpcRequest):
                answers.append(await self.answer(message, caller))
            elif isinstance(message, Invalid):
                answers.append(jsonrpc.error(message.id, message.error))
        if not answers:  # only notifications and responses: accepted, nothing to say
            return Response(status_code=202)
        return JSONResponse(answers if is_batch else answers[0])

    async def delete(self) -> Response:
        caller = await self.pipeline.verifier.authenticate(self.authorization)
        session_id = self.request.headers.get(SESSION_HEADER)
        if not session_id:
            raise SessionRequired("send the Mcp-Session-Id of the session to end")
        self.sessions.end(session_id, caller)
        log.info("mcp_session_ended", sub=caller.sub)
        return Response(status_code=204)

    def session_for(
        self, messages: list[Message], is_batch: bool, caller: Caller
    ) -> Session | None:
        """The live session these messages belong to; None for a lone `initialize`."""
        opens = [m for m in messages if isinstance(m, RpcRequest) and m.method == "initialize"]
        if opens and is_batch:
            raise BatchRefused("'initialize' must be sent alone, not in a batch")
        if opens:
            return None
        session_id = self.request.headers.get(SESSION_HEADER)
        if not session_id:
            raise SessionRequired(
                "send the Mcp-Session-Id header that 'initialize' returned, or call 'initialize'"
            )
        session = self.sessions.get(session_id, caller)
        header = self.request.headers.get(VERSION_HEADER)
        if header is not None and header != session.protocol_version:
            raise UnsupportedProtocolVersion(
                f"MCP-Protocol-Version {header[:40]!r} is not this session's version"
                f" {session.protocol_version!r}",
                supported=list(SUPPORTED_VERSIONS),
            )
        if is_batch and session.protocol_version not in BATCH_VERSIONS:
            raise BatchRefused(
                f"JSON-RPC batches are not part of MCP {session.protocol_version};"
                " send one message per POST"
            )
        return session

    def initialize(self, params: dict[str, Any], caller: Caller) -> tuple[dict[str, Any], Session]:
        requested = params.get("protocolVersion")
        if not isinstance(requested, str):
            raise RpcError(
                jsonrpc.INVALID_PARAMS, 'initialize needs "protocolVersion": "<version>"'
            )
        for key in ("capabilities", "clientInfo"):
            if key in params and not isinstance(params[key], dict):
                raise RpcError(jsonrpc.INVALID_PARAMS, f'"{key}" must be an object')
        agreed = requested if requested in SUPPORTED_VERSIONS else LATEST_VERSION
        session = self.sessions.create(caller, agreed)
        client = params.get("clientInfo", {})
        log.info("mcp_session_started", sub=caller.sub, version=agreed, client=client.get("name"))
        result = {
            "protocolVersion": agreed,
            "capabilities": {"tools": {"listChanged": False}},
            "serverInfo": SERVER_INFO,
            "instructions": "Tools are named <agent_id>.<tool>. Every call is decided by"
            " policy and recorded; a refusal's error data names its decision_id.",
        }
        return result, session

    async def answer(self, message: RpcRequest, caller: Caller) -> dict[str, Any]:
        method = METHODS.get(message.method)
        try:
            if method is None:
                raise RpcError(
                    jsonrpc.METHOD_NOT_FOUND,
                    f"method {message.method[:80]!r} is not offered; Regate serves"
                    f" {', '.join(['initialize', *METHODS])}",
                )
            return jsonrpc.result(message.id, await method(self, message.params, caller))
        except RpcError as exc:
            return jsonrpc.error(message.id, exc)
        except RegateError as exc:
            return jsonrpc.error(message.id, rpc_error(exc, self.rid))

    async def ping(self, params: dict[str, Any], caller: Caller) -> dict[str, Any]:
        return {}

    async def tools_list(self, params: dict[str, Any], caller: Caller) -> dict[str, Any]:
        if params.get("cursor") is not None:
            raise RpcError(jsonrpc.INVALID_PARAMS, "unknown cursor: Regate lists all tools at once")
        tools = await callable_tools(self.pipeline.agents, self.pipeline.policy, caller, self.facts)
        log.info("mcp_tools_listed", sub=caller.sub, tools=len(tools))
        return {"tools": tools}

    async def tools_call(self, params: dict[str, Any], caller: Caller) -> dict[str, Any]:
        call = self.tool_call(params)
        try:
            outcome = await self.pipeline.invoke(call)
        except CallParked as parked:
            return parked_result(parked)
        except (AgentNotFound, ToolNotFound) as exc:
            exc.message = (
                f"unknown tool {params.get('name')!r} (tools are named <agent_id>.<tool>;"
                f" see tools/list): {exc.message}"
            )
            raise
        return call_result(outcome)

    def tool_call(self, params: dict[str, Any]) -> Call:
        """The pipeline's view of one `tools/call`; bad params are refused inside it,
        after authentication, so that they too are recorded."""
        name = params.get("name")
        arguments = params.get("arguments")
        agent_id, tool = split_name(name) if isinstance(name, str) else ("", "")
        meta = params.get("_meta")
        approval_id = meta.get(META_APPROVAL_ID) if isinstance(meta, dict) else None

        async def read_arguments() -> dict[str, Any]:
            if not isinstance(name, str) or not name:
                raise BadRequest('tools/call needs "name": "<agent_id>.<tool>"')
            if arguments is None:
                return {}
            if not isinstance(arguments, dict):
                raise BadRequest('"arguments" must be a JSON object')
            return arguments

        return Call(
            agent_id=agent_id,
            tool=tool,
            authorization=self.authorization,
            read_arguments=read_arguments,
            request=self.facts,
            # Checked in the pipeline, after authentication; a non-string fails there.
            approval_id=None if approval_id is None else str(approval_id),
        )

    async def record_refused_calls(
        self, messages: list[Message], exc: RegateError, caller: Caller | None
    ) -> None:
        """Each `tools/call` refused before it got in still leaves its decision record."""
        for message in messages:
            if isinstance(message, RpcRequest) and message.method == "tools/call":
                await self.pipeline.refuse(self.tool_call(message.params), exc, caller)


Method = Callable[[Exchange, dict[str, Any], Caller], Awaitable[dict[str, Any]]]
METHODS: dict[str, Method] = {
    "ping": Exchange.ping,
    "tools/list": Exchange.tools_list,
    "tools/call": Exchange.tools_call,
}


def check_origin(request: Request) -> None:
    # The spec asks servers to validate Origin against DNS rebinding. Regate's MCP
    # clients are programs, not web pages: no browser origin is allowed (yet).
    if "origin" in request.headers:
        raise OriginRefused(
            "requests from web pages (with an Origin header) are not accepted on /mcp"
        )


def check_accept(request: Request) -> None:
    accepted = {
        part.split(";")[0].strip().lower() for part in request.headers.get("accept", "").split(",")
    }
    if not accepted & {"application/json", "application/*", "*/*"}:
        raise NotAcceptable(
            "send 'Accept: application/json, text/event-stream'; Regate answers in JSON"
        )


def check_content_type(request: Request) -> None:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise UnsupportedMediaType("send JSON-RPC messages with 'Content-Type: application/json'")


def parse_messages(body: bytes) -> tuple[list[Message], bool]:
    try:
        value = parse_json(body)
    except BadRequest as exc:
        raise ParseError(exc.message) from exc
    try:
        return jsonrpc.parse_body(value)
    except RpcError as exc:
        raise BatchRefused(exc.message) from exc


def quietly_parsed(body: bytes) -> list[Message]:
    """The messages of a body, or none: for recording calls refused before parsing."""
    try:
        return parse_messages(body)[0]
    except RegateError:
        return []
