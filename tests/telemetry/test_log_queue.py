"""The queued console and file outputs: the ids of the moment a record was logged, a
bound that drops and counts, one line once drops stop, and a close that cannot hang."""

from __future__ import annotations

import io
import json
import logging
import select
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from logging import StreamHandler

from opentelemetry.sdk.trace import TracerProvider

from aiva.context import request_id_var
from aiva.telemetry.log_queue import DRAIN_S, QueuedOutput, dropped_by_output
from aiva.telemetry.logs import JsonFormatter


class GatedLines(logging.Handler):
    """Keeps each formatted line; while the gate is shut, its writing thread waits (a
    reader that stalls), at most 10 s."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.gate = threading.Event()
        self.waiting = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.waiting.set()
        self.gate.wait(10)
        self.lines.append(self.format(record))


@contextmanager
def stalled_output(capacity: int) -> Iterator[tuple[QueuedOutput, GatedLines]]:
    """A queued output whose reader stalls on the first record ("first")."""
    target = GatedLines()
    output = QueuedOutput("console", target, capacity=capacity)
    output.setFormatter(JsonFormatter())
    output.handle(logging.makeLogRecord({"msg": "first", "levelno": 20, "levelname": "INFO"}))
    assert target.waiting.wait(5)  # the output's thread is in the first write
    try:
        yield output, target
    finally:
        target.gate.set()
        output.close()


def record(message: str) -> logging.LogRecord:
    return logging.makeLogRecord({"msg": message, "levelno": 20, "levelname": "INFO"})


def test_a_record_keeps_the_ids_of_the_moment_it_was_logged() -> None:
    tracer = TracerProvider().get_tracer("test")
    with stalled_output(capacity=10) as (output, target):
        token = request_id_var.set("req-1")
        with tracer.start_as_current_span("request") as span:
            output.handle(record("in the request"))
        request_id_var.reset(token)
        output.handle(record("after it"))
        target.gate.set()  # formatted only now, outside the request
        output.flush()
    inside, after = (json.loads(line) for line in target.lines[1:])
    context = span.get_span_context()
    assert (inside["trace_id"], inside["span_id"], inside["request_id"]) == (
        format(context.trace_id, "032x"),
        format(context.span_id, "016x"),
        "req-1",
    )
    assert (after["trace_id"], after["request_id"]) == (None, None)


def test_a_full_queue_drops_and_counts_without_waiting() -> None:
    with stalled_output(capacity=2) as (output, target):
        started = time.monotonic()
        for index in range(5):
            output.handle(record(f"line {index}"))
        assert time.monotonic() - started < 0.1  # never waits for the reader
        assert output.dropped == 3
        root = logging.getLogger()
        root.addHandler(output)
        try:
            assert dropped_by_output([root]) == {"console": 3, "file": 0}
        finally:
            root.removeHandler(output)
        target.gate.set()
        output.flush()
    assert [json.loads(line)["message"] for line in target.lines] == ["first", "line 0", "line 1"]


def test_drops_are_said_once_the_queue_has_drained() -> None:
    said: list[str] = []
    listener = logging.Handler()
    listener.emit = lambda r: said.append(r.getMessage())  # type: ignore[method-assign]
    source = logging.getLogger("aiva.telemetry.log_queue")
    source.addHandler(listener)
    try:
        with stalled_output(capacity=1) as (output, target):
            for index in range(4):
                output.handle(record(f"line {index}"))
            target.gate.set()
            output.flush()
    finally:
        source.removeHandler(listener)
    assert said == [
        "3 log records were dropped on the console: its reader did not keep up "
        "(counted in aiva.logs.dropped)"
    ]


def test_closing_while_the_reader_stalls_returns_and_counts_what_is_left() -> None:
    target = GatedLines()
    output = QueuedOutput("file", target, capacity=10)
    output.handle(record("first"))
    assert target.waiting.wait(5)
    for index in range(4):
        output.handle(record(f"line {index}"))
    started = time.monotonic()
    output.flush()  # waits DRAIN_S, then gives up
    output.close()  # does not wait again
    assert time.monotonic() - started < DRAIN_S + 0.3
    assert output.dropped == 4
    target.gate.set()


class KeptWrites(io.StringIO):
    """A console stream that keeps each write's text; from its `hang_at`-th write on, a
    write waits for the gate (a reader that stalls), at most 10 s."""

    def __init__(self, hang_at: int = 0) -> None:
        super().__init__()
        self.writes: list[str] = []
        self.hang_at = hang_at
        self.gate = threading.Event()
        self.hanging = threading.Event()

    def write(self, text: str) -> int:
        self.writes.append(text)
        if self.hang_at and len(self.writes) >= self.hang_at:
            self.hanging.set()
            self.gate.wait(10)
        return super().write(text)


def _queued_behind_first(stream: KeptWrites, count: int) -> tuple[QueuedOutput, StreamHandler]:
    """A console output over `stream` that has written "first" and, held in that write's
    flush, has `count` more records ("line N", request id "req-N") queued behind it."""
    target = logging.StreamHandler(stream)
    output = QueuedOutput("console", target)
    output.setFormatter(JsonFormatter())
    target.acquire()  # the first write's flush waits for it: the rest queue up behind
    try:
        output.handle(record("first"))
        deadline = time.monotonic() + 5
        while not stream.writes and time.monotonic() < deadline:
            time.sleep(0.001)
        for index in range(count):
            token = request_id_var.set(f"req-{index}")
            output.handle(record(f"line {index}"))
            request_id_var.reset(token)
    finally:
        target.release()
    return output, target


def test_the_console_writes_queued_lines_together_each_in_its_own_context() -> None:
    stream = KeptWrites()
    output, _ = _queued_behind_first(stream, 100)
    output.flush()
    output.close()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["message"] for line in lines] == ["first"] + [f"line {i}" for i in range(100)]
    assert [line["request_id"] for line in lines[1:]] == [f"req-{i}" for i in range(100)]
    # Together, but never more than the pipe keeps whole in one write (workers share it).
    assert len(stream.writes) < 20
    assert all(len(text.encode()) <= select.PIPE_BUF for text in stream.writes)
    assert all(text.endswith("\n") for text in stream.writes)


def test_closing_while_a_console_write_hangs_counts_every_line_not_handed_to_it() -> None:
    stream = KeptWrites(hang_at=2)  # "first" is written; the next write hangs
    output, _ = _queued_behind_first(stream, 100)
    assert stream.hanging.wait(5)
    started = time.monotonic()
    output.close()
    assert time.monotonic() - started < DRAIN_S + 0.3
    in_the_write = stream.writes[1].count("\n")
    assert 1 < in_the_write < 100
    # As before for the one record in a hanging write: its lines are not counted.
    assert output.dropped == 100 - in_the_write
    stream.gate.set()


def test_a_line_that_cannot_be_formatted_costs_only_itself() -> None:
    stream = io.StringIO()
    target = logging.StreamHandler(stream)
    failed: list[str] = []
    target.handleError = lambda r: failed.append(str(r.msg))  # type: ignore[method-assign]
    output = QueuedOutput("console", target)
    output.setFormatter(JsonFormatter())
    output.handle(record("before"))
    output.handle(logging.makeLogRecord({"msg": "%d items", "args": ("many",), "levelno": 20}))
    output.handle(record("after"))
    output.flush()
    output.close()
    assert [json.loads(line)["message"] for line in stream.getvalue().splitlines()] == [
        "before",
        "after",
    ]
    assert failed == ["%d items"]
