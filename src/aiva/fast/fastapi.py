"""FastAPI's private parts aiva reads or changes (FastAPI 0.16x).

- **The route its router chose** (`fastapi_route_state`). For a route of a router
  included with a prefix, FastAPI's router leaves the router's own, unprefixed route in
  `scope["route"]`; the route it really matched, with the full template, is kept in its
  own scope state (`scope["fastapi"]["effective_route_context"]`, the keys FastAPI names
  `_FASTAPI_SCOPE_KEY` and `_FASTAPI_EFFECTIVE_ROUTE_CONTEXT_KEY`). Without it, aiva
  labels such a route by what Starlette's scope says (the template without the prefix).
- **Its own telemetry's configuration** (`fastapi_telemetry_config`). `FastAPI(telemetry=
  {...})` is kept in `app._telemetry`, read per request and at the lifespan, with no
  public setter once the app exists: aiva switches FastAPI's tracing, metrics and logs
  off there (aiva makes the one server span), and excludes instrumented apps mounted
  below. Without it, FastAPI's request telemetry still stays away from every request
  aiva's middleware marks (the public scope key `fastapi.telemetry`), but what the user
  configured for its lifespan is left as it is, and an instrumented app mounted below a
  FastAPI app gets FastAPI's span too unless the user passes `FastAPI(telemetry=
  {'tracing': False, 'metrics': False, 'logs': False})`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ROUTER_SCOPE_KEY = "fastapi"
EFFECTIVE_ROUTE_KEY = "effective_route_context"
# The switches of `FastAPI(telemetry={...})` (its public TelemetryConfig) that aiva's
# request middleware and logging cover, and the one for requests left to others.
YIELDED = ("tracing", "metrics", "logs")
EXCLUDE = "exclude"


def effective_route(scope: Mapping[str, Any]) -> Any | None:
    """The route context FastAPI's router chose for this request, None when none."""
    state = scope.get(ROUTER_SCOPE_KEY)
    return state.get(EFFECTIVE_ROUTE_KEY) if isinstance(state, dict) else None


def native_telemetry_config(app: Any) -> dict[str, Any] | None:
    """The configuration FastAPI's own telemetry reads, to change in place; None where
    this FastAPI keeps it elsewhere."""
    config = getattr(app, "_telemetry", None)
    if not isinstance(config, dict) or not all(k in config for k in (*YIELDED, EXCLUDE)):
        return None
    return config


def _installed() -> bool:
    """Without FastAPI there is no FastAPI app, and nothing for these hooks to do."""
    import importlib.util

    return importlib.util.find_spec("fastapi") is not None


def route_state_works() -> str | None:
    """FastAPI keeps its chosen route under the keys aiva reads, with the full template."""
    if not _installed():
        return None
    import fastapi.routing

    found = (
        getattr(fastapi.routing, "_FASTAPI_SCOPE_KEY", None),
        getattr(fastapi.routing, "_FASTAPI_EFFECTIVE_ROUTE_CONTEXT_KEY", None),
    )
    if found != (ROUTER_SCOPE_KEY, EFFECTIVE_ROUTE_KEY):
        return f"its router keeps the chosen route under {found}"
    return None


def telemetry_config_works() -> str | None:
    """A FastAPI app keeps its telemetry configuration where aiva changes it."""
    if not _installed():
        return None
    from fastapi import FastAPI

    if native_telemetry_config(FastAPI()) is None:
        return "FastAPI keeps its telemetry configuration elsewhere than _telemetry"
    return None
