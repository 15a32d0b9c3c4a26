"""Flushing and stopping the SDK providers within a deadline that the SDK cannot overrun.

Measured (SDK 1.45, a black-holed collector, `telemetry.otlp.timeout_s: 10`, under
load): `BatchSpanProcessor.force_flush` ignores its timeout and exports every queued
batch in turn, each waiting for the exporter's whole timeout (2,048 queued spans in
batches of 512: 40 s), then the metrics' flush and shutdown wait 10 s more; SIGTERM to
exit took 45 to 48 s (13 s idle). `TracerProvider.shutdown` takes no timeout at all and
waits up to 30 s for the export thread. So the deadline is kept from outside: each
provider is flushed, then stopped, in a daemon thread of its own, all at once (a hung
span export no longer starves the logs and metrics of their flush), and whatever still
runs at the deadline is left behind: the process is about to exit, and daemon threads
do not hold it. What was left unsent is counted as dropped and logged once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

from aiva.telemetry.exporters import ExportStats

logger = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What a bounded flush or shutdown came to."""

    errors: list[Exception] = field(default_factory=list)
    # The providers still at work when the deadline came ("traces", "logs", "metrics").
    unfinished: list[str] = field(default_factory=list)


def flush_within(providers: Sequence[Any], deadline: float) -> Outcome:
    """Each provider's force_flush, all at once, waited for until `deadline` (monotonic)."""
    return _within(providers, deadline, lambda p: p.force_flush(_millis_left(deadline)))


def stop_within(providers: Sequence[Any], deadline: float) -> Outcome:
    """Each provider flushed then shut down, all at once, waited for until `deadline`."""

    def flush_and_stop(provider: Any) -> None:
        try:
            provider.force_flush(_millis_left(deadline))
        finally:  # stopped even when the flush failed
            _stop(provider, _millis_left(deadline))

    return _within(providers, deadline, flush_and_stop)


def report_abandoned(stats: ExportStats, outcome: Outcome, timeout_s: float) -> None:
    """When providers were left at work: what had not left counted as dropped, and one line."""
    if not outcome.unfinished:
        return
    left = stats.abandon()
    logger.warning(
        "telemetry shutdown stopped waiting after %.1f s, %s still exporting (the collector "
        "did not answer in time): %d spans and %d log records not sent, counted in "
        "aiva.telemetry.dropped",
        timeout_s,
        ", ".join(outcome.unfinished),
        left["spans"],
        left["logs"],
    )


def signal_name(provider: Any) -> str:
    if isinstance(provider, TracerProvider):
        return "traces"
    if isinstance(provider, LoggerProvider):
        return "logs"
    return "metrics"


class _Worker(threading.Thread):
    """One provider's flush or shutdown; keeps the error it raised."""

    def __init__(self, provider: Any, work: Callable[[Any], object]) -> None:
        super().__init__(name=f"aiva-flush-{signal_name(provider)}", daemon=True)
        self.provider = provider
        self._work = work
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            self._work(self.provider)
        except Exception as error:  # noqa: BLE001 - gathered and logged by Telemetry
            self.error = error


def _within(providers: Sequence[Any], deadline: float, work: Callable[[Any], object]) -> Outcome:
    workers = [_Worker(provider, work) for provider in providers]
    for worker in workers:
        worker.start()
    outcome = Outcome()
    for worker in workers:
        worker.join(max(0.0, deadline - time.monotonic()))
        if worker.is_alive():
            outcome.unfinished.append(signal_name(worker.provider))
        elif worker.error is not None:
            outcome.errors.append(worker.error)
    return outcome


def _millis_left(deadline: float) -> int:
    return max(0, int((deadline - time.monotonic()) * 1000))


def _stop(provider: Any, timeout_millis: int) -> None:
    if isinstance(provider, MeterProvider):
        provider.shutdown(timeout_millis=timeout_millis)
    else:
        provider.shutdown()  # the tracer and logger providers take no timeout
