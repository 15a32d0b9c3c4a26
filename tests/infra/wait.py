"""Bounded polling: wait until a predicate returns something truthy, or fail clearly."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A bounded wait reached its deadline."""


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str | Callable[[], str] = "",
) -> T:
    """Call predicate until it returns a truthy value (returned); WaitTimeout after timeout s.

    The predicate is always called at least once and once more at the deadline.
    message may be a callable, evaluated only on timeout (e.g. to describe what was seen).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            text = message() if callable(message) else message
            raise WaitTimeout(
                f"condition not met within {timeout:.1f}s" + (f": {text}" if text else "")
            )
        time.sleep(min(interval, remaining))
