"""What `instrument` does differently for a FastAPI application.

FastAPI (0.16x) has OpenTelemetry support of its own: with global providers installed
(aiva installs them), every request gets a second server span and a second
`http.server.request.duration` series from the `fastapi` meter, and every unhandled
exception a second error log record. FastAPI's `__call__` runs it outside the
middleware stack, so no middleware can step in front of it: aiva switches it off in
the app's telemetry configuration instead.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping, Sequence
from typing import Any

from starlette.routing import BaseRoute, Mount, Route
from starlette.types import Scope

# The helper Route.matches itself uses (aiva.web.routing reads it the same way).
from aiva.fast import FastLayer
from aiva.fast.fastapi import (
    EXCLUDE,
    YIELDED,
    effective_route,
    native_telemetry_config,
)
from aiva.web.paths import route_path

logger = logging.getLogger(__name__)

# FastAPI's own telemetry marks each request it traces with this ASGI scope key, and
# leaves alone every request where the key is present (None): aiva sets it, so a
# FastAPI app mounted below an instrumented one makes no second span, and yields to
# an outer FastAPI app that traces the request already.
TELEMETRY_SCOPE_KEY = "fastapi.telemetry"
# In a request's scope, set by aiva's request middleware where the fast layer's
# `fastapi_route_state` passed its self-test: aiva reads the route FastAPI's router chose
# from its scope state (a Mount's child scope is the same dict: apps below see it too).
READS_ROUTE_STATE_KEY = "aiva.fastapi_route_state"
# On a FastAPI app's router: endpoint -> its plain Starlette routes (see _plain_route).
_PLAIN_ROUTES_ATTR = "_aiva_plain_routes"


def is_fastapi(app: Any) -> bool:
    try:
        from fastapi import FastAPI
    except ImportError:
        return False
    return isinstance(app, FastAPI)


def template_of(scope: Scope, route: Any) -> str | None:
    """The template (below the root path) of the route a FastAPI router chose, where it
    recorded no route in scope["route"] or one without its prefix; None: not found.

    FastAPI 0.16x's router sets scope["route"] only for its own routes, and for a route
    of a router included with a prefix to the router's unprefixed route; Starlette's
    router sets it for every match. An empty string means the Mount at the root path.
    """
    chosen = effective_route(scope) if scope.get(READS_ROUTE_STATE_KEY) else None
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
    path = route_path(scope)
    return next((r for r in candidates if r.path_regex.match(path)), None)


def exclude_from_native_telemetry(app: Any, prefixes: Sequence[str], fast: FastLayer) -> None:
    """Leave the requests below `prefixes` (instrumented apps mounted there) to aiva:
    FastAPI's own telemetry keeps the rest of the app (its public `exclude` option, set
    on the configuration the fast layer's `fastapi_telemetry_config` reaches)."""
    config = native_telemetry_config(app) if "fastapi_telemetry_config" in fast else None
    if config is None:
        return  # aiva.fast's WARNING says what FastAPI's own telemetry does then
    earlier = config[EXCLUDE]
    below = tuple(p.rstrip("/") + "/" for p in prefixes)
    exact = frozenset(p.rstrip("/") or "/" for p in prefixes)

    def excluded(scope: MutableMapping[str, Any]) -> bool:
        path = route_path(scope)
        if path in exact or path.startswith(below):
            return True
        return bool(earlier(scope)) if earlier is not None else False

    config[EXCLUDE] = excluded


def yield_native_telemetry(app: Any, fast: FastLayer) -> None:
    """Turn FastAPI's own request telemetry off: aiva makes the one server span. Without
    the fast layer's `fastapi_telemetry_config`, FastAPI's request telemetry still stays
    away from the requests aiva's middleware marks (TELEMETRY_SCOPE_KEY)."""
    config = native_telemetry_config(app) if "fastapi_telemetry_config" in fast else None
    if config is None:
        return
    if any(config[key] for key in YIELDED):
        logger.info("FastAPI's own request telemetry yields to aiva's")
    for key in YIELDED:
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
