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
from collections.abc import Sequence
from typing import Any

from starlette.routing import BaseRoute, Route
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
_SCOPE_KEY = "fastapi"
_EFFECTIVE_ROUTE_KEY = "effective_route_context"
# On the app's router: endpoint -> template of its plain Starlette routes (see below).
_PLAIN_TEMPLATES_ATTR = "_aiva_plain_route_templates"

# The switches of `FastAPI(telemetry={...})` (its public TelemetryConfig) that aiva's
# request middleware and logging cover.
_YIELDED = ("tracing", "metrics", "logs")


def is_fastapi(app: Any) -> bool:
    try:
        from fastapi import FastAPI
    except ImportError:
        return False
    return isinstance(app, FastAPI)


def check_private_hooks() -> None:
    """Warn once when this FastAPI keeps its chosen route elsewhere than aiva reads it."""
    import fastapi.routing

    found = (
        getattr(fastapi.routing, "_FASTAPI_SCOPE_KEY", None),
        getattr(fastapi.routing, "_FASTAPI_EFFECTIVE_ROUTE_CONTEXT_KEY", None),
    )
    if found != (_SCOPE_KEY, _EFFECTIVE_ROUTE_KEY):
        logger.warning(
            "this FastAPI keeps its matched routes where aiva does not look: routes of "
            "routers included with a prefix may be labelled without it"
        )


def included_route_template(fastapi_scope: Any, route: Any) -> str | None:
    """The full template (prefix included) FastAPI chose for `route`, if it recorded one."""
    # Private: FastAPI's router state in the scope (see _EFFECTIVE_ROUTE_KEY).
    chosen = fastapi_scope.get(_EFFECTIVE_ROUTE_KEY) if isinstance(fastapi_scope, dict) else None
    if chosen is None or getattr(chosen, "original_route", None) is not route:
        return None  # none, or an outer app's choice
    template = getattr(chosen, "path_format", None)
    return template if isinstance(template, str) and template else None


def plain_route(scope: Scope) -> Route | None:
    """The plain Starlette Route (`app.add_route`, `/docs`) a FastAPI app matched.

    FastAPI 0.16x's router records its own routes in scope["route"] but not Starlette's;
    Route.matches leaves its endpoint in the scope, so the route is found by that
    endpoint among the app's routes, once per endpoint (cached on the router).
    """
    endpoint = scope.get("endpoint")
    router = getattr(scope.get("app"), "router", None)
    if endpoint is None or router is None:
        return None
    known: dict[Any, Route | None] | None = getattr(router, _PLAIN_TEMPLATES_ATTR, None)
    if known is None:
        known = {}
        setattr(router, _PLAIN_TEMPLATES_ATTR, known)
    if endpoint not in known:
        known[endpoint] = next(
            (r for r in router.routes if isinstance(r, Route) and r.endpoint is endpoint), None
        )
    return known[endpoint]


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
