"""The health metrics: status gauges read from the runner's snapshot, and check durations."""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry.metrics import CallbackOptions, Histogram, Meter, Observation

from aiva.health.model import Status
from aiva.health.runner import HealthRunner
from aiva.telemetry.metrics import DURATION_BUCKETS_S


def check_duration_histogram(meter: Meter) -> Histogram:
    return meter.create_histogram(
        "aiva.health.check.duration",
        unit="s",
        description="Duration of each health check.",
        explicit_bucket_boundaries_advisory=DURATION_BUCKETS_S,
    )


def register_gauges(meter: Meter, runner: HealthRunner) -> None:
    """aiva.health.status{check,status} and aiva.health.overall{status}: 1 for the current
    status, 0 for the others. The callbacks run on the SDK's thread and only read."""

    def each_check(options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(
                1 if result.status is status else 0, {"check": result.name, "status": status.value}
            )
            for result in runner.results()
            for status in Status
        ]

    def overall(options: CallbackOptions) -> Iterable[Observation]:
        current = runner.status()
        return [
            Observation(1 if current is status else 0, {"status": status.value})
            for status in Status
        ]

    meter.create_observable_gauge(
        "aiva.health.status", callbacks=[each_check], description="Health status of each check."
    )
    meter.create_observable_gauge(
        "aiva.health.overall", callbacks=[overall], description="Overall health status."
    )
