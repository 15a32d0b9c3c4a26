"""The body limit is skipped only for requests that cannot carry a body."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from aiva.web.body_limit import BodyLimitMiddleware, may_have_body


def _scope(version: str, *headers: tuple[bytes, bytes]) -> dict[str, object]:
    return {"type": "http", "http_version": version, "headers": [(b"host", b"x"), *headers]}


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        (_scope("1.1"), False),
        (_scope("1.0"), False),
        (_scope("1.1", (b"content-length", b"0")), True),
        (_scope("1.1", (b"transfer-encoding", b"chunked")), True),
        (_scope("2"), True),  # HTTP/2 frames a body without either header
        (_scope("3"), True),
        ({"type": "http", "headers": []}, True),  # no version given: assume a body
    ],
)
def test_which_requests_may_have_a_body(scope: dict[str, object], expected: bool) -> None:
    assert may_have_body(scope) is expected


async def _length(request: Request) -> PlainTextResponse:
    return PlainTextResponse(str(len(await request.body())))


def _client(limit: int) -> TestClient:
    app = Starlette(routes=[Route("/", _length, methods=["GET", "POST"])])
    app.add_middleware(BodyLimitMiddleware, max_body_size=limit)
    return TestClient(app)


def test_a_get_with_a_body_is_limited_too() -> None:
    with _client(10) as client:
        assert client.get("/").text == "0"
        assert client.request("GET", "/", content=b"x" * 10).text == "10"
        assert client.request("GET", "/", content=b"x" * 11).status_code == 413


def test_a_route_may_still_set_its_own_limit() -> None:
    # Starlette's per-route limit replaces the app's, as with Starlette's middleware alone.
    app = Starlette(routes=[Route("/big", _length, methods=["POST"], max_body_size=100)])
    app.add_middleware(BodyLimitMiddleware, max_body_size=10)
    with TestClient(app) as client:
        assert client.post("/big", content=b"x" * 50).text == "50"
        assert client.post("/big", content=b"x" * 101).status_code == 413
