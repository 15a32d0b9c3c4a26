"""Building the whole pipeline from settings, installing the globals, and shutting it down."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import metrics, propagate, trace
from opentelemetry._logs import set_logger_provider
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from aiva.fast import PLAIN, FastLayer, fast_layer
from aiva.settings import Settings
from aiva.telemetry.clients import ClientInstrumentation, client_libraries, instrument_clients
from aiva.telemetry.exporters import ExportStats
from aiva.telemetry.histogram import ProducedHistogram
from aiva.telemetry.log_queue import observe_log_drops
from aiva.telemetry.log_setup import claim_logging
from aiva.telemetry.logs import build_otlp_logs
from aiva.telemetry.metrics import BodySizeHistograms, build_metrics
from aiva.telemetry.propagation import build_propagator
from aiva.telemetry.resource import build_resource
from aiva.telemetry.shutdown import flush_within, report_abandoned, stop_within
from aiva.telemetry.system import SystemMetrics
from aiva.telemetry.traces import AdjustableRatioSampler, build_tracer_provider

logger = logging.getLogger(__name__)


@dataclass
class Telemetry:
    """The process's providers; `shutdown` flushes and stops them once, within one deadline."""

    tracer_provider: trace.TracerProvider
    meter_provider: metrics.MeterProvider
    logger_provider: LoggerProvider | None
    registry: CollectorRegistry
    stats: ExportStats
    sampler: AdjustableRatioSampler | None = None
    system: SystemMetrics | None = None
    request_duration: ProducedHistogram | None = None
    # Undoes what the app's lifespan did to the process's logging (see claim_logging).
    release_logging: Callable[[], None] | None = None
    # The contrib client instrumentors this app switched on (see aiva.telemetry.clients).
    clients: ClientInstrumentation | None = None
    # The formats of telemetry.propagators (W3C trace context and baggage by default).
    propagator: TextMapPropagator = field(
        default_factory=lambda: build_propagator(("tracecontext", "baggage"))
    )
    # The HTTP server's body sizes, when telemetry.http.body_size_metrics is on.
    body_sizes: BodySizeHistograms | None = None
    # The fast layer's hooks this app's pipeline uses (aiva.fast).
    fast: FastLayer = PLAIN
    _shut_down: bool = field(default=False, repr=False)

    def force_flush(self, timeout_s: float) -> list[Exception]:
        """Push out what is buffered, all providers at once, returning by the deadline
        whatever the collector does (a flush still running then is a TimeoutError)."""
        outcome = flush_within(self._sdk_providers(), time.monotonic() + timeout_s)
        late = [
            TimeoutError(f"{name} flush still running after {timeout_s:g} s")
            for name in outcome.unfinished
        ]
        return outcome.errors + late

    def shutdown(self, timeout_s: float) -> list[Exception]:
        """Flush, then stop every provider; idempotent; errors gathered and logged, not raised.

        Returns within `timeout_s` whatever the collector does (aiva.telemetry.shutdown):
        what could not be sent by then is counted as dropped and logged once."""
        if self._shut_down:
            return []
        self._shut_down = True
        deadline = time.monotonic() + timeout_s
        errors = _each([self.release_logging] if self.release_logging else [], lambda r: r())
        if self.clients is not None:  # unpatched first: no new client spans while flushing
            errors += self.clients.uninstrument()
        outcome = stop_within(self._sdk_providers(), deadline)
        errors += outcome.errors
        for error in errors:
            logger.error("telemetry shutdown: %s", error, exc_info=error)
        report_abandoned(self.stats, outcome, timeout_s)
        return errors

    def _sdk_providers(self) -> list[Any]:
        """The SDK providers (no-op ones have nothing to flush), logs before metrics."""
        candidates = (self.tracer_provider, self.logger_provider, self.meter_provider)
        return [
            p for p in candidates if isinstance(p, TracerProvider | LoggerProvider | MeterProvider)
        ]


def setup_telemetry(settings: Settings) -> Telemetry:
    """Every provider the settings ask for (no-op ones when telemetry is off), logging included."""
    stats = ExportStats()
    config = settings.telemetry
    resource = build_resource(settings)
    tracer_provider: trace.TracerProvider = trace.NoOpTracerProvider()
    meter_provider: metrics.MeterProvider = metrics.NoOpMeterProvider()
    registry = CollectorRegistry()
    logger_provider = sampler = system = request_duration = client_duration = None
    body_sizes: BodySizeHistograms | None = None
    fast = fast_layer(config.fast_path) if config.enabled else PLAIN
    if config.enabled and config.traces.enabled:
        tracer_provider, sampler = build_tracer_provider(settings, resource, stats, fast)
    if config.enabled and config.metrics.enabled:
        # aiva's own aggregation reaches /metrics through the exporter's translation.
        producing = {"metric_producers", "prometheus_translation"} <= fast.usable
        built = build_metrics(settings, resource, stats, fast=producing)
        meter_provider, registry = built.provider, built.registry
        request_duration, client_duration = built.request_duration, built.client_duration
        body_sizes = built.body_sizes
        system = SystemMetrics(meter_provider)
        system.start()
        observe_log_drops(meter_provider.get_meter("aiva.logs"))
    otlp_logs = build_otlp_logs(settings, resource, stats, fast) if config.enabled else None
    if otlp_logs is not None:
        logger_provider = otlp_logs.provider
    release_logging = claim_logging(config.logs, otlp_logs)
    clients = None
    if config.enabled:
        names = client_libraries(config.instrumentations)
        clients = instrument_clients(names, tracer_provider, meter_provider, client_duration, fast)
    telemetry = Telemetry(
        tracer_provider,
        meter_provider,
        logger_provider,
        registry,
        stats,
        sampler,
        system,
        request_duration,
        release_logging,
        clients=clients,
        propagator=build_propagator(config.propagators),
        body_sizes=body_sizes,
        fast=fast,
    )
    install_globals(telemetry)
    return telemetry


def install_globals(telemetry: Telemetry) -> None:
    """The one place the OpenTelemetry globals are set (for `aiva.tracer()`, `aiva.meter()`).

    The API lets each global be set once per process; a second app in the same process
    (tests) keeps the first one's globals, while its own requests use its own providers.
    """
    propagate.set_global_textmap(telemetry.propagator)
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(telemetry.tracer_provider)
    # The metrics and logs APIs export no class for their stand-in before a provider is
    # set: a provider of a kind aiva installs means one is set already.
    if not isinstance(metrics.get_meter_provider(), MeterProvider | metrics.NoOpMeterProvider):
        metrics.set_meter_provider(telemetry.meter_provider)
    if telemetry.logger_provider is not None:
        from opentelemetry._logs import NoOpLoggerProvider, get_logger_provider

        if not isinstance(get_logger_provider(), LoggerProvider | NoOpLoggerProvider):
            set_logger_provider(telemetry.logger_provider)


def _each(items: list[Any], call: Callable[[Any], object]) -> list[Exception]:
    """Call `call` on every item, gathering errors instead of stopping at the first."""
    errors: list[Exception] = []
    for item in items:
        try:
            call(item)
        except Exception as error:  # noqa: BLE001 - gathered and logged by the caller
            errors.append(error)
    return errors
