"""A service built on aiva that tells which worker answered, for the worker tests:
`aiva serve tests.apps.workers_service:app --workers 2`.

- `/whoami`: this worker's pid and `gc.get_freeze_count()`.
- `/watch-drain?s=N`: streams one line at once (the worker's pid), then waits up to N
  seconds for the app to be draining (what readiness answers 503 on), stays in flight
  0.3 s more, and ends with a JSON line: pid, when it first saw the app draining
  (`time.monotonic()`, one clock for every process on Linux; null if it never did), and
  the trace id of the request's span.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import time
from collections.abc import AsyncIterator

from opentelemetry import trace
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from aiva import create_app
from aiva.web.lifespan import app_state

POLL_S = 0.002  # how often the in-flight request looks at the draining flag
IN_FLIGHT_AFTER_S = 0.3  # still in flight this long after the drain began


async def whoami(request: Request) -> JSONResponse:
    return JSONResponse(
        {
            "pid": os.getpid(),
            "freeze_count": gc.get_freeze_count(),
            "gc_young_threshold": gc.get_threshold()[0],
        }
    )


async def watch_drain(request: Request) -> StreamingResponse:
    seconds = min(float(request.query_params["s"]), 60.0)
    health = app_state(request).health
    trace_id = format(trace.get_current_span().get_span_context().trace_id, "032x")

    async def lines() -> AsyncIterator[bytes]:
        yield f"{os.getpid()}\n".encode()
        seen: float | None = None
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if health.draining:
                seen = time.monotonic()
                break
            await asyncio.sleep(POLL_S)
        if seen is not None:
            await asyncio.sleep(IN_FLIGHT_AFTER_S)
        body = {"pid": os.getpid(), "draining_seen": seen, "trace_id": trace_id}
        yield json.dumps(body).encode() + b"\n"

    return StreamingResponse(lines(), media_type="text/plain")


app = create_app(routes=[Route("/whoami", whoami), Route("/watch-drain", watch_drain)])
