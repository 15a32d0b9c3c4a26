"""The app factory in-process: endpoints, extra routes, request ids, CORS and the body limit."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from aiva import create_app
from aiva.settings import Settings, load_settings


def settings(**environ: str) -> Settings:
    return load_settings(environ, config_dir="/nonexistent").settings


async def echo_length(request: Request) -> PlainTextResponse:
    return PlainTextResponse(str(len(await request.body())))


async def hello(request: Request) -> JSONResponse:
    return JSONResponse({"hello": request.path_params["name"]})


async def crash(request: Request) -> JSONResponse:
    raise RuntimeError("boom")


EXTRA_ROUTES = [
    Route("/upload", echo_length, methods=["POST"]),
    Route("/crash", crash),
    Mount("/v1", routes=[Route("/hello/{name}", hello)]),
]


@pytest.fixture
def client() -> Iterator[TestClient]:
    app = create_app(settings(AIVA_SECURITY__MAX_REQUEST_BODY_BYTES="1000"), routes=EXTRA_ROUTES)
    with TestClient(app) as test_client:
        yield test_client


def test_root_names_the_service(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.json() == {"service": "aiva", "version": "0.1.0", "environment": "development"}


def test_info_shows_runtime_and_masked_settings() -> None:
    app = create_app(
        settings(AIVA_DATABASE__PASSWORD="pg-secret", AIVA_SECURITY__API_KEY="key-secret")
    )
    with TestClient(app) as client:
        body = client.get("/info", headers={"X-API-Key": "key-secret"}).json()
    assert body["service"]["name"] == "aiva"
    assert body["runtime"]["pid"] > 0
    assert body["runtime"]["uptime_seconds"] >= 0
    assert body["settings"]["server"]["port"] == 8000
    assert body["settings"]["database"]["password"] == "****"
    assert body["settings"]["security"]["api_key"] == "****"
    assert "pg-secret" not in str(body) and "key-secret" not in str(body)


def test_services_add_their_own_routes(client: TestClient) -> None:
    assert client.get("/v1/hello/ada").json() == {"hello": "ada"}
    assert client.post("/upload", content=b"x" * 10).text == "10"


@pytest.mark.parametrize("incoming", ["abc-123", "a" * 128, "trace:1/2+3=4@x"])
def test_sane_request_id_is_kept(client: TestClient, incoming: str) -> None:
    assert client.get("/", headers={"X-Request-ID": incoming}).headers["x-request-id"] == incoming


@pytest.mark.parametrize("incoming", ["a" * 129, "bad id with spaces", "<script>", ""])
def test_insane_request_id_is_replaced(client: TestClient, incoming: str) -> None:
    response = client.get("/", headers={"X-Request-ID": incoming})
    generated = response.headers["x-request-id"]
    assert generated != incoming
    assert len(generated) == 32 and int(generated, 16) >= 0


def test_every_response_carries_a_request_id(client: TestClient) -> None:
    ids = {client.get(path).headers["x-request-id"] for path in ("/", "/info", "/nowhere")}
    assert len(ids) == 3


def test_an_unhandled_error_is_answered_500_with_the_request_id() -> None:
    # Starlette answers the 500 from its outermost ServerErrorMiddleware; the id must
    # be on that response too, and the exception still reaches the server.
    app = create_app(settings(), routes=EXTRA_ROUTES)
    with TestClient(app, raise_server_exceptions=False) as client:
        kept = client.get("/crash", headers={"X-Request-ID": "abc-500"})
        generated = client.get("/crash")
    assert kept.status_code == 500 and kept.headers["x-request-id"] == "abc-500"
    assert generated.status_code == 500 and len(generated.headers["x-request-id"]) == 32
    with TestClient(app) as client, pytest.raises(RuntimeError, match="boom"):
        client.get("/crash")


def test_body_over_the_limit_is_refused_with_413(client: TestClient) -> None:
    assert client.post("/upload", content=b"x" * 1000).text == "1000"
    assert client.post("/upload", content=b"x" * 1001).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        for _ in range(5):
            yield b"x" * 300

    response = client.post("/upload", content=chunks())
    assert response.status_code == 413


def test_cors_off_by_default(client: TestClient) -> None:
    response = client.get("/", headers={"Origin": "https://app.example"})
    assert "access-control-allow-origin" not in response.headers


def test_cors_from_allowed_origins() -> None:
    app = create_app(settings(AIVA_SECURITY__ALLOWED_ORIGINS='["https://app.example"]'))
    with TestClient(app) as client:
        allowed = client.options(
            "/",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "GET"},
        )
        other = client.get("/", headers={"Origin": "https://evil.example"})
        simple = client.get("/", headers={"Origin": "https://app.example"})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in other.headers
    assert simple.headers["access-control-allow-origin"] == "https://app.example"


def test_checks_must_be_callable() -> None:
    with pytest.raises(TypeError):
        create_app(settings(), checks=["not callable"])  # type: ignore[list-item]
