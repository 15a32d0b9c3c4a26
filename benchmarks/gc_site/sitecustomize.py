"""Loaded by `benchmarks/gc_collections.py`'s servers only (it puts this folder on their
PYTHONPATH): times every garbage collection, and writes the totals on SIGUSR1."""

from __future__ import annotations

import gc
import os
import signal
import time
from typing import Any

_STATS = os.environ.get("BENCH_GC_STATS")
_YOUNG = os.environ.get("BENCH_GC_YOUNG")


def _install(path: str) -> None:
    counts, seconds, started = [0, 0, 0], [0.0, 0.0, 0.0], [0.0]

    def timed(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.thread_time()
            return
        generation = info["generation"]
        counts[generation] += 1
        seconds[generation] += time.thread_time() - started[0]

    def dump(signum: int, frame: object) -> None:
        with open(path, "a") as out:  # noqa: PTH123 - a signal handler, one short line
            threshold = gc.get_threshold()[0]
            out.write(f"{threshold} {' '.join(map(str, counts))} {' '.join(map(str, seconds))}\n")

    gc.callbacks.append(timed)
    signal.signal(signal.SIGUSR1, dump)


if _YOUNG is not None:  # set before aiva serve starts: a threshold of the service's own
    gc.set_threshold(int(_YOUNG), *gc.get_threshold()[1:])
if _STATS is not None:
    _install(_STATS)
