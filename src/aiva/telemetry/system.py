"""Process and system metrics under their semantic-convention names."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import psutil
from opentelemetry.instrumentation.system_metrics import SystemMetricsInstrumentor
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

logger = logging.getLogger(__name__)

# The contrib instrumentor's metrics whose names are the current semantic conventions
# (its process.runtime.* names are the deprecated ones and are left out).
SYSTEM_METRICS: dict[str, list[str] | None] = {
    "process.cpu.time": ["user", "system"],
    "process.cpu.utilization": ["user", "system"],
    "process.memory.usage": None,
    "process.memory.virtual": None,
    "process.thread.count": None,
    "process.open_file_descriptor.count": None,
    "process.context_switches": ["involuntary", "voluntary"],
    "cpython.gc.collections": None,
    "system.cpu.time": ["idle", "user", "system", "irq"],
    "system.cpu.utilization": ["idle", "user", "system", "irq"],
    "system.memory.usage": ["used", "free", "cached"],
    "system.memory.utilization": ["used", "free", "cached"],
    "system.network.io": ["transmit", "receive"],
    "system.disk.io": ["read", "write"],
}


class SystemMetrics:
    """Starts and stops the contrib instrumentor plus what it lacks (`process.uptime`)."""

    def __init__(self, meter_provider: MeterProvider) -> None:
        self._meter_provider = meter_provider
        self._owned = False

    def start(self) -> None:
        # The contrib instrumentor is a per-process singleton (BaseInstrumentor), and
        # calling the class runs __init__ on that one instance again, replacing its
        # config: under `opentelemetry-instrument`, which instrumented it with every
        # metric, aiva's shorter config made each of its callbacks fail (12 tracebacks
        # a collection).
        if _instrumentor().is_instrumented_by_opentelemetry:
            logger.info(
                "system metrics are instrumented already in this process (another app or "
                "opentelemetry-instrument): left as they are"
            )
        else:  # nobody's config to replace: the usual constructor
            SystemMetricsInstrumentor(config=SYSTEM_METRICS).instrument(
                meter_provider=self._meter_provider
            )
            self._owned = True
        meter = self._meter_provider.get_meter("aiva.system")
        # psutil fills the gap: the contrib package has no process.uptime.
        meter.create_observable_gauge(
            "process.uptime", callbacks=[_uptime], unit="s", description="Process uptime."
        )

    def stop(self) -> None:
        """Uninstrument what this app instrumented (and nothing another one did)."""
        instrumentor = _instrumentor()
        if self._owned and instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
        self._owned = False


def _instrumentor() -> SystemMetricsInstrumentor:
    """The process's instrumentor as it is: BaseInstrumentor.__new__ hands out its one
    instance, without the __init__ that calling the class would run on it again."""
    return SystemMetricsInstrumentor.__new__(SystemMetricsInstrumentor)


def _uptime(options: CallbackOptions) -> Iterable[Observation]:
    return [Observation(time.time() - psutil.Process().create_time())]
