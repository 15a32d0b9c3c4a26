"""RouteGroup: aiva's own routes as one router entry, indexed by their first path segment."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import BaseRoute, Match, Mount, NoMatchFound, Route
from starlette.testclient import TestClient
from starlette.types import Scope

from aiva import create_app
from aiva.settings import Settings, load_settings
from aiva.web.instrument import own_routes as aiva_routes
from aiva.web.routing import RouteGroup, route_template


async def template(request: Request) -> PlainTextResponse:
    return PlainTextResponse(
        f"{request.scope['endpoint'].__name__} {route_template(request.scope)}"
    )


async def other(request: Request) -> PlainTextResponse:
    return await template(request)


class CountingRoute(Route):
    """A Route that counts its `matches` calls."""

    def __init__(self, path: str, **kwargs: Any) -> None:
        super().__init__(path, template, **kwargs)
        self.calls = 0

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        self.calls += 1
        return super().matches(scope)


def own_routes() -> list[BaseRoute]:
    """Shaped like aiva's: a root, literal groups, and parameters after the first segment."""
    return [
        Route("/", template, methods=["GET"]),
        Route("/info", template, methods=["GET"]),
        Route("/health", template, methods=["GET"]),
        Route("/health/live", template, methods=["GET"]),
        Route("/livez", template, methods=["GET"]),
        Route("/livez/{name}", template, methods=["GET"]),
        Route("/readyz/{name}", template, methods=["GET"]),
    ]


def http(path: str, method: str = "GET", root_path: str = "") -> Scope:
    return {"type": "http", "path": path, "method": method, "root_path": root_path}


def allowed(header: str) -> set[str]:
    return set(header.split(", "))  # Starlette joins a set: the order varies by run


def routed(group: RouteGroup, scope: Scope) -> tuple[Match, Scope]:
    """What Starlette's Router does with a match: the group, then the child scope, in scope."""
    match, child_scope = group.matches(scope)
    return match, {**scope, "route": group, **child_scope}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/", "/"),
        ("/info", "/info"),
        ("/health", "/health"),
        ("/health/live", "/health/live"),
        ("/livez", "/livez"),
        ("/livez/db", "/livez/{name}"),
        ("/readyz/db", "/readyz/{name}"),
    ],
)
def test_full_match_names_the_inner_route(path: str, expected: str) -> None:
    routes = own_routes()
    match, scope = routed(RouteGroup(routes), http(path))
    assert match is Match.FULL
    assert scope["route"] is next(r for r in routes if isinstance(r, Route) and r.path == expected)
    assert route_template(scope) == expected


def test_full_match_carries_the_path_params() -> None:
    match, scope = routed(RouteGroup(own_routes()), http("/livez/db"))
    assert match is Match.FULL and scope["path_params"] == {"name": "db"}


def test_the_group_reads_the_path_under_a_root_path() -> None:
    match, scope = routed(RouteGroup(own_routes()), http("/svc/health/live", root_path="/svc"))
    assert match is Match.FULL and route_template(scope) == "/svc/health/live"


def test_templates_through_a_real_app() -> None:
    app = Starlette(routes=[RouteGroup(own_routes()), Route("/api/{item}", other)])
    with TestClient(app) as client:
        assert client.get("/livez/db").text == "template /livez/{name}"
        assert client.get("/health/live").text == "template /health/live"
        assert client.get("/").text == "template /"
        assert client.get("/api/42").text == "other /api/{item}"


def test_a_wrong_method_is_partial_and_answered_405() -> None:
    match, scope = routed(RouteGroup(own_routes()), http("/livez/db", "POST"))
    assert match is Match.PARTIAL and route_template(scope) == "/livez/{name}"
    app = Starlette(routes=[RouteGroup(own_routes())])
    with TestClient(app) as client:
        response = client.post("/livez/db")
    assert response.status_code == 405
    assert allowed(response.headers["allow"]) == {"GET", "HEAD"}


def test_the_first_partial_wins_and_a_later_full_beats_it() -> None:
    group = RouteGroup(
        [
            Route("/x", template, methods=["GET"]),
            Route("/x", template, methods=["PUT"]),
            Route("/x", other, methods=["POST"]),
        ]
    )
    match, scope = group.matches(http("/x", "DELETE"))
    assert match is Match.PARTIAL and scope["route"] is group.routes[0]
    match, scope = group.matches(http("/x", "POST"))
    assert match is Match.FULL and scope["route"] is group.routes[2]


def test_a_user_route_after_a_partial_group_still_wins() -> None:
    app = Starlette(routes=[RouteGroup(own_routes()), Route("/info", other, methods=["POST"])])
    with TestClient(app) as client:
        assert client.post("/info").text == "other /info"
        assert allowed(client.put("/info").headers["allow"]) == {"GET", "HEAD"}  # the group's


def test_other_segments_are_not_tried() -> None:
    health = CountingRoute("/health")
    live = CountingRoute("/health/live")
    info = CountingRoute("/info")
    root = CountingRoute("/")
    group = RouteGroup([root, info, health, live])
    assert group.matches(http("/api/demo/items/42")) == (Match.NONE, {})
    assert group.matches(http("/health/nothing")) == (Match.NONE, {})
    assert (root.calls, info.calls, health.calls, live.calls) == (0, 0, 1, 1)


def test_the_root_is_its_own_segment() -> None:
    root = CountingRoute("/")
    health = CountingRoute("/health")
    group = RouteGroup([root, health])
    assert group.matches(http("/"))[0] is Match.FULL
    assert (root.calls, health.calls) == (1, 0)


def test_order_is_kept_inside_a_segment() -> None:
    group = RouteGroup([Route("/items/{item}", template), Route("/items/special", other)])
    match, scope = group.matches(http("/items/special"))
    assert match is Match.FULL and scope["route"] is group.routes[0]
    group = RouteGroup([Route("/items/special", other), Route("/items/{item}", template)])
    match, scope = group.matches(http("/items/special"))
    assert match is Match.FULL and scope["route"] is group.routes[0]


def test_a_parameter_in_the_first_segment_is_always_tried_in_its_place() -> None:
    group = RouteGroup(
        [Route("/health", other), Route("/{tenant}", template), Route("/info", other)]
    )
    match, scope = group.matches(http("/acme"))  # no literal group "acme"
    assert match is Match.FULL and route_template(scope) == "/{tenant}"
    match, scope = group.matches(http("/health"))  # the literal comes first
    assert match is Match.FULL and scope["route"] is group.routes[0]
    match, scope = group.matches(http("/info"))  # the parameter comes first
    assert match is Match.FULL and scope["route"] is group.routes[1]


def test_a_parameter_inside_the_first_segment_is_always_tried() -> None:
    group = RouteGroup([Route("/v{version}/health", template)])
    match, scope = group.matches(http("/v2/health"))
    assert match is Match.FULL and scope["path_params"] == {"version": "2"}


def test_a_websocket_scope_is_not_matched_by_http_routes() -> None:
    scope = {"type": "websocket", "path": "/health", "root_path": ""}
    assert RouteGroup(own_routes()).matches(scope) == (Match.NONE, {})


def test_url_path_for_asks_the_routes_in_order() -> None:
    group = RouteGroup(
        [
            Route("/health", template, name="health"),
            Route("/livez/{name}", template, name="check"),
            Route("/readyz/{name}", template, name="check"),
        ]
    )
    assert group.url_path_for("health") == "/health"
    assert group.url_path_for("check", name="db") == "/livez/db"
    with pytest.raises(NoMatchFound):
        group.url_path_for("nowhere")
    with pytest.raises(NoMatchFound):
        group.url_path_for("health", extra="1")
    app = Starlette(routes=[group])
    assert app.url_path_for("check", name="db") == "/livez/db"


REQUESTS = [
    ("GET", "/info/"),
    ("POST", "/info/"),
    ("GET", "/info"),
    ("PUT", "/info"),
    ("GET", "/health/"),
    ("GET", "/health/live/"),
    ("GET", "/livez/db/"),
    ("DELETE", "/livez/db"),
    ("GET", "/livez/a/b"),
    ("GET", "/"),
    ("POST", "/"),
    ("GET", "/nowhere"),
    ("GET", "/nowhere/"),
    ("GET", "/api/42/"),
    ("GET", "/api/42"),
    ("GET", "/health/extra/"),
]


@pytest.mark.parametrize(("method", "path"), REQUESTS)
def test_answers_as_the_same_routes_ungrouped(method: str, path: str) -> None:
    user: list[BaseRoute] = [
        Route("/info", other, methods=["POST"]),
        Route("/api/{item}", other),
        Mount("/health", routes=[Route("/extra", other)]),
    ]

    def answer(routes: list[BaseRoute]) -> tuple[int, str | None, set[str], str]:
        with TestClient(Starlette(routes=routes)) as client:
            response = client.request(method, path, follow_redirects=False)
        location, allow = response.headers.get("location"), response.headers.get("allow", "")
        return response.status_code, location, allowed(allow), response.text

    grouped = answer([RouteGroup(own_routes()), *user])
    assert grouped == answer([*own_routes(), *user])


def test_a_trailing_slash_redirects_as_before() -> None:
    app = Starlette(routes=[RouteGroup(own_routes())])
    with TestClient(app) as client:
        info = client.get("/info/", follow_redirects=False)
        check = client.get("/livez/db/", follow_redirects=False)
    assert info.status_code == 307 and info.headers["location"] == "http://testserver/info"
    assert check.status_code == 307 and check.headers["location"] == "http://testserver/livez/db"


def test_only_routes_can_be_grouped() -> None:
    with pytest.raises(TypeError, match="Route objects only"):
        RouteGroup([Route("/a", template), Mount("/b", routes=[])])


def test_equality_repr_and_routes() -> None:
    group = RouteGroup(own_routes())
    assert group == RouteGroup(own_routes())
    assert group != RouteGroup(own_routes()[:-1])
    assert group != own_routes()
    assert group.routes == own_routes()
    group.routes.clear()  # a copy: the index cannot go stale
    assert len(group.routes) == len(own_routes())
    assert repr(group).startswith("RouteGroup(routes=[Route(path='/', ")


def settings(**environ: str) -> Settings:
    return load_settings(environ, config_dir="/nonexistent").settings


def test_create_app_puts_its_own_endpoints_in_one_group_first() -> None:
    app = create_app(settings(), routes=[Route("/user", other)])
    group, root, user = app.routes
    assert isinstance(group, RouteGroup) and isinstance(user, Route)
    assert root.path == "/"  # type: ignore[attr-defined]
    paths = {route.path for route in group.routes}
    assert {"/info", "/health", "/livez/{name}", "/readyz/{name}", "/metrics"} <= paths


def test_own_endpoints_stay_ungrouped_for_the_stock_instrumentation() -> None:
    # The contrib instrumentation reads `.path` off the top-level route that matched.
    # (Asked of own_routes: create_app would instrument the app, a global side effect.)
    own = aiva_routes(settings(AIVA_TELEMETRY__INSTRUMENTATION="stock"))
    assert len(own) > 1 and all(isinstance(route, Route) for route in own)
