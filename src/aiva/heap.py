"""Keeping what lives as long as the process out of the garbage collector's way."""

from __future__ import annotations

import gc


def freeze_long_lived() -> None:
    """Collect once, then move every object there is now (modules, settings, providers)
    to the collector's permanent generation.

    Telemetry waiting in the batch queues lives long enough to reach the oldest
    generation, and so triggers full collections under load; each one walked this whole
    start-up heap: about 50 ms a collection here (a p99 spike), 2-3 µs a request on
    average (benchmarks/README.md). Frozen objects are still freed when their last
    reference goes; only reference cycles among them wait for `refreeze_if_frozen`.
    """
    gc.collect()
    gc.freeze()


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
