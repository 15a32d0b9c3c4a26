"""What the queued console output (aiva.telemetry.log_queue) costs, in-process.

    taskset -c 0 python benchmarks/log_queue_inprocess.py [--lines 20000] [--rounds 7]

1. Per log line (the access line, with a request id, in a span): the console's JSON
   line written to /dev/null on the logging thread, as before (`direct`), against the
   record queued for the output's own thread (`queued`). Two figures each: CPU µs of
   the logging thread (what the event loop pays, thread_time) and of the whole process
   (both threads, process_time, the queue drained before the clock stops).
2. Per request (benchmarks/instrument_inprocess.py's harness: Starlette instrumented by
   aiva, its access line on the console): the process's CPU µs, console direct against
   queued.

Rounds alternate; each figure is the median over rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from instrument_inprocess import SETTINGS_ENV, per_request_us, starlette_app
from opentelemetry.sdk.trace import TracerProvider

from aiva.context import request_id_var
from aiva.telemetry.log_queue import QueuedOutput
from aiva.telemetry.logs import JsonFormatter


def _direct() -> logging.Handler:
    handler = logging.StreamHandler(Path(os.devnull).open("w"))  # noqa: SIM115
    handler.setFormatter(JsonFormatter())
    return handler


def _queued() -> logging.Handler:
    handler = QueuedOutput("console", logging.StreamHandler(Path(os.devnull).open("w")))  # noqa: SIM115
    handler.setFormatter(JsonFormatter())
    return handler


MAKERS: dict[str, Callable[[], logging.Handler]] = {"direct": _direct, "queued": _queued}


@contextmanager
def console(make: Callable[[], logging.Handler]) -> Iterator[logging.Handler]:
    """The root logger with only this console handler (INFO), restored afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    handler = make()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        handler.close()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def per_line(make: Callable[[], logging.Handler], lines: int) -> tuple[float, float]:
    """(logging thread µs, process µs) per access line."""
    access = logging.getLogger("aiva.access")
    tracer = TracerProvider().get_tracer("bench")
    token = request_id_var.set("4bf92f3577b34da6a3ce929d0e0e4736")
    extra = {"http_method": "GET", "http_route": "/items/{id}", "status_code": 200}
    try:
        with console(make) as handler, tracer.start_as_current_span("GET /items/{id}"):
            thread, process = time.thread_time(), time.process_time()
            for _ in range(lines):
                access.info("GET /items/{id} 200", extra={**extra, "duration_ms": 1.2})
            thread = time.thread_time() - thread
            handler.flush()  # the output's thread has written every line
            process = time.process_time() - process
    finally:
        request_id_var.reset(token)
    return thread / lines * 1e6, process / lines * 1e6


def per_request(make: Callable[[], logging.Handler], requests: int) -> float:
    import aiva
    from aiva.settings import load_settings

    settings = load_settings(dict(SETTINGS_ENV), config_dir="/nonexistent").settings
    # The root logger configured already: the app's lifespan leaves it as it is.
    with console(make):
        return asyncio.run(per_request_us(aiva.instrument(starlette_app(), settings), requests))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=20000)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    opts = parser.parse_args()
    os.environ.update(SETTINGS_ENV)
    lines: dict[str, list[tuple[float, float]]] = {name: [] for name in MAKERS}
    requests: dict[str, list[float]] = {name: [] for name in MAKERS}
    for _ in range(opts.rounds):
        for name, make in MAKERS.items():
            lines[name].append(per_line(make, opts.lines))
            requests[name].append(per_request(make, opts.requests))
    out: Any = sys.__stdout__
    print(f"CPU µs, median of {opts.rounds} rounds", file=out)
    print(f"{'':8} {'line: logging thread':>21} {'process':>8} {'request':>8}", file=out)
    for name in MAKERS:
        thread = statistics.median(t for t, _ in lines[name])
        process = statistics.median(p for _, p in lines[name])
        request = statistics.median(requests[name])
        print(f"{name:8} {thread:21.2f} {process:8.2f} {request:8.1f}", file=out)
    differences = [q - d for q, d in zip(requests["queued"], requests["direct"], strict=True)]
    print(
        f"queued - direct, per request: {statistics.median(differences):+.1f} µs (per round "
        f"{', '.join(f'{d:+.1f}' for d in differences)})",
        file=out,
    )


if __name__ == "__main__":
    main()
