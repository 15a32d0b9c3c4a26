"""In-process cost of a handler's log record against the access line's (issue #14).

    taskset -c 0 python benchmarks/log_records_inprocess.py [--records 20000] [--rounds 7]
        [--fast-path auto|off]

aiva's real log outputs are installed by `claim_logging` (the console's JSON lines through
the queue to /dev/null, and the OTLP handler into a real BatchLogRecordProcessor whose
exporter encodes each batch as aiva's OTLP exporter does, then discards it). Inside a sampled
span, with a request id, the start-up heap frozen as `aiva serve` freezes it, rounds
interleave:

- `handler`: `logging.getLogger("app").info("processed %d items", n, extra={"items": n})`;
- `access`: the access line, `AccessLog.write` (makeRecord + handle, no stack walk).

Two figures each, CPU µs a record: the logging thread's (what the event loop pays,
thread_time) and the whole process's (process_time, the console's and the batch
processor's threads included: both queues drained before the clock stops).

Then the handler record's cost on the logging thread broken into its parts, each timed
alone over fresh records: the caller lookup (`Logger.findCaller`, the stack walk), the
record's making (`Logger.makeRecord`), the console's queueing, the scrubbed view, and the
OTLP handler's conversion and queueing with the view already made. Medians over rounds.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    LogRecordExporter,
    LogRecordExportResult,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from aiva.context import request_id_var
from aiva.fast import FAST_PATH_MODES, fast_layer
from aiva.fast.batch import batch_queue
from aiva.fast.otlp_encoding import encode_logs
from aiva.heap import freeze_long_lived
from aiva.telemetry.log_queue import QueuedOutput
from aiva.telemetry.log_setup import claim_logging
from aiva.telemetry.logs import OtlpLogHandler, OtlpLogs, log_record_limits
from aiva.web.middleware import AccessLog

_CHUNK = 200
SETTINGS_ENV = {"AIVA_HEALTH__CHECKS__CPU__ENABLED": "false", "AIVA_TELEMETRY__LOGS__LEVEL": "INFO"}


class EncodingDiscarder(LogRecordExporter):
    """Encodes each batch as aiva's OTLP exporter does, then drops it: no network."""

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        encode_logs(batch)
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing to release."""

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def install(fast_path: str) -> tuple[Callable[[], None], OtlpLogs]:
    """aiva's outputs on the root logger (as an app's lifespan claims them), the OTLP
    records queued as `telemetry.fast_path` has them."""
    from aiva.settings import load_settings

    settings = load_settings(dict(SETTINGS_ENV), config_dir="/nonexistent").settings
    limits = log_record_limits(settings.telemetry.limits)
    provider = LoggerProvider(
        resource=Resource({"service.name": "bench"}),
        shutdown_on_exit=False,
        log_record_limits=limits,
    )
    batch = settings.telemetry.logs.batch
    processor = BatchLogRecordProcessor(
        EncodingDiscarder(),
        max_queue_size=batch.max_queue_size,
        schedule_delay_millis=batch.schedule_delay_s * 1000,
        max_export_batch_size=min(batch.max_export_batch_size, batch.max_queue_size),
    )
    provider.add_log_record_processor(processor)
    enqueue = batch_queue(processor) if "batch_queue" in fast_layer(fast_path) else None
    logs = OtlpLogs(provider, processor, limits, enqueue)
    return claim_logging(settings.telemetry.logs, logs), logs


def _handler_record(logger: logging.Logger, n: int) -> None:
    logger.info("processed %d items", n, extra={"items": n})


def drain(logs: OtlpLogs) -> None:
    """Both queues empty: the console written, the OTLP records exported."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, QueuedOutput):
            handler.flush()
    logs.provider.force_flush(10_000)


def timed(write: Callable[[int], None], records: int, logs: OtlpLogs) -> tuple[float, float]:
    """(logging thread µs, process µs) a record."""
    thread, process = time.thread_time(), time.process_time()
    for n in range(records):
        write(n)
    thread = time.thread_time() - thread
    drain(logs)
    process = time.process_time() - process
    return thread / records * 1e6, process / records * 1e6


def parts(logger: logging.Logger, records: int) -> dict[str, float]:
    """The handler record's parts on the logging thread, µs each."""
    root = logging.getLogger()
    console = next(h for h in root.handlers if isinstance(h, QueuedOutput))
    otlp = next(h for h in root.handlers if isinstance(h, OtlpLogHandler))
    scrubber = otlp._scrubber  # benchmark-only: the view alone

    def make() -> logging.LogRecord:
        return logger.makeRecord(
            logger.name,
            logging.INFO,
            "x.py",
            1,
            "processed %d items",
            (7,),
            None,
            "f",
            {"items": 7},
        )

    def clock(step: Callable[[logging.LogRecord], object], views: bool = False) -> float:
        """µs a record, over fresh records made (untimed) a few hundred at a time: a
        long list of live records would make the collector's passes part of the figure."""
        spent = 0.0
        for _ in range(records // _CHUNK):
            chunk = [make() for _ in range(_CHUNK)]
            if views:
                for record in chunk:
                    scrubber.view(record)
            start = time.thread_time()
            for record in chunk:
                step(record)
            spent += time.thread_time() - start
        return spent * 1e6 / (records // _CHUNK * _CHUNK)

    return {
        "findCaller (stack walk)": clock(lambda _: logger.findCaller()),
        "makeRecord": clock(lambda _: make()),
        "console queue put": clock(console.handle),
        "scrub view": clock(scrubber.view),
        "OTLP handle (view made)": clock(otlp.handle, views=True),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--fast-path", choices=FAST_PATH_MODES, default="auto")
    opts = parser.parse_args()
    os.environ.update(SETTINGS_ENV)
    out: Any = sys.__stdout__
    sys.stderr = Path(os.devnull).open("w")  # the console output  # noqa: SIM115
    release, logs = install(opts.fast_path)
    freeze_long_lived()  # as `aiva serve` does before it serves
    logger = logging.getLogger("app")
    access = AccessLog()
    writers: dict[str, Callable[[int], None]] = {
        "handler": lambda n: _handler_record(logger, n),
        "access": lambda n: access.write("GET", "/api/demo/work", 200, 0.0012, False),
    }
    tracer = TracerProvider().get_tracer("bench")
    token = request_id_var.set("4bf92f3577b34da6a3ce929d0e0e4736")
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in writers}
    broken: list[dict[str, float]] = []
    try:
        with tracer.start_as_current_span("GET /api/demo/work"):
            for write in writers.values():  # warm-up
                timed(write, opts.records // 10, logs)
            for _ in range(opts.rounds):
                for name, write in writers.items():
                    figures[name].append(timed(write, opts.records, logs))
                broken.append(parts(logger, opts.records))
                drain(logs)
    finally:
        request_id_var.reset(token)
        release()
        logs.provider.shutdown()
    print(
        f"CPU µs a record, median of {opts.rounds} rounds, fast path {opts.fast_path}, "
        f"OTLP records {'queued directly' if logs.enqueue else 'through the SDK Logger'} "
        f"(load {os.getloadavg()[0]:.2f})",
        file=out,
    )
    print(f"{'':8} {'logging thread':>15} {'process':>8}", file=out)
    for name, values in figures.items():
        thread = statistics.median(t for t, _ in values)
        process = statistics.median(p for _, p in values)
        rounds = ", ".join(f"{t:.1f}" for t, _ in values)
        print(f"{name:8} {thread:15.2f} {process:8.2f}   (thread, rounds: {rounds})", file=out)
    print("the handler record's parts on the logging thread:", file=out)
    for part in broken[0]:
        print(f"  {part:26} {statistics.median(b[part] for b in broken):6.2f}", file=out)


if __name__ == "__main__":
    main()
