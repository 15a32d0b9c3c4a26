"""`aiva.instrument` on existing Starlette and FastAPI apps, in-process: features kept,
endpoints added without shadowing, lifespans composed (mounted apps' too)."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

import aiva
from aiva.errors import InstrumentationError
from aiva.settings import Settings, load_settings
from tests.apps.orders_api import build as build_orders


def settings(**environ: str) -> Settings:
    quiet = {"AIVA_HEALTH__CHECKS__CPU__ENABLED": "false", **environ}
    return load_settings(quiet, config_dir="/nonexistent").settings


def stateful_app(name: str, cls: type[Starlette] = Starlette) -> Starlette:
    """An app whose only route needs what its own lifespan made."""

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        yield {f"{name}_resource": f"{name} is up"}

    async def things(request: Request) -> JSONResponse:
        resource = getattr(request.state, f"{name}_resource")
        return JSONResponse({"thing": request.path_params["thing_id"], "resource": resource})

    if issubclass(cls, FastAPI):  # a FastAPI app's routes are its own kind (APIRoute)
        app = cls(lifespan=lifespan)
        app.get("/things/{thing_id}")(things)
        return app
    return cls(routes=[Route("/things/{thing_id}", things)], lifespan=lifespan)


def series(metrics_text: str, name: str) -> list[dict[str, str]]:
    """The label sets of every sample of `name` in a text exposition."""
    found = []
    for line in metrics_text.splitlines():
        if line.startswith(name + "{"):
            labels = line[len(name) + 1 : line.rindex("}")]
            found.append(dict(re.findall(r'(\w+)="([^"]*)"', labels)))
    return found


def request_count(metrics_text: str, route: str) -> float:
    """The summed `_count` of the request duration for one route template."""
    total = 0.0
    for line in metrics_text.splitlines():
        if line.startswith("http_server_request_duration_seconds_count{") and (
            f'http_route="{route}"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


# --- FastAPI --------------------------------------------------------------------------


@pytest.mark.fast_layer("fastapi_telemetry_config")
def test_a_fastapi_app_keeps_routes_dependencies_handlers_tasks_and_lifespan_state() -> None:
    app = aiva.instrument(build_orders(), settings())
    with TestClient(app) as client:
        checked = client.get("/orders/5/check", headers={"X-User": "ada"})
        assert checked.status_code == 200
        assert checked.json() == {"order": 5, "user": "ada"}  # the dependency ran
        assert client.get("/orders/0/check").status_code == 409  # the app's own handler
        assert client.get("/orders/x/check").status_code == 422  # FastAPI's validation
        assert client.post("/orders/7/ship").json() == {"shipping": 7}
        assert client.get("/shipped").json() == {"shipped": [7]}  # the background task ran
        # The app's lifespan ran inside aiva's and its state reaches the handlers.
        assert client.get("/inventory-client").json()["base_url"].startswith("http://")
        # aiva's endpoints are there.
        assert client.get("/livez").text == "ok"
        assert client.get("/info").json()["service"]["name"] == "aiva"
        assert client.get("/health/startup").status_code == 200
        assert "http_server_request_duration_seconds" in client.get("/metrics").text
        assert "X-Request-ID" in checked.headers


def test_aivas_endpoints_stay_out_of_the_openapi_document_unless_asked() -> None:
    with TestClient(aiva.instrument(build_orders(), settings())) as client:
        paths = client.get("/openapi.json").json()["paths"]
    assert "/orders/{order_id}" in paths
    assert not {"/health", "/livez", "/metrics", "/info"} & set(paths)

    asked = aiva.instrument(build_orders(), settings(), include_in_schema=True)
    with TestClient(asked) as client:
        paths = client.get("/openapi.json").json()["paths"]
        assert client.get("/health/live").status_code == 200  # still served by aiva
    assert {"/orders/{order_id}", "/health", "/livez/{name}", "/metrics", "/info"} <= set(paths)
    assert paths["/health"]["get"]["tags"] == ["aiva"]


@pytest.mark.fast_layer("fastapi_telemetry_config")
def test_one_series_per_route_on_a_fastapi_app() -> None:
    app = aiva.instrument(build_orders(), settings())
    with TestClient(app) as client:
        for order in (1, 2, 3):
            assert client.get(f"/orders/{order}/check").status_code == 200
        text = client.get("/metrics").text
    counts = series(text, "http_server_request_duration_seconds_count")
    routes = [s for s in counts if s.get("http_route") == "/orders/{order_id}/check"]
    assert len(routes) == 1, counts
    assert request_count(text, "/orders/{order_id}/check") == 3
    # No raw path ever became a label value.
    assert not any("/orders/1" in value for s in counts for value in s.values())


@pytest.mark.fast_layer("fastapi_telemetry_config")
def test_fastapis_own_telemetry_yields() -> None:
    app = build_orders()
    aiva.instrument(app, settings())
    assert not any(app._telemetry[key] for key in ("tracing", "metrics", "logs"))


def fastapi_tracing_to_memory() -> tuple[FastAPI, InMemorySpanExporter]:
    """A FastAPI app whose own telemetry traces into memory (to see whether it runs)."""
    theirs = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(theirs))
    app = FastAPI(telemetry={"tracer_provider": provider, "metrics": False, "logs": False})
    return app, theirs


def recorded_spans(client: TestClient) -> InMemorySpanExporter:
    """The spans the running app makes from now on (its provider is aiva's own)."""
    spans = InMemorySpanExporter()
    provider = client.app_state["aiva"].telemetry.tracer_provider
    provider.add_span_processor(SimpleSpanProcessor(spans))
    return spans


def server_spans(spans: InMemorySpanExporter) -> list[str]:
    """The names of the SERVER spans (health rounds make spans of their own meanwhile)."""
    return [s.name for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]


@pytest.mark.fast_layer("fastapi_route_state")
def test_routes_of_included_routers_and_plain_routes_keep_their_full_template() -> None:
    app = FastAPI()
    items = APIRouter()

    @items.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"item": item_id}

    app.include_router(items, prefix="/v1")
    app.include_router(items, prefix="/v2")
    app.add_route("/plain/{name}", own_health)
    aiva.instrument(app, settings())
    with TestClient(app) as client:
        spans = recorded_spans(client)
        for path in ("/v1/items/1", "/v2/items/2", "/v2/items/3", "/plain/x", "/docs"):
            assert client.get(path).status_code == 200
        text = client.get("/metrics").text
    assert request_count(text, "/v1/items/{item_id}") == 1
    assert request_count(text, "/v2/items/{item_id}") == 2
    assert request_count(text, "/plain/{name}") == 1
    assert request_count(text, "/docs") == 1
    assert server_spans(spans) == [
        "GET /v1/items/{item_id}",
        "GET /v2/items/{item_id}",
        "GET /v2/items/{item_id}",
        "GET /plain/{name}",
        "GET /docs",
    ]


@pytest.mark.fast_layer("fastapi_route_state")
def test_templates_where_fastapi_records_no_route() -> None:
    app = FastAPI()
    app.add_route("/first", own_health)
    app.add_route("/second/{x}", own_health)  # the same endpoint on two paths
    plain = APIRouter()
    plain.add_route("/plain/{x}", own_health)
    app.include_router(plain, prefix="/v1")  # a plain route of an included router
    app.mount("/static", Starlette())  # a Mount (FastAPI's router records none)
    sub = FastAPI()
    sub.add_route("/p/{x}", own_health)
    outer = aiva.instrument(
        Starlette(routes=[Mount("/api", app=app), Mount("/sub", app=sub)]), settings()
    )
    with TestClient(outer) as client:
        spans = recorded_spans(client)
        for path in ("/api/first", "/api/second/2", "/api/v1/plain/3", "/sub/p/4", "/sub/docs"):
            assert client.get(path).status_code == 200, path
        assert client.get("/api/static/nothing").status_code == 404
    assert server_spans(spans) == [
        "GET /api/first",
        "GET /api/second/{x}",
        "GET /api/v1/plain/{x}",
        "GET /sub/p/{x}",
        "GET /sub/docs",
        "GET /api/static",
    ]


def test_a_parameter_in_a_mount_never_becomes_a_label_value() -> None:
    tenants = Starlette(routes=[Route("/items/{item_id}", own_health)])
    app = aiva.instrument(
        Starlette(
            routes=[
                Route("/plain", own_health),
                Mount("/tenants/{tenant}", routes=[Mount("/v1", app=tenants)]),
                Mount("/files/{bucket}", app=PlainTextResponse("file")),
            ]
        ),
        settings(),
    )
    with TestClient(app) as client:
        spans = recorded_spans(client)
        for tenant in ("acme", "globex", "initech"):
            assert client.get(f"/tenants/{tenant}/v1/items/1").status_code == 200
            assert client.get(f"/files/{tenant}/x").status_code == 200
        assert client.get("/plain").status_code == 200
        text = client.get("/metrics").text
    assert request_count(text, "/tenants/{tenant}/v1/items/{item_id}") == 3
    assert request_count(text, "/files/{bucket}") == 3
    assert not any(t in text for t in ("acme", "globex", "initech"))
    assert set(server_spans(spans)) == {
        "GET /tenants/{tenant}/v1/items/{item_id}",
        "GET /files/{bucket}",
        "GET /plain",
    }


def test_a_fastapi_app_mounted_below_makes_no_span_of_its_own() -> None:
    sub, theirs = fastapi_tracing_to_memory()

    @sub.get("/users/{user_id}")
    async def user(user_id: int) -> dict[str, int]:
        return {"user": user_id}

    outer = aiva.instrument(Starlette(), settings())
    outer.mount("/admin", sub)  # after instrument(): seen per request, not at set-up
    with TestClient(outer) as client:
        spans = recorded_spans(client)
        assert client.get("/admin/users/7").json() == {"user": 7}
    assert theirs.get_finished_spans() == ()
    assert server_spans(spans) == ["GET /admin/users/{user_id}"]


def test_probe_paths_stay_untraced_behind_a_root_path() -> None:
    app = aiva.instrument(stateful_app("behind"), settings())
    with TestClient(app, root_path="/api") as client:
        spans = recorded_spans(client)
        assert client.get("/api/livez").text == "ok"
        assert client.get("/api/metrics").status_code == 200
        assert client.get("/api/things/1").status_code == 200
    assert server_spans(spans) == ["GET /api/things/{thing_id}"]


# --- aiva's paths against the app's own ------------------------------------------------


async def own_health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("the app's own health")


def test_a_path_the_app_serves_is_an_error_naming_both() -> None:
    app = Starlette(routes=[Route("/health", own_health)])
    with pytest.raises(
        InstrumentationError, match=r"GET /health .* Route '/health' \(name 'own_health'\)"
    ):
        aiva.instrument(app, settings())


def test_a_mount_covering_aivas_paths_is_a_conflict_too() -> None:
    app = Starlette(routes=[Mount("/health", routes=[Route("/live", own_health)])])
    with pytest.raises(InstrumentationError, match="/health"):
        aiva.instrument(app, settings())


def test_the_app_keeps_its_path_when_it_says_so() -> None:
    app = aiva.instrument(
        Starlette(routes=[Route("/health", own_health)]), settings(), on_conflict="app"
    )
    with TestClient(app) as client:
        assert client.get("/health").text == "the app's own health"
        assert client.get("/health/live").status_code == 200  # the rest is aiva's


def test_a_route_added_after_instrument_is_checked_at_start() -> None:
    app = aiva.instrument(FastAPI(), settings())

    @app.get("/health")  # the usual order: the decorators run after instrument()
    async def health() -> str:
        return "the app's own"

    with pytest.raises(InstrumentationError, match="GET /health"), TestClient(app):
        pass

    kept = aiva.instrument(FastAPI(), settings(), on_conflict="app")
    kept.get("/health")(health)
    with TestClient(kept) as client:
        assert client.get("/health").json() == "the app's own"
        assert client.get("/health/ready").status_code == 200


def test_another_method_on_an_aiva_path_is_no_conflict() -> None:
    app = aiva.instrument(
        Starlette(routes=[Route("/health", own_health, methods=["POST"])]), settings()
    )
    with TestClient(app) as client:
        assert client.post("/health").text == "the app's own health"
        assert client.get("/health").json()["status"] == "healthy"


def test_a_catch_all_route_is_no_conflict() -> None:
    app = aiva.instrument(Starlette(routes=[Route("/{path:path}", own_health)]), settings())
    with TestClient(app) as client:
        assert client.get("/livez").text == "ok"
        assert client.get("/anything/else").text == "the app's own health"


def test_misuse_fails_at_once() -> None:
    with pytest.raises(TypeError, match="Starlette or FastAPI"):
        aiva.instrument(object(), settings())  # type: ignore[type-var]
    app = aiva.instrument(Starlette(), settings())
    with pytest.raises(InstrumentationError, match="already"):
        aiva.instrument(app, settings())
    served = Starlette()
    with TestClient(served):
        pass
    with pytest.raises(InstrumentationError, match="before the app serves"):
        aiva.instrument(served, settings())


# --- mounting, both ways ----------------------------------------------------------------


@pytest.mark.parametrize("sub_cls", [Starlette, FastAPI])
def test_apps_mounted_under_an_instrumented_app_get_their_lifespans(
    sub_cls: type[Starlette],
) -> None:
    outer = Starlette(
        routes=[
            Mount("/sub", app=stateful_app("sub", sub_cls)),
            Mount("/deep", routes=[Mount("/er", app=stateful_app("deeper"))]),
        ]
    )
    aiva.instrument(outer, settings())
    with TestClient(outer) as client:
        assert client.get("/sub/things/1").json() == {"thing": "1", "resource": "sub is up"}
        assert client.get("/deep/er/things/2").json()["resource"] == "deeper is up"
        text = client.get("/metrics").text
    routes = {
        s.get("http_route") for s in series(text, "http_server_request_duration_seconds_count")
    }
    assert {"/sub/things/{thing_id}", "/deep/er/things/{thing_id}"} <= routes


def test_an_instrumented_app_mounted_under_a_plain_one() -> None:
    inner = aiva.instrument(stateful_app("inner"), settings())
    outer = Starlette(routes=[Mount("/svc", app=inner)])
    aiva.run_mounted_lifespans(outer)
    with TestClient(outer) as client:
        assert client.get("/svc/things/3").json() == {"thing": "3", "resource": "inner is up"}
        assert client.get("/svc/livez").text == "ok"
        text = client.get("/svc/metrics").text
    routes = {
        s.get("http_route") for s in series(text, "http_server_request_duration_seconds_count")
    }
    assert "/svc/things/{thing_id}" in routes


@pytest.mark.fast_layer("fastapi_telemetry_config")
def test_under_a_fastapi_app_that_traces_requests_itself_aiva_keeps_its_own() -> None:
    outer, theirs = fastapi_tracing_to_memory()

    @outer.get("/own/{n}")
    async def own(n: int) -> dict[str, int]:
        return {"n": n}

    outer.mount("/svc", aiva.instrument(stateful_app("inner"), settings()))
    aiva.run_mounted_lifespans(outer)
    with TestClient(outer) as client:
        ours = recorded_spans(client)
        assert client.get("/svc/things/4").json()["resource"] == "inner is up"
        assert client.get("/svc/livez").text == "ok"
        assert client.get("/own/1").json() == {"n": 1}
        text = client.get("/svc/metrics").text
    # One server span a request: the mounted app's by aiva (probes untraced), the outer
    # app's own route by FastAPI.
    assert server_spans(ours) == ["GET /svc/things/{thing_id}"]
    assert [s.name for s in theirs.get_finished_spans() if s.kind is SpanKind.SERVER] == [
        "GET /own/{n}"
    ]
    assert request_count(text, "/svc/things/{thing_id}") == 1


def test_without_its_lifespan_an_instrumented_app_says_why() -> None:
    inner = aiva.instrument(stateful_app("inner"), settings())
    outer = Starlette(routes=[Mount("/svc", app=inner)])  # Starlette runs no mounted lifespan
    with TestClient(outer) as client, pytest.raises(RuntimeError, match="lifespan has not run"):
        client.get("/svc/livez")


def test_only_the_outermost_app_is_instrumented() -> None:
    inner = aiva.instrument(stateful_app("inner"), settings())
    with pytest.raises(InstrumentationError, match="outermost"):
        aiva.instrument(Starlette(routes=[Mount("/svc", app=inner)]), settings())


# --- two apps in one process -------------------------------------------------------------


@contextmanager
def unconfigured_root() -> Iterator[logging.Logger]:
    """The root logger as a plain `uvicorn module:app` leaves it: no handlers (pytest's
    own, added for each test phase, are put back afterwards)."""
    root = logging.getLogger()
    pytest_handlers = list(root.handlers)
    root.handlers.clear()
    try:
        yield root
    finally:
        root.handlers[:] = pytest_handlers


def test_logging_the_service_set_up_itself_is_left_alone() -> None:
    root = logging.getLogger()  # pytest's handlers: configured, as basicConfig would
    before, level = list(root.handlers), root.level
    with TestClient(aiva.instrument(stateful_app("own"), settings())):
        assert root.handlers == before and root.level == level
    assert root.handlers == before


def test_two_instrumented_apps_in_one_process_keep_to_their_own() -> None:
    with unconfigured_root() as root:
        uvicorn_error = logging.getLogger("uvicorn.error")
        before, uvicorn_before = list(root.handlers), list(uvicorn_error.handlers)
        first = aiva.instrument(stateful_app("first"), settings())
        second = aiva.instrument(stateful_app("second"), settings())
        with TestClient(first) as one:
            handlers_of_first = list(root.handlers)
            with TestClient(second) as two:
                for _ in range(3):
                    assert one.get("/things/1").status_code == 200
                assert two.get("/things/1").status_code == 200
                text_one, text_two = one.get("/metrics").text, two.get("/metrics").text
                # The second app left the first one's logging alone...
                assert root.handlers == handlers_of_first
            assert root.handlers == handlers_of_first  # ...and did not take it down on stopping
        assert handlers_of_first and not before  # the first one configured it
        assert root.handlers == before  # and restored what was there, uvicorn's loggers too
        assert uvicorn_error.handlers == uvicorn_before
    # Each app's requests reach its own providers only.
    assert request_count(text_one, "/things/{thing_id}") == 3
    assert request_count(text_two, "/things/{thing_id}") == 1
