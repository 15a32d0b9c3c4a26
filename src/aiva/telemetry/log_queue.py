"""The console and file log outputs behind bounded queues, each drained by its own thread:
a stalled reader drops (and counts) records instead of stopping the service.

Before, the console handler wrote on the event loop: once nobody read the 64 KiB pipe
behind stderr, every request, `/livez` included, hung until someone did. Now a record is
queued with a copy of the context it was logged in (0.06 µs: the trace and span ids, the
request id and the `log_context` fields are read from it when the record is formatted,
in the output's thread), and formatted and written there. A full queue drops the record
and counts it (`aiva.logs.dropped{output}`); once the queue has drained again, one
WARNING line says how many were dropped.

The console's thread writes the lines queued together, in writes of at most PIPE_BUF
bytes (`_write_lines`).

The console's thread writes to the file descriptor itself (`os.write`), not through
`sys.stderr`: a thread blocked in a write through `sys.stderr` holds its buffer's lock,
which the interpreter needs at exit ("could not acquire lock for <stderr> at interpreter
shutdown"), so the process could not end while the reader stalls.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import logging.handlers
import os
import queue
import select
import sys
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from typing import Any, Literal

from opentelemetry.metrics import CallbackOptions, Meter, Observation

Output = Literal["console", "file"]
OUTPUTS: tuple[Output, ...] = ("console", "file")

# Records waiting per output. A burst of 4,096 lines (about 0.6 s of access lines at
# 7,000 requests a second) waits for a slow reader; beyond it records are dropped.
# About 1 KiB a record: a few MiB at most.
CAPACITY = 4096
# How long closing (or flushing) an output waits for its queue to drain: a reader that
# keeps up drains a full queue in about 60 ms here; one that stalls must not hold the
# process's exit (the shutdown bound's margin covers both outputs).
DRAIN_S = 0.5

# The output's thread polls its queue every 10 ms while records come (a line waits that
# long at most), and blocks on it after a second without any.
_POLL_S = 0.01
_QUIET_POLLS = 100
# Records the console's thread takes from its queue at a time (written PIPE_BUF bytes a
# write, about 11 of an operation's lines).
_BATCH = 64
_STOP = object()
_logger = logging.getLogger(__name__)


class QueuedOutput(logging.Handler):
    """A log output (`target`: console or file) fed through a bounded queue.

    `emit` only queues the record with its context (no lock: the queue is thread-safe);
    the output's own daemon thread formats and writes it, in that context.
    """

    def __init__(self, output: Output, target: logging.Handler, capacity: int = CAPACITY) -> None:
        super().__init__()
        self.output = output
        self.target = target
        # A plain StreamHandler (the console) is written a batch of lines at a time; any
        # other (the rotating file rolls over between records) a record at a time.
        self._batched = type(target) is logging.StreamHandler
        self._unwritten = 0  # formatted lines of the batch not yet handed to a write
        self._capacity = capacity
        # SimpleQueue: 0.1 µs a put against 0.9 for queue.Queue's put_nowait (its lock
        # and condition); the bound is checked with qsize(), which concurrent emitters
        # can overrun by one record each.
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._drop_lock = threading.Lock()
        self.dropped = 0
        self._reported = 0
        self._stalled = False  # a drain already timed out: later ones do not wait again
        self._closed = False
        self._thread = self._start()
        # A forked child (a pre-forking server) has the handler but not its thread, and
        # perhaps a queue whose lock the parent's thread held: both made anew, as the
        # SDK's batch processors do.
        after_fork = weakref.WeakMethod(self._after_fork)
        os.register_at_fork(after_in_child=lambda: (method := after_fork()) and method())

    def _start(self) -> threading.Thread:
        thread = threading.Thread(target=self._drain, name=f"aiva-log-{self.output}", daemon=True)
        thread.start()
        return thread

    def _after_fork(self) -> None:
        if self._closed:
            return
        self._queue = queue.SimpleQueue()
        self._drop_lock = threading.Lock()
        self._thread = self._start()

    def setFormatter(self, fmt: logging.Formatter | None) -> None:
        """The target formats (dictConfig sets the formatter on this handler)."""
        super().setFormatter(fmt)
        self.target.setFormatter(fmt)

    def handle(self, record: logging.LogRecord) -> Any:
        """As logging.Handler.handle, without its lock around `emit` (nothing to guard)."""
        passed = self.filter(record)
        if isinstance(passed, logging.LogRecord):  # Python 3.12: a filter may replace it
            record = passed
        if passed:
            self.emit(record)
        return passed

    def emit(self, record: logging.LogRecord) -> None:
        if self._queue.qsize() >= self._capacity:
            with self._drop_lock:
                self.dropped += 1
            return
        self._queue.put((contextvars.copy_context(), record))

    def flush(self) -> None:
        """Wait (at most DRAIN_S) until what is queued now is written."""
        if not self._thread.is_alive():  # closed (logging.shutdown flushes closed ones too)
            return
        written = threading.Event()
        self._queue.put(written)
        self._wait(written.wait)

    def close(self) -> None:
        """Write what is queued (waiting at most DRAIN_S), then stop the thread; records
        still queued when it cannot, or formatted but not yet handed to a write behind
        the one that hangs, are counted as dropped."""
        self._closed = True
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._wait(self._thread.join)
        if self._thread.is_alive():  # stuck in a write: what waits behind it is lost
            left = 0
            while not self._queue.empty():
                left += isinstance(self._queue.get_nowait(), tuple)
            self._queue.put(_STOP)  # should the write ever return
            with self._drop_lock:
                self.dropped += left + self._unwritten
        else:  # the thread no longer writes to it
            self.target.close()
        super().close()

    def _wait(self, wait: Any) -> None:
        if not self._stalled:
            wait(DRAIN_S)
            self._stalled = self._thread.is_alive() and not self._queue.empty()

    def _next(self) -> Any:
        """The next item. While records keep coming, the queue is polled: a thread blocked
        on it is woken by each put, which costs the logging thread 3 µs (0.2 µs without);
        after a quiet second it blocks until the next one."""
        for _ in range(_QUIET_POLLS):
            try:
                return self._queue.get_nowait()
            except queue.Empty:
                time.sleep(_POLL_S)
        return self._queue.get()

    def _drain(self) -> None:
        follower = None  # a flush or a stop met behind a batch of records: handled next
        while True:
            item, follower = (self._next() if follower is None else follower), None
            if item is _STOP:
                return
            if isinstance(item, threading.Event):  # a flush
                self._report_drops()
                # As logging.shutdown does: the stream may have been closed under it.
                with contextlib.suppress(OSError, ValueError):
                    self.target.flush()
                item.set()
                continue
            if not self._batched:
                context, record = item
                # Formatted in the context the record was logged in: the trace and span
                # ids, the request id and the bound fields are read from it.
                context.run(self.target.emit, record)
            else:
                follower = self._write_batch(item)
            self._report_drops()

    def _write_batch(self, first: tuple[contextvars.Context, logging.LogRecord]) -> Any:
        """`first` and the records queued behind it (up to _BATCH), each formatted in its
        own context, then written together (`_write_lines`); the flush or stop met behind
        them, if any."""
        items = [first]
        follower = None
        while len(items) < _BATCH:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if not isinstance(item, tuple):
                follower = item
                break
            items.append(item)
        lines = []
        for context, record in items:
            try:
                lines.append((context.run(self.target.format, record), record))
            except RecursionError:  # as StreamHandler.emit
                raise
            except Exception:  # noqa: BLE001 - reported by handleError, as emit does
                self.target.handleError(record)
        self._write_lines(lines)
        return follower

    def _write_lines(self, lines: list[tuple[str, logging.LogRecord]]) -> None:
        """The lines in writes of at most PIPE_BUF bytes each (a longer line alone, as
        before): the workers of `aiva serve --workers N` share the console's pipe, and
        the kernel keeps a write that size whole, so no line is cut into by another's.

        One write and one flush a line (the StreamHandler's emit, its lock taken each
        time) cost about 28 CPU µs a record for the whole process against 25 this way
        (`benchmarks/console_lines_inprocess.py`, lines of an operation, about 11 a
        write; 0.5 µs of the saving goes to keeping writes within PIPE_BUF). A write
        that fails costs its lines (handleError names the first)."""
        target = self.target
        assert isinstance(target, logging.StreamHandler)  # _batched: exactly one
        terminator = target.terminator
        self._unwritten = len(lines)
        for chunk in _pipe_chunks(lines, len(terminator)):
            self._unwritten -= len(chunk)  # handed to a write (one that hangs: as before)
            try:
                target.stream.write("".join(line + terminator for line, _ in chunk))
            except RecursionError:
                raise
            except Exception:  # noqa: BLE001 - reported by handleError, as emit does
                target.handleError(chunk[0][1])
        with contextlib.suppress(OSError, ValueError):  # as logging.shutdown's flush
            target.flush()

    def _report_drops(self) -> None:
        """One line, once the queue has drained after drops: the reader keeps up again."""
        if self.dropped == self._reported or not self._queue.empty():
            return
        count, self._reported = self.dropped - self._reported, self.dropped
        _logger.warning(
            "%d log records were dropped on the %s: its reader did not keep up "
            "(counted in aiva.logs.dropped)",
            count,
            self.output,
        )


def _pipe_chunks(
    lines: list[tuple[str, logging.LogRecord]], terminator: int
) -> Iterator[list[tuple[str, logging.LogRecord]]]:
    """The lines in runs of at most select.PIPE_BUF bytes (UTF-8), a longer line alone."""
    chunk: list[tuple[str, logging.LogRecord]] = []
    size = 0
    for line, record in lines:
        length = (len(line) if line.isascii() else len(line.encode(errors="replace"))) + terminator
        if chunk and size + length > select.PIPE_BUF:
            yield chunk
            chunk, size = [], 0
        chunk.append((line, record))
        size += length
    if chunk:
        yield chunk


class _FdWriter:
    """A text stream writing straight to a file descriptor (no buffer, no lock)."""

    def __init__(self, fd: int, encoding: str) -> None:
        self._fd = fd
        self.encoding = encoding

    def write(self, text: str) -> int:
        data = memoryview(text.encode(self.encoding, "backslashreplace"))
        while data:
            try:
                written = os.write(self._fd, data)
            except BlockingIOError:  # someone made the pipe non-blocking: wait for room
                select.select([], [self._fd], [])
                continue
            data = data[written:]
        return len(text)

    def flush(self) -> None:
        """Nothing is buffered."""


def _console_stream() -> Any:
    """The process's stderr as a descriptor writer; a replaced `sys.stderr` (a test's
    capture) as it is."""
    stream = sys.stderr
    if stream is not sys.__stderr__ or stream is None:
        return stream
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return stream
    return _FdWriter(fd, getattr(stream, "encoding", None) or "utf-8")


def console_output() -> QueuedOutput:
    """The console output (stderr), queued: a dictConfig handler factory."""
    return QueuedOutput("console", logging.StreamHandler(_console_stream()))


def file_output(filename: str, max_bytes: int, backup_count: int) -> QueuedOutput:
    """The rotating file output, queued: a dictConfig handler factory."""
    target = logging.handlers.RotatingFileHandler(
        filename, maxBytes=max_bytes, backupCount=backup_count, encoding="utf-8"
    )
    return QueuedOutput("file", target)


def dropped_by_output(loggers: Iterable[logging.Logger]) -> dict[Output, int]:
    """Records dropped so far by each queued output of these loggers."""
    counts: dict[Output, int] = dict.fromkeys(OUTPUTS, 0)
    seen: set[int] = set()
    for logger_ in loggers:
        for handler in logger_.handlers:
            if isinstance(handler, QueuedOutput) and id(handler) not in seen:
                seen.add(id(handler))
                counts[handler.output] += handler.dropped
    return counts


def observe_log_drops(meter: Meter) -> None:
    """`aiva.logs.dropped{output}`: records the console or the file dropped, from start-up at 0."""

    def observe(options: CallbackOptions) -> Iterable[Observation]:
        loggers = (logging.getLogger(), logging.getLogger("opentelemetry"))
        counts = dropped_by_output(loggers)
        return [Observation(count, {"output": output}) for output, count in counts.items()]

    meter.create_observable_counter(
        "aiva.logs.dropped",
        callbacks=[observe],
        unit="{record}",
        description="Log records dropped by the console or the file output: its reader "
        "did not keep up.",
    )
