"""`instrument(app)`: aiva's telemetry, endpoints and health for an existing Starlette or
FastAPI application."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Literal, TypeVar, cast

from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.types import ASGIApp

from aiva.errors import InstrumentationError
from aiva.fast import PLAIN, fast_layer
from aiva.health.registry import CustomCheck, as_custom
from aiva.health.types import CheckFunction
from aiva.settings import LoadedSettings, Settings, load_settings
from aiva.web import fastapi_support, lifespans
from aiva.web.body_limit import BodyLimitMiddleware
from aiva.web.lifespan import ReloadSource, make_lifespan
from aiva.web.lifespans import Lifespan, compose, mounted_apps
from aiva.web.middleware import RequestMiddleware
from aiva.web.rate_limit import RateLimitMiddleware, RateLimits, with_rate_limits
from aiva.web.routes import health, info
from aiva.web.routes.metrics import metrics
from aiva.web.routing import MountTemplates, RouteGroup

logger = logging.getLogger(__name__)

App = TypeVar("App", bound=Starlette)
OnConflict = Literal["error", "app"]
# Set on an app instrument() has taken, so that it is never taken twice.
INSTRUMENTED_ATTR = "_aiva_instrumented"
# On an instrumented app: the fast layer its settings chose (aiva.fast).
FAST_LAYER_ATTR = "_aiva_fast_layer"
_PARAMETER = re.compile(r"{[^}]*}")


def instrument(
    app: App,
    settings: Settings | LoadedSettings | None = None,
    checks: Sequence[CustomCheck | CheckFunction] = (),
    *,
    on_conflict: OnConflict = "error",
    include_in_schema: bool = False,
) -> App:
    """Give an existing Starlette or FastAPI app everything aiva gives its own; returns it.

    - aiva's request middleware wraps the whole app (outside its error middleware): one
      server span, the HTTP metrics, the request id and the access line per request;
    - aiva's endpoints (`/info`, the health probes, `/metrics`) come first in its routes;
      one the app already serves is an InstrumentationError naming both, or, with
      `on_conflict="app"`, left to the app's route;
    - its lifespan starts aiva's telemetry and health runner before the app's own
      lifespan and flushes them after it; the lifespans of apps mounted under it run
      too (Starlette runs none of them); every state reaches the handlers;
    - FastAPI's own OpenTelemetry support yields to aiva's; aiva's endpoints stay out of
      the OpenAPI document unless `include_in_schema`.

    Settings as for `create_app`: loaded from the environment and the settings files
    when None (then reloaded live), or as given.
    """
    if not _is_starlette(app):
        raise TypeError(f"instrument() takes a Starlette or FastAPI application, not {app!r}")
    if getattr(app, INSTRUMENTED_ATTR, False):
        raise InstrumentationError(f"{app!r} is instrumented by aiva already")
    if app.middleware_stack is not None:
        raise InstrumentationError(
            "instrument() must be called before the app serves (its middleware stack is built)"
        )
    reload_from: ReloadSource | None = None
    if settings is None:
        settings = load_settings(os.environ)
    if isinstance(settings, LoadedSettings):
        reload_from = ReloadSource(settings, dict(os.environ))
        settings = settings.settings
    custom = [as_custom(check) for check in checks]  # misuse fails here, not at start-up
    _refuse_nested(app)
    own = _claim_paths(own_routes(settings), app.router.routes, on_conflict)
    inserted = _grouped(own, settings, app, include_in_schema)
    app.router.routes[0:0] = inserted
    limits = RateLimits.from_settings(settings.security.rate_limit, _unlimited_paths(settings))
    _add_middleware(app, settings, limits)
    claim_again = _claim_again_at_start(inserted, on_conflict)
    # The Limiter counts for rate limiting (when on) and for wrong API keys.
    main = with_rate_limits(make_lifespan(settings, custom, reload_from), limits)
    aiva_lifespan = compose((claim_again, app), (main, app))
    lifespans.run_mounted_lifespans(app, first=(aiva_lifespan, app))
    _settle_instrumentation(app, settings)
    setattr(app, INSTRUMENTED_ATTR, True)
    return app


def run_mounted_lifespans(app: Starlette) -> None:
    """For an app aiva does not instrument with instrumented apps mounted below it: its
    lifespan runs theirs too (Starlette runs no mounted app's lifespan), and, for a
    FastAPI app, its own telemetry leaves the requests to those apps to aiva's.

    Call it once the mounts are in place; mounts added later are not seen.
    """
    lifespans.run_mounted_lifespans(app)
    if fastapi_support.is_fastapi(app):
        mounted = [
            route
            for route in app.router.routes
            if isinstance(route, Mount) and getattr(route.app, INSTRUMENTED_ATTR, False)
        ]
        if mounted:
            # The fast layer as the mounted apps' settings chose it (the first one's).
            fast = getattr(mounted[0].app, FAST_LAYER_ATTR, PLAIN)
            prefixes = [route.path for route in mounted]
            fastapi_support.exclude_from_native_telemetry(app, prefixes, fast)


def _is_starlette(app: object) -> bool:
    # By the class names in the MRO, not isinstance: auto-instrumentation replaces
    # starlette.applications.Starlette with a subclass, which apps made before (or
    # FastAPI, which subclasses the original) are no instance of.
    return any(
        cls.__module__ == "starlette.applications" and cls.__name__ == "Starlette"
        for cls in type(app).__mro__
    )


def own_routes(settings: Settings) -> list[Route]:
    """aiva's endpoints for an app: `/info`, the health probes and, when on, `/metrics`."""
    own: list[Route] = [*info.ROUTES, *health.ROUTES]
    prometheus = settings.telemetry.metrics.prometheus
    if settings.telemetry.enabled and settings.telemetry.metrics.enabled and prometheus.enabled:
        own.append(Route(prometheus.path, metrics, methods=["GET"]))
    return own


def _grouped(
    own: list[Route], settings: Settings, app: Starlette, include_in_schema: bool
) -> list[BaseRoute]:
    """The routes as the router gets them: one RouteGroup (a user request skips them in
    one dict lookup), plain routes for the stock instrumentation (it names spans by the
    top-level route's `.path`, which a group lacks), or FastAPI routes for the schema."""
    if include_in_schema and fastapi_support.is_fastapi(app):
        return fastapi_support.schema_routes(own)
    if settings.telemetry.instrumentation == "stock":
        return list(own)
    return [RouteGroup(own)]


def _claim_paths(own: list[Route], theirs: list[BaseRoute], on_conflict: OnConflict) -> list[Route]:
    """aiva's routes less those the app serves itself; a clash is an error unless the
    app's route is to win."""
    kept = []
    for route in own:
        clash = _served_by(route, theirs)
        if clash is None:
            kept.append(route)
        elif on_conflict == "app":
            logger.info("aiva's %s is left to the app's route %r", route.path, clash)
        else:
            raise InstrumentationError(
                f"aiva's endpoint GET {route.path} would shadow the app's "
                f'{_describe(clash)}; rename one, or pass on_conflict="app" to leave '
                "the path to the app"
            )
    return kept


def _claim_again_at_start(inserted: list[BaseRoute], on_conflict: OnConflict) -> Lifespan:
    """The same check when the app starts: routes added after instrument() (a FastAPI
    app's `@app.get` decorators usually are) must not be shadowed silently either."""

    @asynccontextmanager
    async def claim(app: Starlette) -> AsyncIterator[None]:
        theirs = [r for r in app.router.routes if not any(r is mine for mine in inserted)]
        now: list[BaseRoute] = []
        for mine in inserted:
            held = mine.routes if isinstance(mine, RouteGroup) else [mine]
            assert all(isinstance(r, Route) for r in held)  # aiva's own endpoints
            kept = _claim_paths(cast(list[Route], held), theirs, on_conflict)
            if len(kept) == len(held):
                now.append(mine)
                continue
            replacement: list[BaseRoute] = (
                [RouteGroup(kept)] if isinstance(mine, RouteGroup) and kept else list(kept)
            )
            at = next(i for i, r in enumerate(app.router.routes) if r is mine)
            app.router.routes[at : at + 1] = replacement
            now.extend(replacement)
        inserted[:] = now
        yield

    return claim


def _describe(route: BaseRoute) -> str:
    """A route in a line: its kind, path and name (a router's repr runs to pages)."""
    path = getattr(route, "path", None)
    name = getattr(route, "name", None)
    named = f" (name {name!r})" if name else ""
    return f"{type(route).__name__} {path!r}{named}" if path is not None else repr(route)[:200]


def _served_by(route: Route, theirs: list[BaseRoute]) -> BaseRoute | None:
    """The app's route that would answer GET `route.path`, if any.

    A route that would answer any path at all (a catch-all such as `/{path:path}`) is
    no clash: it is a fallback by design, and aiva's precise paths come first.
    """
    path = _PARAMETER.sub("x", route.path)
    unlikely = "/aiva-unclaimed-path-0c5e" + "/x" * path.count("/")
    for candidate in theirs:
        if _answers(candidate, path) and not _answers(candidate, unlikely):
            return candidate
    return None


def _answers(route: BaseRoute, path: str) -> bool:
    scope = {"type": "http", "method": "GET", "path": path, "root_path": "", "headers": []}
    match, _ = route.matches(scope)
    return match is Match.FULL  # PARTIAL: the path for other methods, which can coexist


def _unlimited_paths(settings: Settings) -> list[str]:
    """What rate limiting leaves alone: the probes, the health report and /metrics."""
    return [*(route.path for route in health.ROUTES), settings.telemetry.metrics.prometheus.path]


def _add_middleware(app: Starlette, settings: Settings, limits: RateLimits) -> None:
    """CORS (when origins are listed), rate limiting (when on) and the body limit
    outermost of the app's own middleware, and aiva's request middleware around the
    whole stack (so a 429 has its span, access line and request id too).

    Starlette always puts ServerErrorMiddleware outermost, so the 500 it answers for an
    unhandled exception would pass no user middleware: no X-Request-ID, no status for
    the span and the access line. Wrapping what `build_middleware_stack` returns keeps
    every response in view (FastAPI builds its stack through the same method).
    """
    security = settings.security
    app.add_middleware(BodyLimitMiddleware, max_body_size=security.max_request_body_bytes)
    if limits.enabled:  # inside CORS: a browser can read a 429's fields
        app.add_middleware(RateLimitMiddleware, limits=limits, routes=app.router.routes)
    if security.allowed_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(security.allowed_origins),
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["X-Request-ID", "Retry-After", "RateLimit-Policy", "RateLimit"],
        )
    build = app.build_middleware_stack

    reads_route_state = "fastapi_route_state" in fast_layer(settings.telemetry.fast_path)

    def build_with_aiva() -> ASGIApp:
        return RequestMiddleware(build(), MountTemplates(app.router.routes), reads_route_state)

    # An instance attribute over the public method: Starlette and FastAPI call
    # self.build_middleware_stack() once, when the first request or lifespan arrives.
    setattr(app, "build_middleware_stack", build_with_aiva)  # noqa: B010 - mypy: method


def _refuse_nested(app: Starlette) -> None:
    """Two aiva pipelines for one request tree would fight over its state: instrument
    the outer app only."""
    for sub in mounted_apps(app.router.routes):
        if getattr(sub, INSTRUMENTED_ATTR, False):
            raise InstrumentationError(
                f"{sub!r}, mounted under {app!r}, is instrumented by aiva already: "
                "instrument only the outermost app"
            )


def _settle_instrumentation(app: Starlette, settings: Settings) -> None:
    """Exactly one server span a request, whatever else knows about OpenTelemetry.

    With `instrumentation: stock` the contrib Starlette instrumentation makes the spans
    and metrics. Otherwise aiva's middleware does: a contrib middleware that
    auto-instrumentation (`opentelemetry-instrument`) slipped in is taken out again, and
    FastAPI's own telemetry is switched off. Starlette's own OpenTelemetryMiddleware
    needs no handling: it and aiva's middleware share a scope flag, and aiva's
    (wrapping the whole stack) runs first.
    """
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware as ContribMiddleware

    if settings.telemetry.instrumentation == "stock":
        from opentelemetry.instrumentation.starlette import StarletteInstrumentor

        StarletteInstrumentor.instrument_app(app)
        return
    fast = fast_layer(settings.telemetry.fast_path)
    setattr(app, FAST_LAYER_ATTR, fast)
    if fastapi_support.is_fastapi(app):
        fastapi_support.yield_native_telemetry(app, fast)
    # FastAPI apps mounted below (now or later) see the scope key RequestMiddleware sets.
    own = [m for m in app.user_middleware if m.cls is not ContribMiddleware]  # type: ignore[comparison-overlap]
    if len(own) < len(app.user_middleware):
        logger.info("removing the contrib ASGI instrumentation: aiva instruments this app")
        app.user_middleware = own
