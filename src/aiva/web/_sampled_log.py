"""Sampled log lines: of many like events (a key per client, say), which get a line."""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class SampledLog:
    """Which of many like events get a line: a key's first, then at most one every
    `every_s` for that key (with how many happened since), and never two lines within
    `spacing_s` overall. Keys are forgotten all at once past `max_keys`."""

    def __init__(
        self,
        every_s: float,
        spacing_s: float,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._every_s = every_s
        self._spacing_s = spacing_s
        self._max_keys = max_keys
        self._clock = clock
        # key -> [time of its last line, events since, flagged events since]
        self._pending: dict[str, list[float]] = {}
        self._last_line = -math.inf

    def note(self, key: str, flagged: bool = False) -> tuple[int, int] | None:
        """Count an event; (events, flagged events) since the key's last line when a
        line is due now, else None."""
        now = self._clock()
        entry = self._pending.get(key)
        if entry is None:
            if len(self._pending) >= self._max_keys:
                self._pending.clear()
            entry = self._pending[key] = [-math.inf, 0, 0]
        entry[1] += 1
        entry[2] += flagged
        if now - entry[0] < self._every_s or now - self._last_line < self._spacing_s:
            return None
        due = int(entry[1]), int(entry[2])
        entry[:] = [now, 0, 0]
        self._last_line = now
        return due
