"""The app's lifespan: it owns the process's resources and hands them to requests as state."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypedDict

import anyio
from starlette.applications import Starlette
from starlette.requests import Request

from aiva import __version__
from aiva.health.instruments import check_duration_histogram, register_gauges
from aiva.health.registry import CustomCheck, build_checks
from aiva.health.runner import HealthRunner
from aiva.heap import refreeze_if_frozen
from aiva.settings import LoadedSettings, Settings
from aiva.telemetry.http import HttpTelemetry
from aiva.telemetry.log_setup import set_level
from aiva.telemetry.setup import Telemetry, setup_telemetry
from aiva.telemetry.spans import tracer_of
from aiva.web.reloader import LiveSettings, SettingsReloader

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AppState:
    """What the lifespan hands to every request."""

    settings: Settings
    telemetry: Telemetry
    http: HttpTelemetry
    health: HealthRunner
    live: LiveSettings
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    started_monotonic: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class ReloadSource:
    """Where the settings came from, so that they can be read again."""

    loaded: LoadedSettings
    environ: Mapping[str, str]


class LifespanState(TypedDict):
    aiva: AppState


def app_state(request: Request) -> AppState:
    """The lifespan's state for a request handler."""
    state: AppState | None = getattr(request.state, "aiva", None)
    if state is None:
        raise RuntimeError(
            "aiva's lifespan has not run for this app. Mounted under another app? "
            "Starlette runs no mounted app's lifespan: instrument the outer app instead, "
            "or call aiva.run_mounted_lifespans(outer_app)"
        )
    return state


def build_health(
    settings: Settings, telemetry: Telemetry, custom: Sequence[CustomCheck]
) -> HealthRunner:
    """The runner with every configured and custom check, its spans and its metrics."""
    meter = telemetry.meter_provider.get_meter("aiva.health", __version__)
    runner = HealthRunner(
        build_checks(settings, telemetry.stats, custom),
        settings.health,
        tracer_of(telemetry.tracer_provider, "aiva.health", __version__),
        check_duration_histogram(meter),
    )
    register_gauges(meter, runner)
    return runner


def make_applier(
    telemetry: Telemetry, health: HealthRunner, custom: Sequence[CustomCheck]
) -> Callable[[Settings], None]:
    """What a reload does with new settings: the live keys only."""

    def apply(new: Settings) -> None:
        set_level(new.telemetry.logs.level)
        if telemetry.sampler is not None:
            telemetry.sampler.set_ratio(new.telemetry.traces.sampler_ratio)
        health.configure(new.health, build_checks(new, telemetry.stats, custom))
        refreeze_if_frozen()  # the replaced settings and checks may sit in frozen cycles

    return apply


def make_lifespan(
    settings: Settings, checks: Sequence[CustomCheck], reload_from: ReloadSource | None = None
) -> Callable[[Starlette], Any]:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[LifespanState]:
        telemetry = setup_telemetry(settings)
        http = HttpTelemetry(
            telemetry.tracer_provider,
            telemetry.meter_provider,
            settings.telemetry.traces.excluded_paths,
            telemetry.request_duration,
            instrumented=settings.telemetry.instrumentation == "aiva",
            settings=settings.telemetry.http,
            body_sizes=telemetry.body_sizes,
            propagator=telemetry.propagator,
            excluded_urls=settings.telemetry.traces.excluded_urls,
        )
        health = build_health(settings, telemetry, checks)
        live = LiveSettings(settings)
        state = AppState(settings, telemetry, http, health, live)
        logger.info(
            "%s %s started (environment %s)",
            settings.service.name,
            settings.service.version,
            settings.service.environment,
        )
        for notice in reload_from.loaded.notices if reload_from is not None else ():
            logger.warning("%s (see the README's table of standard variables)", notice)
        stopping = time.monotonic()  # set again when the app is told to stop
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(health.run)  # the first round starts at once
                if reload_from is not None:
                    reloads = telemetry.meter_provider.get_meter("aiva.config").create_counter(
                        "aiva.config.reloads", unit="{reload}", description="Settings reloads."
                    )
                    reloader = SettingsReloader(
                        reload_from.loaded,
                        reload_from.environ,
                        live,
                        make_applier(telemetry, health, checks),
                        reloads,
                    )
                    tasks.start_soon(reloader.run)
                try:
                    yield {"aiva": state}
                finally:
                    stopping = time.monotonic()
                    health.draining = True
                    tasks.cancel_scope.cancel()
        finally:
            logger.info("%s stopping: flushing telemetry", settings.service.name)
            # In-flight requests are done by now (uvicorn drains them before the
            # lifespan ends), so their spans, metrics and logs are in the buffers.
            # The lifespan's part of the shutdown bound (graceful_timeout_s, then this)
            # is otlp.timeout_s from the stop, background tasks' wind-down included.
            spent = time.monotonic() - stopping
            telemetry.shutdown(max(0.0, settings.telemetry.otlp.timeout_s - spent))

    return lifespan
