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

logger = logging.getLogger(__name__)

# The switches of `FastAPI(telemetry={...})` (its public TelemetryConfig) that aiva's
# request middleware and logging cover.
_YIELDED = ("tracing", "metrics", "logs")


def is_fastapi(app: Any) -> bool:
    try:
        from fastapi import FastAPI
    except ImportError:
        return False
    return isinstance(app, FastAPI)


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
