"""The app's lifespan: it owns the process's resources and hands them to requests as state."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypedDict

from starlette.applications import Starlette
from starlette.requests import Request

from aiva.settings import Settings
from aiva.telemetry.http import HttpTelemetry
from aiva.telemetry.setup import Telemetry, setup_telemetry

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AppState:
    """What the lifespan hands to every request."""

    settings: Settings
    telemetry: Telemetry
    http: HttpTelemetry
    checks: Sequence[Callable[..., Any]]
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    started_monotonic: float = field(default_factory=time.monotonic)


class LifespanState(TypedDict):
    aiva: AppState


def app_state(request: Request) -> AppState:
    """The lifespan's state for a request handler."""
    state: AppState = request.state.aiva
    return state


def make_lifespan(
    settings: Settings, checks: Sequence[Callable[..., Any]]
) -> Callable[[Starlette], Any]:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[LifespanState]:
        telemetry = setup_telemetry(settings)
        http = HttpTelemetry(
            telemetry.tracer_provider,
            telemetry.meter_provider,
            settings.telemetry.traces.excluded_paths,
            instrumented=settings.telemetry.instrumentation == "aiva",
        )
        state = AppState(settings, telemetry, http, tuple(checks))
        logger.info(
            "%s %s started (environment %s)",
            settings.service.name,
            settings.service.version,
            settings.service.environment,
        )
        try:
            yield {"aiva": state}
        finally:
            logger.info("%s stopping: flushing telemetry", settings.service.name)
            # In-flight requests are done by now (uvicorn drains them before the
            # lifespan ends), so their spans, metrics and logs are in the buffers.
            telemetry.shutdown(settings.telemetry.otlp.timeout_s)

    return lifespan
