"""The console's one Jinja2 environment: every template renders through `render`.

Autoescape is on for every template whatever its file name: manifest descriptions,
arguments, caller ids and reasons are attacker-controlled, and `{{ value }}` must
always print them as text. Never mark such a value `|safe`. `render` adds the signed-in
user and the CSRF token (set by the auth guard) to every template's context.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

TEMPLATES_DIR = Path(__file__).parent / "templates"

environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
    autoescape=True,
)
templates = Jinja2Templates(env=environment)


def render(
    request: Request,
    name: str,
    context: dict[str, Any] | None = None,
    status: int = 200,
) -> Response:
    # The sign-in pages render before anyone is signed in: no user, no token yet.
    base = {
        "user": getattr(request.state, "user", None),
        "csrf_token": getattr(request.state, "csrf_token", ""),
    }
    return templates.TemplateResponse(request, name, base | (context or {}), status_code=status)
