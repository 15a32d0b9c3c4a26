"""What `instrument` does differently for a FastAPI application.

FastAPI (0.16x) has OpenTelemetry support of its own: with global providers installed
(aiva installs them), every request gets a second server span and a second
`http.server.request.duration` series from the `fastapi` meter, and every unhandled
exception a second error log record. FastAPI's `__call__` runs it outside the
middleware stack, so no middleware can step in front of it: aiva switches it off in
the app's telemetry configuration instead.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import MutableMapping, Sequence
from typing import Any

# The helper Route.matches itself uses (aiva.web.routing reads it the same way).
from starlette._utils import get_route_path
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import Scope

logger = logging.getLogger(__name__)

# FastAPI's own telemetry marks each request it traces with this ASGI scope key, and
# leaves alone every request where the key is present (None): aiva sets it, so a
# FastAPI app mounted below an instrumented one makes no second span, and yields to
# an outer FastAPI app that traces the request already.
TELEMETRY_SCOPE_KEY = "fastapi.telemetry"
# Where FastAPI 0.16x's router keeps the route it chose, with its full template: for a
# route of an `include_router(prefix=...)` router, scope["route"] is the router's own
# route, whose path lacks the prefix. Checked at instrument() (check_private_hooks).
ROUTER_SCOPE_KEY = "fastapi"
_EFFECTIVE_ROUTE_KEY = "effective_route_context"
# On a FastAPI app's router: endpoint -> its plain Starlette routes (see _plain_route).
_PLAIN_ROUTES_ATTR = "_aiva_plain_routes"

# The switches of `FastAPI(telemetry={...})` (its public TelemetryConfig) that aiva's
# request middleware and logging cover.
_YIELDED = ("tracing", "metrics", "logs")


def is_fastapi(app: Any) -> bool:
    try:
        from fastapi import FastAPI
    except ImportError:
        return False
    return isinstance(app, FastAPI)


@functools.cache
def check_private_hooks() -> None:
    """Warn (once a process) when this FastAPI keeps its chosen route elsewhere than
    aiva reads it."""
    import fastapi.routing

    found = (
        getattr(fastapi.routing, "_FASTAPI_SCOPE_KEY", None),
        getattr(fastapi.routing, "_FASTAPI_EFFECTIVE_ROUTE_CONTEXT_KEY", None),
    )
    if found != (ROUTER_SCOPE_KEY, _EFFECTIVE_ROUTE_KEY):
        logger.warning(
            "this FastAPI keeps its matched routes where aiva does not look: routes of "
            "routers included with a prefix may be labelled without it"
        )


def template_of(scope: Scope, route: Any) -> str | None:
    """The template (below the root path) of the route a FastAPI router chose, where it
    recorded no route in scope["route"] or one without its prefix; None: not found.

    FastAPI 0.16x's router sets scope["route"] only for its own routes, and for a route
    of a router included with a prefix to the router's unprefixed route; Starlette's
    router sets it for every match. An empty string means the Mount at the root path.
    """
    # Private: FastAPI's router state in the scope (see _EFFECTIVE_ROUTE_KEY).
    fastapi_scope = scope.get(ROUTER_SCOPE_KEY)
    chosen = fastapi_scope.get(_EFFECTIVE_ROUTE_KEY) if isinstance(fastapi_scope, dict) else None
    endpoint = scope.get("endpoint")
    # None, or a Mount of an app further out: nothing recorded inside this FastAPI app.
    unrecorded = route is None or isinstance(route, Mount)
    if chosen is not None:
        original = getattr(chosen, "original_route", None)
        starlette_route = getattr(chosen, "starlette_route", None)
        if isinstance(original, Mount):
            if unrecorded:
                return ""  # FastAPI records no route for a Mount; root_path has it all
        elif route is not None and original is route:  # an included router's own route
            return _template(getattr(chosen, "path_format", None))
        elif unrecorded and getattr(starlette_route, "endpoint", None) is endpoint:
            return _template(getattr(starlette_route, "path_format", None))
    if endpoint is None or not unrecorded:
        return None
    found = _plain_route(scope, endpoint)
    return None if found is None else found.path_format


def _template(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _plain_route(scope: Scope, endpoint: Any) -> Route | None:
    """The plain Starlette Route (`app.add_route`, `/docs`) of the FastAPI app in the
    scope whose endpoint Route.matches left there; by path when the endpoint serves
    several. The candidates are looked up once per endpoint (cached on the router)."""
    router = getattr(scope.get("app"), "router", None)
    if router is None:
        return None
    known: dict[Any, tuple[Route, ...]] | None = getattr(router, _PLAIN_ROUTES_ATTR, None)
    if known is None:
        known = {}
        setattr(router, _PLAIN_ROUTES_ATTR, known)
    candidates = known.get(endpoint)
    if candidates is None:
        candidates = known[endpoint] = tuple(
            r for r in router.routes if isinstance(r, Route) and r.endpoint is endpoint
        )
    if len(candidates) == 1:
        return candidates[0]
    path = get_route_path(scope)
    return next((r for r in candidates if r.path_regex.match(path)), None)


def exclude_from_native_telemetry(app: Any, prefixes: Sequence[str]) -> None:
    """Leave the requests below `prefixes` (instrumented apps mounted there) to aiva:
    FastAPI's own telemetry keeps the rest of the app (its public `exclude` option, set
    on the configuration it keeps in `_telemetry`, as in yield_native_telemetry)."""
    config = getattr(app, "_telemetry", None)
    if not isinstance(config, dict) or "exclude" not in config:
        logger.warning(
            "FastAPI's own telemetry could not be told to leave %s to aiva: requests "
            "there may get two server spans",
            ", ".join(prefixes),
        )
        return
    earlier = config["exclude"]
    below = tuple(p.rstrip("/") + "/" for p in prefixes)
    exact = frozenset(p.rstrip("/") or "/" for p in prefixes)

    def excluded(scope: MutableMapping[str, Any]) -> bool:
        path = get_route_path(scope)
        if path in exact or path.startswith(below):
            return True
        return bool(earlier(scope)) if earlier is not None else False

    config["exclude"] = excluded


def yield_native_telemetry(app: Any) -> None:
    """Turn FastAPI's own request telemetry off: aiva makes the one server span.

    FastAPI keeps the configuration given as `FastAPI(telemetry=...)` in `_telemetry`
    (read per request); there is no public setter once the app exists. Where that
    attribute is missing (another FastAPI release), nothing is changed and a WARNING
    says that requests may get two server spans.
    """
    # Private attribute of FastAPI, the only one aiva touches there: checked, not assumed.
    config = getattr(app, "_telemetry", None)
    if not isinstance(config, dict) or not all(key in config for key in _YIELDED):
        logger.warning(
            "FastAPI's own telemetry could not be switched off (this FastAPI keeps its "
            "configuration elsewhere): pass FastAPI(telemetry={'tracing': False, "
            "'metrics': False, 'logs': False}) to avoid a second server span per request"
        )
        return
    if any(config[key] for key in _YIELDED):
        logger.info("FastAPI's own request telemetry yields to aiva's")
    for key in _YIELDED:
        config[key] = False


def schema_routes(routes: Sequence[BaseRoute]) -> list[BaseRoute]:
    """aiva's endpoints as FastAPI routes, listed in the OpenAPI document (asked for)."""
    from fastapi.routing import APIRoute

    listed: list[BaseRoute] = []
    for route in routes:
        assert isinstance(route, Route)  # aiva's own endpoints are plain routes
        listed.append(
            APIRoute(
                route.path,
                route.endpoint,
                methods=sorted((route.methods or {"GET"}) - {"HEAD"}),
                name=route.name,
                tags=["aiva"],
                include_in_schema=True,
            )
        )
    return listed
