"""In-process cost of aiva's httpx client span against its server span (issue #10: a
client span costs no more than aiva's server span).

    taskset -c 0 python benchmarks/client_span_inprocess.py [--rounds 9] [--spans 20000]

The span objects' own work, timed alone: a diagnostic beside the check itself, which
`benchmarks/overhead` judges with `instrument_inprocess.py --spans-only` (what each
span adds to a request, the server's header reading, context and export included).
Here, on aiva's provider (aiva's sampler, lean spans, a processor that drops what it is
given, aiva's W3C propagator as the global one), inside a sampled parent span:

- `server`: `HttpTelemetry.start_span` (attributes from the scope and headers, the span
  made current) and `end_span` (route, status, name) for `GET /api/demo/items/42`;
- `client`: aiva's httpx instrumentation's `start` (attributes from the URL, the span,
  `traceparent` injected into the request's headers) and `end` (status, protocol
  version, the duration point) for `GET http://127.0.0.1:9/up`, requests built outside
  the clock.

Rounds are interleaved; CPU time; medians.
"""

from __future__ import annotations

import argparse
import statistics
import time

import httpx
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.metrics import NoOpMeterProvider
from spans_inprocess import aiva_provider  # this folder: the same provider

from aiva.telemetry.http import HttpTelemetry
from aiva.telemetry.httpx_client import _ClientCalls
from aiva.telemetry.propagation import build_propagator

SCOPE = {
    "type": "http",
    "method": "GET",
    "path": "/api/demo/items/42",
    "query_string": b"",
    "scheme": "http",
    "http_version": "1.1",
    "client": ("127.0.0.1", 50000),
    "server": ("127.0.0.1", 8000),
}
HEADERS = {b"host": b"127.0.0.1:8000", b"user-agent": b"wrk"}


def server_spans(http: HttpTelemetry, spans: int) -> float:
    start = time.process_time()
    for _ in range(spans):
        span, token = http.start_span("GET", SCOPE, None, HEADERS, "http")
        http.end_span(span, token, "GET", "/api/demo/items/{item_id}", 200, None)
    return (time.process_time() - start) * 1e6 / spans


def client_spans(calls: _ClientCalls, spans: int) -> float:
    requests = [httpx.Request("GET", "http://127.0.0.1:9/up") for _ in range(spans)]
    response = httpx.Response(200, extensions={"http_version": b"HTTP/1.1"})
    start = time.process_time()
    for request in requests:
        calls.start(request).end(response)
    return (time.process_time() - start) * 1e6 / spans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--spans", type=int, default=20_000)
    opts = parser.parse_args()
    provider = aiva_provider()
    # aiva's default formats, set as aiva sets them (telemetry.setup.install_globals).
    propagate.set_global_textmap(build_propagator(("tracecontext", "baggage")))
    http = HttpTelemetry(provider, NoOpMeterProvider(), excluded_paths=())
    calls = _ClientCalls(provider, NoOpMeterProvider(), None)
    parent = provider.get_tracer("bench").start_span("parent")
    token = otel_context.attach(trace.set_span_in_context(parent))
    server_spans(http, opts.spans)  # warm-up
    client_spans(calls, opts.spans)
    rounds: dict[str, list[float]] = {"server": [], "client": []}
    for _ in range(opts.rounds):
        rounds["server"].append(server_spans(http, opts.spans))
        rounds["client"].append(client_spans(calls, opts.spans))
    otel_context.detach(token)
    for name, values in rounds.items():
        spread = ", ".join(f"{v:.1f}" for v in values)
        print(f"{name:6} {statistics.median(values):6.2f} CPU us a span (rounds {spread})")
    ratio = statistics.median(rounds["client"]) / statistics.median(rounds["server"])
    print(f"client/server {ratio:.2f}x (issue #10's limit: 1.00x)")


if __name__ == "__main__":
    main()
