"""The demo API: one route a signal, used by the dashboards, the tests and the benchmark."""

from __future__ import annotations

import asyncio
import functools
import logging
import random

from opentelemetry import metrics
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from aiva.api import log_context, meter, operation

logger = logging.getLogger("aiva.demo")


async def item(request: Request) -> JSONResponse:
    """A route with a path parameter: its span and metrics carry the template, not the id."""
    item_id = request.path_params["item_id"]
    return JSONResponse({"item_id": item_id, "name": f"item {item_id}"})


# ?delay_ms= simulates a slow dependency (for latency dashboards and shutdown tests).
MAX_DELAY_MS = 10_000


async def work(request: Request) -> JSONResponse:
    """Nested work: child spans, a DEBUG and an INFO line, a custom counter and histogram."""
    size = random.randint(1, 20)
    try:
        delay_ms = min(max(int(request.query_params.get("delay_ms", "1")), 0), MAX_DELAY_MS)
    except ValueError:
        return JSONResponse({"error": "delay_ms must be a whole number"}, status_code=400)
    with log_context(component="demo"), operation("demo.work", size=size):
        logger.debug("planning %d items", size)
        async with operation("demo.fetch"):
            await asyncio.sleep(delay_ms / 1000)
        with operation("demo.compute"):
            total = sum(i * i for i in range(size * 100))
        items, batch_size = _instruments(metrics.get_meter_provider())
        items.add(size)
        batch_size.record(size)
        logger.info("processed %d items", size, extra={"items": size})
    return JSONResponse({"items": size, "total": total})


@functools.lru_cache(maxsize=4)
def _instruments(provider: metrics.MeterProvider) -> tuple[metrics.Counter, metrics.Histogram]:
    """The demo's own instruments, created once per provider, from `aiva.meter()` as a
    service should (aiva's lean instruments on aiva's provider)."""
    demo_meter = meter("aiva.demo")
    return (
        demo_meter.create_counter(
            "aiva.demo.items", unit="{item}", description="Items processed by the demo work route."
        ),
        demo_meter.create_histogram(
            "aiva.demo.batch.size", unit="{item}", description="Batch sizes of the demo work route."
        ),
    )


async def fail(request: Request) -> JSONResponse:
    """Raises: answered 500, span ERROR with the exception recorded."""
    raise RuntimeError("demo failure")


# Plain routes rather than a Mount: a Mount costs each request a second router pass.
PREFIX = "/api/demo"
ROUTES = [
    Route(f"{PREFIX}/items/{{item_id}}", item, methods=["GET"]),
    Route(f"{PREFIX}/work", work, methods=["GET"]),
    Route(f"{PREFIX}/fail", fail, methods=["GET"]),
]
