"""In-process cost of a span (issue #14): aiva's lean span (aiva.telemetry.spans) against
the SDK's, started and ended on the same provider, with the same processor.

    taskset -c 0 python benchmarks/spans_inprocess.py [--rounds 9] [--spans 20000]

The provider is aiva's (`LeanTracerProvider`, parent-based ratio 1.0 sampler) with one
processor that drops what it is given, so the figure is the span's own cost: the tracer's
start (sampler, ids, attributes) and end (the ReadableSpan handed to `on_end`). Each span
gets three attributes at start and two later, as aiva's server span does, under a current
parent span. Rounds are interleaved; CPU time; medians.
"""

from __future__ import annotations

import argparse
import statistics
import time

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

from aiva.settings import load_settings
from aiva.telemetry.spans import LeanTracerProvider, tracer_of
from aiva.telemetry.traces import build_sampler, span_limits


class _Dropped(SpanProcessor):
    def on_end(self, span: ReadableSpan) -> None:
        """Dropped: the export is not what is measured."""


def aiva_provider() -> LeanTracerProvider:
    """aiva's provider on its default settings (sampler, span limits), dropping its spans."""
    settings = load_settings({}, config_dir="/nonexistent").settings
    provider = LeanTracerProvider(
        sampler=build_sampler(settings.telemetry.traces),
        span_limits=span_limits(settings.telemetry.limits),
        shutdown_on_exit=False,
    )
    provider.add_span_processor(_Dropped())
    return provider


def timed(tracer: trace.Tracer, spans: int) -> float:
    """CPU µs a span started, given two more attributes, and ended."""
    attributes = {"http.request.method": "GET", "url.path": "/api/demo/work", "url.scheme": "http"}
    start = time.process_time()
    for _ in range(spans):
        span = tracer.start_span("GET", attributes=attributes)
        span.set_attribute("http.route", "/api/demo/work")
        span.set_attribute("http.response.status_code", 200)
        span.end()
    return (time.process_time() - start) * 1e6 / spans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--spans", type=int, default=20_000)
    opts = parser.parse_args()
    provider = aiva_provider()
    tracers = {"sdk": provider.get_tracer("bench"), "lean": tracer_of(provider, "bench")}
    parent = tracers["sdk"].start_span("parent")
    token = otel_context.attach(trace.set_span_in_context(parent))
    for tracer in tracers.values():  # warm-up
        timed(tracer, opts.spans)
    rounds: dict[str, list[float]] = {name: [] for name in tracers}
    for _ in range(opts.rounds):
        for name, tracer in tracers.items():
            rounds[name].append(timed(tracer, opts.spans))
    otel_context.detach(token)
    for name, values in rounds.items():
        spread = ", ".join(f"{v:.1f}" for v in values)
        print(f"{name:5} {statistics.median(values):6.2f} CPU us a span (rounds {spread})")
    saved = statistics.median(a - b for a, b in zip(rounds["sdk"], rounds["lean"], strict=True))
    ratio = statistics.median(rounds["lean"]) / statistics.median(rounds["sdk"])
    print(f"lean/sdk {ratio:.2f}x; saved {saved:.2f} us a span ({4 * saved:.1f} on the work route)")


if __name__ == "__main__":
    main()
