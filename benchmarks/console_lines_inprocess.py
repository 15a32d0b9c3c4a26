"""In-process cost of a console line (issue #14): the queued console output writing the
lines queued together (writes of at most PIPE_BUF bytes) against one write and flush a
line (the StreamHandler's own emit, as before).

    taskset -c 0 python benchmarks/console_lines_inprocess.py [--records 20000] [--rounds 5]

Records shaped as an operation's "finished" line are handed to aiva's console output
(`QueuedOutput` over a StreamHandler writing to a file descriptor, JSON lines) in bursts
of 48 a 12 ms apart, as a loop serving about 1,000 work requests a second hands them
over (the output's thread polls its queue every 10 ms). The figure is the whole
process's CPU a record (`process_time`: the handing over, and the output's thread
formatting and writing it), queue drained before the clock stops; the records are made
off the clock. Rounds interleave the two ways; medians.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

from aiva.telemetry.log_queue import QueuedOutput, _FdWriter
from aiva.telemetry.logs import JsonFormatter

BURST, PAUSE_S = 48, 0.012


def records(count: int) -> list[logging.LogRecord]:
    source = logging.getLogger("aiva.operation")
    extra = {"operation": "demo.fetch", "duration_ms": 1.789}
    args = (source.name, logging.INFO, __file__, 0, "operation %s finished", ("demo.fetch",))
    return [source.makeRecord(*args, None, "operation", extra) for _ in range(count)]


def per_record_us(output: QueuedOutput, count: int) -> float:
    made = records(count)
    output.flush()
    started = time.process_time()
    for index, record in enumerate(made, 1):
        output.handle(record)
        if index % BURST == 0:
            time.sleep(PAUSE_S)
    output.flush()
    spent = time.process_time() - started
    if output._stalled or not output._queue.empty():  # a flush gave up: the clock stopped early
        raise SystemExit("the console output did not drain: the figures do not hold")
    return spent / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        fd = os.open(Path(folder) / "console.out", os.O_WRONLY | os.O_CREAT)
        outputs = {}
        for way in ("batched", "line by line"):
            output = QueuedOutput("console", logging.StreamHandler(_FdWriter(fd, "utf-8")))
            output.setFormatter(JsonFormatter())
            outputs[way] = output
        outputs["line by line"]._batched = False  # the StreamHandler's emit, a record
        figures: dict[str, list[float]] = {way: [] for way in outputs}
        for _ in range(opts.rounds):
            for way, output in outputs.items():
                figures[way].append(per_record_us(output, opts.records))
        for output in outputs.values():
            if output.dropped:
                raise SystemExit(f"{output.dropped} records dropped: the figures do not hold")
            output.close()
        os.close(fd)
    for way, values in figures.items():
        rounds = ", ".join(f"{v:.1f}" for v in values)
        print(f"{way:13s} {statistics.median(values):6.2f} CPU us a record (rounds {rounds})")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
