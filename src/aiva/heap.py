"""Keeping what lives as long as the process out of the garbage collector's way."""

from __future__ import annotations

import gc
import sys

# The interpreter's default threshold of the young generation: a collection each time
# 700 more container objects were made than freed.
DEFAULT_YOUNG_THRESHOLD = 700
# What `aiva serve` raises it to. Under load, the telemetry waiting in the batch queues
# (a span, a log record: a handful of objects each, 512 at a time) makes and frees
# thousands of objects in waves. At 700, the work route under wrk made 80 to 130 young
# and 8 to 12 middle collections a second that found nothing to free: 3.6 to 4.2 % of
# the server's CPU, 22 to 35 µs a request; at 10,000, none in 8 s
# (`python benchmarks/gc_collections.py`). A service that does make reference cycles
# has them collected later: after 10,000 new objects instead of 700, and the older
# generations, collected after so many young collections, about 14 times less often
# too (a cycle holding a large buffer, a traceback's frames, lives that much longer).
# CPython 3.14's incremental collector gives the thresholds another meaning (and
# another default): there it is left alone.
SERVER_YOUNG_THRESHOLD = 10_000


def freeze_long_lived() -> None:
    """Collect once, then move every object there is now (modules, settings, providers)
    to the collector's permanent generation.

    Telemetry waiting in the batch queues lives long enough to reach the oldest
    generation, and so triggers full collections under load; each one walked this whole
    start-up heap: about 50 ms a collection here (a p99 spike), 2-3 µs a request on
    average (benchmarks/README.md). Frozen objects are still freed when their last
    reference goes; only reference cycles among them wait for `refreeze_if_frozen`.

    The young generation's threshold is raised to SERVER_YOUNG_THRESHOLD where it is
    still the interpreter's default (one the service set, or 0, stays as it is), before
    CPython 3.14.
    """
    gc.collect()
    gc.freeze()
    young, *older = gc.get_threshold()
    if sys.version_info < (3, 14) and young == DEFAULT_YOUNG_THRESHOLD:
        gc.set_threshold(SERVER_YOUNG_THRESHOLD, *older)


def refreeze_if_frozen() -> None:
    """After a reload: freeze what it built (settings, health checks) too, without
    collecting. Does nothing where nothing was frozen (an app served by another server
    than `aiva serve`).

    Thawing and collecting the whole heap again, to free reference cycles among the
    objects the reload replaced, stalled the event loop for 73 to 127 ms after every
    applied reload (a readiness probe answered in 146 ms): a full collection holds the
    interpreter whichever thread runs it. `gc.freeze()` alone only moves the young
    generations over (constant time). What it costs instead: cycles among the replaced
    objects stay frozen, at most one settings tree and one set of checks a reload.
    """
    if gc.get_freeze_count():
        gc.freeze()
