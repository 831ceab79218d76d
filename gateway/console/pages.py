"""The console's pages (owned by the pages work; this first version is the home page only).

Each handler is a plain `async def page(request) -> Response`; routes.py wraps every
route listed here with the auth guard, so a handler finds `request.state.user` (a
`ConsoleUser`) and `request.state.csrf_token` already set.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.console.templating import render


async def home(request: Request) -> Response:
    return render(request, "home.html")


PAGE_ROUTES: list[Route] = [
    Route("/admin", home, methods=["GET"]),
]
