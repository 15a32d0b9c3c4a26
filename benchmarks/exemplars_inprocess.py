"""In-process cost of exemplars on aiva's request histogram (issue #13: at most 3 µs).

What a request adds with exemplars on: `ProducedHistogram.record` given the server span,
as the middleware calls it, under `trace_based` with a sampled span (every request
sampled: the dearest case) and under `always_on`, against `always_off` (no exemplars).
Each round times `--records` calls per filter on one core (CPU time); rounds are
interleaved; the figures are the best and the median over rounds of the difference
to always_off. Run: `taskset -c 0 python benchmarks/exemplars_inprocess.py [--rounds 7]`.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

from opentelemetry.sdk.metrics import (
    AlwaysOffExemplarFilter,
    AlwaysOnExemplarFilter,
    ExemplarFilter,
    TraceBasedExemplarFilter,
)
from opentelemetry.sdk.metrics.export import AggregationTemporality
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span

from aiva.telemetry.histogram import ProducedHistogram
from aiva.telemetry.metrics import DURATION_BUCKETS_S, request_duration_histogram

ATTRIBUTES = {"http.request.method": "GET", "http.response.status_code": 200, "url.scheme": "http"}
KEY = ("GET", "/items/{id}", 200, "http", "1.1", None)


def histogram(exemplar_filter: ExemplarFilter) -> ProducedHistogram:
    produced = ProducedHistogram(
        "http.server.request.duration",
        unit="s",
        description="",
        boundaries=DURATION_BUCKETS_S,
        scope=request_duration_histogram().scope,
        exemplar_filter=exemplar_filter,
    )
    # The service's two readers: Prometheus (cumulative) and OTLP.
    produced.attach("prometheus", AggregationTemporality.CUMULATIVE)
    produced.attach("otlp", AggregationTemporality.CUMULATIVE)
    return produced


def per_record_us(produced: ProducedHistogram, span: Span, records: int) -> float:
    values = [0.001 * (i % 97) for i in range(records)]
    record = produced.record
    gc.disable()
    started = time.process_time()
    for value in values:
        record(KEY, ATTRIBUTES, value, span)
    elapsed = time.process_time() - started
    gc.enable()
    produced.collect("prometheus")  # as a scrape would, between rounds
    produced.collect("otlp")
    return elapsed / records * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--records", type=int, default=200_000)
    args = parser.parse_args()
    span = TracerProvider().get_tracer("bench").start_span("GET /items/{id}")  # sampled
    filters: dict[str, ExemplarFilter] = {
        "always_off": AlwaysOffExemplarFilter(),
        "trace_based": TraceBasedExemplarFilter(),
        "always_on": AlwaysOnExemplarFilter(),
    }
    histograms = {name: histogram(f) for name, f in filters.items()}
    timings: dict[str, list[float]] = {name: [] for name in filters}
    for _ in range(args.rounds):
        for name, produced in histograms.items():
            timings[name].append(per_record_us(produced, span, args.records))
    base = timings["always_off"]
    print(f"record(), always_off: median {statistics.median(base):.3f} µs")
    for name in ("trace_based", "always_on"):
        added = [with_ - without for with_, without in zip(timings[name], base, strict=True)]
        print(
            f"added by exemplars, {name} (sampled span): "
            f"best {min(added):.3f} µs, median {statistics.median(added):.3f} µs a request"
        )


if __name__ == "__main__":
    main()
