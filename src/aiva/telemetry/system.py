"""Process and system metrics under their semantic-convention names."""

from __future__ import annotations

import time
from collections.abc import Iterable

import psutil
from opentelemetry.instrumentation.system_metrics import SystemMetricsInstrumentor
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

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
        # The contrib instrumentor is a per-process singleton (BaseInstrumentor).
        self._instrumentor = SystemMetricsInstrumentor(config=SYSTEM_METRICS)

    def start(self) -> None:
        if not self._instrumentor.is_instrumented_by_opentelemetry:
            self._instrumentor.instrument(meter_provider=self._meter_provider)
        meter = self._meter_provider.get_meter("aiva.system")
        # psutil fills the gap: the contrib package has no process.uptime.
        meter.create_observable_gauge(
            "process.uptime", callbacks=[_uptime], unit="s", description="Process uptime."
        )

    def stop(self) -> None:
        if self._instrumentor.is_instrumented_by_opentelemetry:
            self._instrumentor.uninstrument()


def _uptime(options: CallbackOptions) -> Iterable[Observation]:
    return [Observation(time.time() - psutil.Process().create_time())]
