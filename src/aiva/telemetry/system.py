"""Process and system metrics on the current semantic conventions, read with psutil.

Why aiva's own callbacks and not `opentelemetry-instrumentation-system-metrics`
(0.66b1): that package still emits the old attribute keys (`type`, `state`, `cpu`
numbered from 1, `device`, `direction`), the deprecated
`process.open_file_descriptor.count`, and `system.memory.usage` as a gauge where the
conventions say UpDownCounter. SDK Views can rename an instrument but not its
attributes, and a wrapper would have to rewrite the instrumentor's private label
dictionaries. METRICS below is a table of psutil reads instead (aiva.telemetry.
system_reads). Measured on 2 CPUs, one InMemoryMetricReader collection of its ~70
points takes about 1.2 ms (0.4 ms of it psutil, the rest the SDK's aggregation),
against 1.3 ms for the contrib instrumentor's equivalent set; readers pay it on their
own threads, requests never do.

`tests/conformance/test_system_metrics.py` holds the names, units, instrument kinds
and attributes against the installed `opentelemetry-semantic-conventions`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Literal

import psutil
from opentelemetry.instrumentation.system_metrics import SystemMetricsInstrumentor
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
from opentelemetry.sdk.metrics.view import DropAggregation, View

from aiva import __version__
from aiva.telemetry import system_reads as reads

logger = logging.getLogger(__name__)

METER_NAME = "aiva.system"

# The contrib instrumentor's meter. `opentelemetry-instrument` switches that
# instrumentor on with the global meter provider, which is aiva's once aiva starts:
# its metrics (old attribute keys, deprecated names) would then sit beside aiva's
# under the same Prometheus names. aiva's providers drop that scope
# (system_views).
CONTRIB_METER_NAME = "opentelemetry.instrumentation.system_metrics"

# Prometheus names for UpDownCounters named `*.count` by the conventions: in
# Prometheus `_count` belongs to histograms and summaries, and `promtool check
# metrics` refuses it elsewhere. The plural is Prometheus's own way (`go_threads`).
# OTLP keeps the convention names.
PROMETHEUS_NAMES: Mapping[str, str] = {
    "process.thread.count": "process.threads",
    "process.unix.file_descriptor.count": "process.unix.file_descriptors",
}

Kind = Literal["counter", "updowncounter", "gauge"]


@dataclass(frozen=True)
class SystemMetric:
    """One instrument: its convention name, kind and unit, and the read behind it."""

    name: str
    kind: Kind
    unit: str
    description: str
    read: Callable[[reads.Readings], Iterable[Observation]]


def system_views() -> list[View]:
    """Views every aiva meter provider needs: the contrib instrumentor's scope dropped."""
    return [View(meter_name=CONTRIB_METER_NAME, aggregation=DropAggregation())]


class SystemMetrics:
    """Registers the process and system instruments on one meter provider."""

    def __init__(self, meter_provider: MeterProvider) -> None:
        self._meter_provider = meter_provider

    def start(self) -> None:
        """Create the instruments; their callbacks read psutil at each collection."""
        if _contrib_instrumented():
            logger.info(
                "the contrib system-metrics instrumentation is on in this process "
                "(opentelemetry-instrument): its metrics, on older conventions, are left out "
                "of aiva's pipeline, which has its own; "
                "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=system_metrics saves their collection"
            )
        meter = self._meter_provider.get_meter(METER_NAME, __version__)
        create = {
            "counter": meter.create_observable_counter,
            "updowncounter": meter.create_observable_up_down_counter,
            "gauge": meter.create_observable_gauge,
        }
        readings = reads.Readings()
        for metric in available_metrics():
            create[metric.kind](
                metric.name,
                callbacks=[partial(_observe, metric.read, readings)],
                unit=metric.unit,
                description=metric.description,
            )


def _observe(
    read: Callable[[reads.Readings], Iterable[Observation]],
    readings: reads.Readings,
    options: CallbackOptions,
) -> Iterable[Observation]:
    # Runs on the SDK's collection thread (a scrape's worker thread or the OTLP
    # reader's): plain psutil reads, nothing scheduled.
    return read(readings)


def _contrib_instrumented() -> bool:
    """Whether the contrib instrumentor is on in this process. BaseInstrumentor.__new__
    hands out its one instance, without the __init__ that calling the class would run
    on it again (replacing the owner's config)."""
    instrumentor = SystemMetricsInstrumentor.__new__(SystemMetricsInstrumentor)
    return bool(instrumentor.is_instrumented_by_opentelemetry)


METRICS: tuple[SystemMetric, ...] = (
    SystemMetric(
        "process.cpu.time",
        "counter",
        "s",
        "Total CPU seconds broken down by different CPU modes.",
        reads.process_cpu_time,
    ),
    SystemMetric(
        "process.cpu.utilization",
        "gauge",
        "1",
        "Difference in process.cpu.time since the last measurement, divided by the elapsed "
        "time and number of CPUs available to the process.",
        reads.process_cpu_utilization,
    ),
    SystemMetric(
        "process.memory.usage",
        "updowncounter",
        "By",
        "The amount of physical memory in use.",
        reads.process_memory_usage,
    ),
    SystemMetric(
        "process.memory.virtual",
        "updowncounter",
        "By",
        "The amount of committed virtual memory.",
        reads.process_memory_virtual,
    ),
    SystemMetric(
        "process.thread.count",
        "updowncounter",
        "{thread}",
        "Process threads count.",
        reads.process_threads,
    ),
    SystemMetric(
        "process.unix.file_descriptor.count",
        "updowncounter",
        "{file_descriptor}",
        "Number of UNIX file descriptors in use by the process.",
        reads.process_file_descriptors,
    ),
    SystemMetric(
        "process.context_switches",
        "counter",
        "{context_switch}",
        "Number of times the process has been context switched.",
        reads.process_context_switches,
    ),
    SystemMetric(
        "process.uptime",
        "gauge",
        "s",
        "The time the process has been running.",
        reads.process_uptime,
    ),
    SystemMetric(
        "cpython.gc.collections",
        "counter",
        "{collection}",
        "The number of times a generation was collected since interpreter start.",
        reads.gc_collections,
    ),
    SystemMetric(
        "system.cpu.time",
        "counter",
        "s",
        "Seconds each logical CPU spent on each mode.",
        reads.system_cpu_time,
    ),
    SystemMetric(
        "system.cpu.utilization",
        "gauge",
        "1",
        "For each logical CPU, the utilization is calculated as the change in cumulative CPU "
        "time (cpu.time) over a measurement interval, divided by the elapsed time.",
        reads.system_cpu_utilization,
    ),
    SystemMetric(
        "system.memory.usage",
        "updowncounter",
        "By",
        "Reports memory in use by state.",
        reads.system_memory_usage,
    ),
    SystemMetric(
        "system.memory.limit",
        "updowncounter",
        "By",
        "Total virtual memory available in the system.",
        reads.system_memory_limit,
    ),
    SystemMetric(
        "system.memory.utilization",
        "gauge",
        "1",
        "Percentage of memory bytes in use.",
        reads.system_memory_utilization,
    ),
    SystemMetric(
        "system.network.io",
        "counter",
        "By",
        "The number of bytes transmitted and received.",
        reads.system_network_io,
    ),
    SystemMetric(
        "system.disk.io",
        "counter",
        "By",
        "Disk bytes transferred.",
        reads.system_disk_io,
    ),
)


def available_metrics() -> list[SystemMetric]:
    """METRICS less those this platform cannot read (descriptors: POSIX; gc: CPython)."""
    missing = set()
    if not hasattr(psutil.Process, "num_fds"):
        missing.add("process.unix.file_descriptor.count")
    if sys.implementation.name != "cpython":
        missing.add("cpython.gc.collections")
    return [metric for metric in METRICS if metric.name not in missing]
