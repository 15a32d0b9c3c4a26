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
    """After a reload replaced frozen objects (settings, health checks): thaw, collect
    what the reload left behind, cycles included, and freeze again. Does nothing where
    nothing was frozen (an app served by another server than `aiva serve`)."""
    if gc.get_freeze_count():
        gc.unfreeze()
        freeze_long_lived()
