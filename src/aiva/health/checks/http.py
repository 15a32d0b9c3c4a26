"""`http`: GET a URL and expect a status."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import httpx

from aiva.health.model import Outcome, Status
from aiva.health.types import CheckFunction
from aiva.settings.masking import mask_url


def http_check(options: Mapping[str, Any], timeout_s: float) -> CheckFunction:
    url = str(options["url"])
    expected = int(options.get("expected_status", 200))
    target = mask_url(url)

    async def check() -> Outcome:
        started = time.perf_counter()
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            response = await client.get(url)
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        details = {"target": target, "status_code": response.status_code, "latency_ms": latency_ms}
        if response.status_code != expected:
            message = f"answered {response.status_code}, expected {expected}"
            return Outcome(Status.UNHEALTHY, message, details, latency_ms, "ms")
        return Outcome(Status.HEALTHY, "ok", details, latency_ms, "ms")

    return check
