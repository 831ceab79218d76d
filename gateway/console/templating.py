"""The console's one Jinja2 environment: every template renders through `render`.

Autoescape is on for every template whatever its file name: manifest descriptions,
schemas, arguments, caller ids and reasons are attacker-controlled, and `{{ value }}`
must always print them as text. Never mark such a value `|safe`. The pages carry no
inline script or style (the CSP allows scripts from 'self' only): behaviour lives in
static/console.js, looks in static/console.css. `render` adds the signed-in user and
the CSRF token (set by the auth guard) to every template's context.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from regate.errors import RegateError
from regate.middleware import request_id

log = structlog.get_logger("regate.console")

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_PREFIX = "/admin/static"  # served by routes.py, without sign-in


def pretty_json(value: Any) -> str:
    """JSON for a <pre>: a plain str, so autoescaping escapes it like any other text."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def path_part(value: Any) -> str:
    """One URL path segment: everything that is not unreserved is percent-encoded."""
    return quote(str(value), safe="")


def with_query(params: Mapping[str, Any], **changes: Any) -> str:
    """`?a=1&b=2` with `changes` applied; empty values are left out."""
    merged = {**params, **changes}
    kept = {k: str(v) for k, v in merged.items() if v not in (None, "")}
    return "?" + urlencode(kept) if kept else "?"


def build_environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,  # every template, whatever its name: never select by extension
        # Records written by older versions may lack a field: it renders empty, not a 500.
        undefined=jinja2.Undefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pretty_json"] = pretty_json
    env.filters["path_part"] = path_part
    env.globals["static"] = lambda name: f"{STATIC_PREFIX}/{path_part(name)}"
    env.globals["with_query"] = with_query
    return env


templates = Jinja2Templates(env=build_environment())


def render(
    request: Request, name: str, context: Mapping[str, Any] | None = None, status: int = 200
) -> Response:
    """Render `name` with what every page needs: the signed-in user, the CSRF token and
    the request id (printed on error pages, to find the log lines)."""
    full = {
        # The sign-in pages render before anyone is signed in: no user, no token yet.
        "user": getattr(request.state, "user", None),
        "csrf_token": getattr(request.state, "csrf_token", ""),
        "request_id": request_id(request),
        "nav": "",  # which menu entry is current; pages set it
        **(context or {}),
    }
    return templates.TemplateResponse(
        request,
        name,
        full,
        status_code=status,
        headers={"Cache-Control": "no-store"},  # pages hold audit data: never cached
    )


Page = Callable[[Request], Awaitable[Response]]


def page(handler: Page) -> Page:
    """Turn a `RegateError` the handler raises into an error page with its status
    (the JSON envelope is for the API); anything else is the app's 500."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except RegateError as exc:
            log.info("console_refused", code=exc.code, status=exc.status, message=exc.message)
            return render(request, "error.html", {"error": exc}, status=exc.status)

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint
