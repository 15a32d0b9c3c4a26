"""In-process cost of one `aiva.operation` (issue #14): the tracer looked up on every entry
(as before: `trace.get_tracer("aiva.operation", version)`) against once per provider.

Each round enters and leaves `--operations` operations (a new object each time, as a
handler does) with the SDK's tracer and meter providers installed, no exporters, and the
operation's log lines below the level: the span, the duration point and the lookup only.
Rounds are interleaved; CPU time. Run:
`taskset -c 0 python benchmarks/operation_inprocess.py [--rounds 9]`.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Callable

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

import aiva
from aiva import api

Lookup = Callable[[], trace.Tracer]


def per_call() -> trace.Tracer:
    """What `aiva.operation` did before: the API's lookup on every entry."""
    return trace.get_tracer(api.OPERATION_SCOPE, aiva.__version__)


def timed(lookup: Lookup, operations: int) -> float:
    """CPU µs an operation with `lookup` as the operation's tracer lookup."""
    api._operation_tracer = lookup  # benchmark-only: the two lookups side by side
    start = time.process_time()
    for _ in range(operations):
        with api.operation("demo.compute"):
            pass
    return (time.process_time() - start) * 1e6 / operations


def main() -> None:
    """Interleaved rounds of both lookups; medians and the saving a work request (3 operations)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--operations", type=int, default=20_000)
    opts = parser.parse_args()
    trace.set_tracer_provider(TracerProvider())
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
    logging.getLogger(api.OPERATION_SCOPE).setLevel(logging.WARNING)
    once: Lookup = api._operation_tracer
    timed(per_call, opts.operations)  # warm-up
    timed(once, opts.operations)
    rounds: dict[str, list[float]] = {"per call": [], "once": []}
    for _ in range(opts.rounds):
        rounds["per call"].append(timed(per_call, opts.operations))
        rounds["once"].append(timed(once, opts.operations))
    api._operation_tracer = once
    for name, values in rounds.items():
        spread = ", ".join(f"{v:.1f}" for v in values)
        print(f"{name:9} {statistics.median(values):6.2f} CPU us an operation (rounds {spread})")
    saved = statistics.median(a - b for a, b in zip(*rounds.values(), strict=True))
    print(f"saved {saved:.2f} us an operation; the work route's 3 a request: {3 * saved:.1f} us")


if __name__ == "__main__":
    main()
