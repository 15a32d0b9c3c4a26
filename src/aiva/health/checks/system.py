"""`disk`, `memory`, `cpu`: used percent against warn and fail thresholds (psutil)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import psutil

from aiva.health.model import Outcome, Status
from aiva.health.types import CheckFunction


def _threshold_check(
    measure: Callable[[], float], options: Mapping[str, Any], what: str, **details: Any
) -> CheckFunction:
    warn = float(options.get("warn_percent", 90))
    fail = float(options.get("fail_percent", 95))

    async def check() -> Outcome:
        used = round(measure(), 1)
        info = {**details, "used_percent": used, "warn_percent": warn, "fail_percent": fail}
        if used >= fail:
            status, message = Status.UNHEALTHY, f"{what} {used}% used (fail at {fail:g}%)"
        elif used >= warn:
            status, message = Status.DEGRADED, f"{what} {used}% used (warn at {warn:g}%)"
        else:
            status, message = Status.HEALTHY, f"{what} {used}% used"
        return Outcome(status, message, info, used, "percent")

    return check


def disk_check(options: Mapping[str, Any]) -> CheckFunction:
    path = str(options.get("path", "/"))
    return _threshold_check(lambda: psutil.disk_usage(path).percent, options, "disk", path=path)


def memory_check(options: Mapping[str, Any]) -> CheckFunction:
    return _threshold_check(lambda: psutil.virtual_memory().percent, options, "memory")


def cpu_check(options: Mapping[str, Any]) -> CheckFunction:
    # interval=None: usage since the previous call (the previous round), never blocking.
    return _threshold_check(lambda: psutil.cpu_percent(interval=None), options, "cpu")
