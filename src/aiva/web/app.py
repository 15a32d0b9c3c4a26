"""`create_app`: the instrumented Starlette application, built from its arguments."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute

from aiva.settings import Settings, load_settings
from aiva.web.lifespan import make_lifespan
from aiva.web.middleware import RequestContextMiddleware
from aiva.web.routes import info


def create_app(
    settings: Settings | None = None,
    routes: Sequence[BaseRoute] = (),
    checks: Sequence[Callable[..., Any]] = (),
) -> Starlette:
    """The service's Starlette app: aiva's endpoints, then `routes`, under aiva's middleware.

    With no `settings`, they are loaded from the process environment and the settings
    files (raising SettingsError when invalid).
    """
    if settings is None:
        settings = load_settings(os.environ).settings
    if not all(callable(check) for check in checks):
        raise TypeError("every health check must be an async callable")
    return Starlette(
        routes=[*info.ROUTES, *routes],
        middleware=_middleware(settings),
        lifespan=make_lifespan(settings, checks),
    )


def _middleware(settings: Settings) -> list[Middleware]:
    security = settings.security
    stack = [Middleware(RequestContextMiddleware)]
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
    stack.append(
        Middleware(RequestBodyLimitMiddleware, max_body_size=security.max_request_body_bytes)
    )
    return stack
