"""In-process cost of a handler's own `Counter.add` and `Histogram.record` (issue #14):
the SDK's instruments against aiva's lean ones (aiva.telemetry.instruments).

Both providers as aiva builds them: a Prometheus and a periodic OTLP reader (exporting
to nowhere, interval an hour: only the measurements are timed), the trace_based
exemplar filter, every measurement inside a sampled span with three attributes (the
dict built afresh each call, as a handler does). Rounds are interleaved; CPU time. Run:
`taskset -c 0 python benchmarks/instruments_inprocess.py [--rounds 9]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

from opentelemetry import trace
from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

from aiva.settings import load_settings
from aiva.telemetry.exporters import ExportStats
from aiva.telemetry.instruments import meter_of
from aiva.telemetry.metrics import build_metrics
from aiva.telemetry.resource import build_resource

Measure = Callable[[int], None]


def _provider(fast: bool) -> MeterProvider:
    environ = {
        "AIVA_TELEMETRY__OTLP__ENDPOINT": "http://127.0.0.1:9",
        "AIVA_TELEMETRY__METRICS__EXPORT_INTERVAL_S": "3600",
    }
    settings = load_settings(environ, config_dir="/nonexistent").settings
    return build_metrics(settings, build_resource(settings), ExportStats(), fast=fast).provider


def _measures(meter: Meter) -> dict[str, Measure]:
    counter = meter.create_counter("bench.items", unit="{item}")
    histogram = meter.create_histogram(
        "bench.batch", unit="s", explicit_bucket_boundaries_advisory=[0.01, 0.1, 1.0]
    )

    def add(times: int) -> None:
        for index in range(times):
            counter.add(1, {"route": "/work", "kind": "batch", "ok": index & 1 == 0})

    def record(times: int) -> None:
        for index in range(times):
            histogram.record(0.05, {"route": "/work", "kind": "batch", "ok": index & 1 == 0})

    return {"add": add, "record": record}


def timed(measure: Measure, times: int) -> float:
    """CPU µs a measurement."""
    start = time.process_time()
    measure(times)
    return (time.process_time() - start) * 1e6 / times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--measurements", type=int, default=20_000)
    opts = parser.parse_args()
    providers = {"sdk": _provider(False), "lean": _provider(True)}
    measures = {
        (side, call): measure
        for side, provider in providers.items()
        for call, measure in _measures(meter_of(provider, "bench", "1")).items()
    }
    tracer = TracerProvider().get_tracer("bench")
    rounds: dict[tuple[str, str], list[float]] = {key: [] for key in measures}
    with tracer.start_as_current_span("request"):  # sampled: exemplars are offered
        for measure in measures.values():
            timed(measure, opts.measurements // 10)  # warm-up
        for _ in range(opts.rounds):
            for key, measure in measures.items():
                rounds[key].append(timed(measure, opts.measurements))
        assert trace.get_current_span().get_span_context().trace_flags.sampled
    for provider in providers.values():
        provider.shutdown(timeout_millis=2000)
    medians = {key: statistics.median(values) for key, values in rounds.items()}
    for (side, call), values in rounds.items():
        spread = ", ".join(f"{v:.2f}" for v in values)
        print(f"{side:4} {call:6} {medians[side, call]:6.2f} CPU us (rounds {spread})")
    for call in ("add", "record"):
        ratio = medians["sdk", call] / medians["lean", call]
        print(f"{call}: lean is {ratio:.1f}x cheaper than the SDK's")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
