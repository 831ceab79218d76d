"""Security headers (gateway/console/security.py) on every response, pages and errors alike."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from gateway.console.security import SecurityHeaders


async def page(request: object) -> Response:
    return PlainTextResponse("hello", headers={"Cache-Control": "max-age=9999"})


async def static(request: object) -> Response:
    return PlainTextResponse("body{}", media_type="text/css")


async def broken(request: object) -> Response:
    return JSONResponse({"error": "x"}, status_code=403)


def client() -> TestClient:
    app = Starlette(
        routes=[
            Route("/admin", page),
            Route("/admin/static/console.css", static),
            Route("/admin/api/x", broken),
        ]
    )
    return TestClient(SecurityHeaders(app))


def test_every_response_gets_the_headers() -> None:
    with client() as c:
        for path in ("/admin", "/admin/api/x", "/nowhere"):
            response = c.get(path)
            csp = response.headers["content-security-policy"]
            assert "frame-ancestors 'none'" in csp
            assert "script-src 'self'" in csp
            assert "default-src 'none'" in csp
            assert "unsafe-inline" not in csp
            assert "unsafe-eval" not in csp
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["x-frame-options"] == "DENY"
            assert response.headers["referrer-policy"] == "same-origin"


def test_pages_are_never_cached_but_static_files_may_be() -> None:
    with client() as c:
        assert c.get("/admin").headers.get_list("cache-control") == ["no-store"]
        assert c.get("/admin/static/console.css").headers["cache-control"] == "private, max-age=300"
