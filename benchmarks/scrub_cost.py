"""What scrubbing secrets out of log records costs per log line, in-process.

    taskset -c 0 python benchmarks/scrub_cost.py [--lines 20000] [--rounds 7]

For each kind of line, a fresh record a line (as logging makes it), times:

- `view`: what the outputs share: message, fields and exception, scrubbed
  (aiva.telemetry.scrub), against the same view unscrubbed (what the outputs did
  before: the message formatted, the fields gathered, the traceback formatted);
- `line`: the whole console JSON line plus the OTLP record handed to the batch
  queue (JsonFormatter.format + OtlpLogHandler.emit), scrubbed and unscrubbed.

Kinds: the access line (`aiva.access`, with a request id), an application line
with a bound field and an extra, the same with a URL password and a `password=`
pair in the message, and an error line whose exception text and traceback hold a
URL password. Rounds alternate scrubbed and unscrubbed; each figure is the median
over rounds of CPU µs per line of this thread (thread_time: other processes on the
machine and the export thread stay out of it). No network: the OTLP exporter drops
what it is given.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    LogRecordExporter,
    LogRecordExportResult,
)

from aiva.api import log_context
from aiva.context import log_fields_var, request_id_var
from aiva.telemetry.logs import JsonFormatter, OtlpLogHandler, OtlpLogs
from aiva.telemetry.scrub import _NOT_EXTRAS, RecordScrubber, RecordView


class Unscrubbed(RecordScrubber):
    """The same view with nothing masked: the outputs' work before scrubbing."""

    def _scrubbed(self, record: logging.LogRecord) -> RecordView:
        fields: dict[str, Any] = {"request_id": request_id_var.get()}
        fields.update(log_fields_var.get() or {})
        fields.update(
            (name, value) for name, value in record.__dict__.items() if name not in _NOT_EXTRAS
        )
        stack = message = None
        if record.exc_info:
            stack = "".join(traceback.format_exception(*record.exc_info))
            message = str(record.exc_info[1])
        return RecordView(record.getMessage(), fields, stack, message)


class _Dropping(LogRecordExporter):
    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        return LogRecordExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    def shutdown(self) -> None:
        pass


def _error() -> BaseException:
    try:
        raise ConnectionError("cannot reach postgresql://app:s3cret@db:5432/orders")
    except ConnectionError as error:
        return error


def _line_makers() -> dict[str, Callable[[], logging.LogRecord]]:
    access = logging.getLogger("aiva.access")
    app = logging.getLogger("orders")
    error = _error()

    def access_line() -> logging.LogRecord:
        record = access.makeRecord(
            "aiva.access", logging.INFO, __file__, 0, "%s %s %d", ("GET", "/items/{id}", 200), None
        )
        record.__dict__.update(
            http_method="GET", http_route="/items/{id}", status_code=200, duration_ms=1.234
        )
        return record

    def app_line() -> logging.LogRecord:
        record = app.makeRecord(
            "orders", logging.INFO, __file__, 0, "processed %d items for %s", (3, "u-42"), None
        )
        record.order_id = "o-1001"
        return record

    def secret_line() -> logging.LogRecord:
        return app.makeRecord(
            "orders",
            logging.INFO,
            __file__,
            0,
            "connecting to %s with password=%s",
            ("postgresql://app:s3cret@db:5432/orders", "hunter2"),
            None,
        )

    def error_line() -> logging.LogRecord:
        return app.makeRecord(
            "orders",
            logging.ERROR,
            __file__,
            0,
            "query failed",
            None,
            (type(error), error, error.__traceback__),
        )

    return {
        "access line": access_line,
        "app line": app_line,
        "line with a secret": secret_line,
        "error line": error_line,
    }


def _per_line_us(action: Callable[[], object], lines: int) -> float:
    started = time.thread_time()
    for _ in range(lines):
        action()
    return (time.thread_time() - started) / lines * 1e6


Outputs = tuple[JsonFormatter, OtlpLogHandler]


def _medians(rounds: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(v for v, _ in rounds), statistics.median(line for _, line in rounds)


def _round(
    make: Callable[[], logging.LogRecord],
    scrubber: RecordScrubber,
    outputs: Outputs,
    lines: int,
) -> tuple[float, float]:
    """µs per line for the view alone, then for the JSON line plus the OTLP record."""
    formatter, handler = outputs

    def view() -> None:
        scrubber.view(make())

    def line() -> None:
        record = make()
        formatter.format(record)
        handler.emit(record)

    return _per_line_us(view, lines), _per_line_us(line, lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    provider = LoggerProvider(shutdown_on_exit=False)
    processor = BatchLogRecordProcessor(
        _Dropping(), max_queue_size=args.lines * 2, schedule_delay_millis=50
    )
    provider.add_log_record_processor(processor)
    logs = OtlpLogs(provider, processor)
    scrubbers = {"scrubbed": RecordScrubber(), "unscrubbed": Unscrubbed()}
    outputs = {
        name: (JsonFormatter(scrubber=s), OtlpLogHandler(logs, scrubber=s))
        for name, s in scrubbers.items()
    }
    token = request_id_var.set("4bf92f3577b34da6a3ce929d0e0e4736")
    print(f"CPU µs per log line, median of {args.rounds} rounds of {args.lines} lines")
    print(f"{'':20} {'view':>7} {'unscrubbed':>11} {'cost':>6}   {'line':>7} {'unscrubbed':>11}")
    with log_context(component="orders"):
        for kind, make in _line_makers().items():
            figures: dict[str, list[tuple[float, float]]] = {name: [] for name in scrubbers}
            for _ in range(args.rounds):
                for name, scrubber in scrubbers.items():
                    figures[name].append(_round(make, scrubber, outputs[name], args.lines))
                    provider.force_flush()
            view, line = _medians(figures["scrubbed"])
            bare_view, bare_line = _medians(figures["unscrubbed"])
            print(
                f"{kind:20} {view:7.2f} {bare_view:11.2f} {view - bare_view:6.2f}"
                f"   {line:7.2f} {bare_line:11.2f}"
            )
    # Making the record is in every figure above (the same for both): for scale.
    made = statistics.median(
        _per_line_us(_line_makers()["access line"], args.lines) for _ in range(args.rounds)
    )
    print(f"(making an access-line record alone: {made:.2f})")
    request_id_var.reset(token)
    provider.shutdown()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
