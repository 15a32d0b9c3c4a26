"""`create_app`: the instrumented Starlette application, built from its arguments."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from aiva.health.registry import CustomCheck, as_custom
from aiva.health.types import CheckFunction
from aiva.settings import LoadedSettings, Settings, load_settings
from aiva.web.body_limit import BodyLimitMiddleware
from aiva.web.lifespan import ReloadSource, make_lifespan
from aiva.web.middleware import RequestMiddleware
from aiva.web.routes import demo, health, info
from aiva.web.routes.metrics import metrics
from aiva.web.routing import RouteGroup

logger = logging.getLogger(__name__)


def create_app(
    settings: Settings | LoadedSettings | None = None,
    routes: Sequence[BaseRoute] = (),
    checks: Sequence[CustomCheck | CheckFunction] = (),
) -> Starlette:
    """The service's Starlette app: aiva's endpoints, then `routes`, under aiva's middleware.

    With no `settings`, they are loaded from the process environment and the settings
    files (raising SettingsError when invalid). Settings loaded from files (None, or a
    LoadedSettings) are reloaded when the files change or on SIGHUP; a plain Settings
    object stays as given.
    """
    reload_from: ReloadSource | None = None
    if settings is None:
        settings = load_settings(os.environ)
    if isinstance(settings, LoadedSettings):
        reload_from = ReloadSource(settings, dict(os.environ))
        settings = settings.settings
    custom = [as_custom(check) for check in checks]  # misuse fails here, not at start-up
    app = _InstrumentedStarlette(
        routes=[*_own_routes(settings), *routes],
        middleware=_middleware(settings),
        lifespan=make_lifespan(settings, custom, reload_from),
    )
    _settle_instrumentation(app, settings)
    return app


class _InstrumentedStarlette(Starlette):
    """Starlette with aiva's request middleware outside its ServerErrorMiddleware.

    Starlette always puts ServerErrorMiddleware outermost, so the 500 it answers for an
    unhandled exception would pass no user middleware: no X-Request-ID, no status for
    the span and the access line. Wrapping the whole stack keeps every response in view.
    """

    def build_middleware_stack(self) -> ASGIApp:
        return RequestMiddleware(super().build_middleware_stack())


def create_reference_app(settings: Settings | LoadedSettings | None = None) -> Starlette:
    """What `aiva serve` runs: the app with the demo API."""
    return create_app(settings, routes=demo.ROUTES)


def _own_routes(settings: Settings) -> list[BaseRoute]:
    """aiva's endpoints, as one RouteGroup: a user request skips them in one dict lookup.

    With `instrumentation: stock` they stay separate routes: the contrib instrumentation
    names spans by the `.path` of the top-level route that matched, which a group lacks.
    """
    own: list[BaseRoute] = [*info.ROUTES, *health.ROUTES]
    prometheus = settings.telemetry.metrics.prometheus
    if settings.telemetry.enabled and settings.telemetry.metrics.enabled and prometheus.enabled:
        own.append(Route(prometheus.path, metrics, methods=["GET"]))
    if settings.telemetry.instrumentation == "stock":
        return own
    return [RouteGroup(own)]


def _middleware(settings: Settings) -> list[Middleware]:
    security = settings.security
    stack: list[Middleware] = []
    if security.allowed_origins:
        stack.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(security.allowed_origins),
                allow_methods=["*"],
                allow_headers=["*"],
                expose_headers=["X-Request-ID"],
            )
        )
    stack.append(Middleware(BodyLimitMiddleware, max_body_size=security.max_request_body_bytes))
    return stack


def _settle_instrumentation(app: Starlette, settings: Settings) -> None:
    """Exactly one server span a request, whatever else knows about OpenTelemetry.

    With `instrumentation: stock` the contrib Starlette instrumentation makes the spans
    and metrics. Otherwise aiva's middleware does, and a contrib middleware that
    auto-instrumentation (`opentelemetry-instrument`) slipped in is taken out again.
    Starlette's own OpenTelemetryMiddleware needs no handling: it and aiva's
    middleware share a scope flag, and aiva's (wrapping the whole stack) runs first.
    """
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware as ContribMiddleware

    if settings.telemetry.instrumentation == "stock":
        from opentelemetry.instrumentation.starlette import StarletteInstrumentor

        StarletteInstrumentor.instrument_app(app)
        return
    own = [m for m in app.user_middleware if m.cls is not ContribMiddleware]  # type: ignore[comparison-overlap]
    if len(own) < len(app.user_middleware):
        logger.info("removing the contrib ASGI instrumentation: aiva instruments this app")
        app.user_middleware = own
