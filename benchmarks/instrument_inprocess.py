"""In-process check of issue #10's two cost criteria, without the network in the way.

`benchmarks/overhead` measures them under wrk, where an uninstrumented FastAPI request
or httpx call varies more between rounds than the differences being compared (one
morning's httpx pair: 900 to 2,700 CPU µs a request between rounds, for a client span
of about 20). Here the ASGI app is called directly on one core:

1. CPU µs aiva adds per request on FastAPI (`instrument`) against on Starlette
   (`create_app`'s way: `instrument` on a Starlette app), same route, same settings
   (traces, Prometheus reader, the JSON access line to /dev/null);
2. CPU µs one httpx client span adds to a request against what aiva's server span
   adds (`span_costs`: Starlette under `instrument` with aiva_traces' settings against
   bare Starlette, each span exported to a real rotel inside the clock; the span alone,
   against `instrument` with telemetry off, for reference).

Rounds are interleaved; each figure is the median over rounds. Run:
`taskset -c 0 python benchmarks/instrument_inprocess.py [--rounds 7] [--spans-only]`
(`benchmarks/overhead` runs the span check so, after its wrk rounds, when the httpx pair
ran).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROUTE = "/items/1"
SETTINGS_ENV = {
    "AIVA_HEALTH__CHECKS__CPU__ENABLED": "false",
    "AIVA_TELEMETRY__INSTRUMENTATIONS": "[]",
    "AIVA_TELEMETRY__LOGS__LEVEL": "INFO",
}
# The span check's settings: benchmarks/overhead's aiva_traces (traces at 1.0, no metrics,
# no access line); the OTLP endpoint is `collector()`'s, added in main.
SPAN_SETTINGS_ENV = {
    "AIVA_HEALTH__CHECKS__CPU__ENABLED": "false",
    "AIVA_TELEMETRY__INSTRUMENTATIONS": "[]",
    "AIVA_TELEMETRY__LOGS__LEVEL": "WARNING",
    "AIVA_TELEMETRY__METRICS__ENABLED": "false",
    "AIVA_TELEMETRY__TRACES__SAMPLER_RATIO": "1.0",
}


def starlette_app() -> Any:
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def item(request: Any) -> JSONResponse:
        return JSONResponse({"item": int(request.path_params["item_id"]), "ok": True})

    return Starlette(routes=[Route("/items/{item_id}", item)])


def fastapi_app() -> Any:
    from fastapi import FastAPI

    # FastAPI's own telemetry off, as in a process with no OpenTelemetry providers: here
    # the first instrumented app has installed aiva's as the globals, which it would use.
    app = FastAPI(telemetry={"tracing": False, "metrics": False, "logs": False})

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, Any]:
        return {"item": item_id, "ok": True}

    return app


@contextlib.asynccontextmanager
async def running(app: Any) -> AsyncIterator[dict[str, Any]]:
    """The app's lifespan started (as a server starts it); yields its state."""
    state: dict[str, Any] = {}
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sent: list[dict[str, Any]] = []

    async def lifespan_send(message: dict[str, Any]) -> None:
        sent.append(message)

    await inbox.put({"type": "lifespan.startup"})
    lifespan_scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": state}
    lifespan = asyncio.create_task(app(lifespan_scope, inbox.get, lifespan_send))
    while not sent:
        await asyncio.sleep(0.01)
    try:
        yield state
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await lifespan


async def timed_requests(
    app: Any,
    state: dict[str, Any],
    requests: int,
    headers: list[tuple[bytes, bytes]] | None = None,
    settle: Callable[[], object] | None = None,
) -> float:
    """CPU µs per request of a started app, called as a server would.

    `headers`: the request head's (default: a bare Host). `settle`: called before the
    clock starts and before it stops (a flush: what the requests queued is exported
    inside the measurement, and what the warm-up queued outside it)."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": ROUTE, "raw_path": ROUTE.encode(), "query_string": b"",
        "root_path": "", "headers": headers or [(b"host", b"bench")], "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    for _ in range(300):
        await app({**scope, "state": dict(state)}, receive, send)
    # As `aiva serve` does once started (aiva.heap): without it, the full collections
    # that aiva's per-request objects trigger walk the whole start-up heap, which is
    # larger for FastAPI (pydantic), and every figure of the FastAPI pair grows ~25 %.
    if settle is not None:
        settle()
    gc.collect()
    gc.freeze()
    started = time.process_time()
    for _ in range(requests):
        await app({**scope, "state": dict(state)}, receive, send)
    if settle is not None:
        settle()
    spent = time.process_time() - started
    gc.unfreeze()
    return spent / requests * 1e6


async def per_request_us(
    app: Any, requests: int, headers: list[tuple[bytes, bytes]] | None = None
) -> float:
    """CPU µs per request, the app's lifespan running, called as a server would."""
    async with running(app) as state:
        return await timed_requests(app, state, requests, headers)


# The span check's request head: what wrk sends to `benchmarks/overhead`'s servers.
SPAN_HEADERS = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk")]


@dataclass(frozen=True)
class SpanCosts:
    """CPU µs of the whole process each adds to a request, its export to the collector
    included (flushed inside the measurement)."""

    client: float  # one httpx client span
    server: float  # aiva's traced server span: instrument, traces on, over bare Starlette
    span_alone: float  # the same, over instrument with telemetry off (the middleware's rest)


async def span_costs(on: Any, off: Any, requests: int) -> SpanCosts:
    """What `benchmarks/overhead`'s check compares (httpx_call_on - httpx_call_off against
    aiva_traces - bare), without the network between client and server.

    The server span: a request to Starlette under `instrument` with aiva_traces'
    settings (`on`: spans exported to a real collector), less the same request to bare
    Starlette; and, for reference, less it under `instrument` with telemetry off
    (`off`). The client span: aiva's httpx instrumentation's work for one call (the
    wrapper's check; `start`: attributes, span, `traceparent`; `end`: status, version,
    the duration point) and its span's export, on the traced app's own providers,
    inside a sampled server span; the requests are built off the clock (they are the
    caller's).
    """
    import aiva

    bare = await per_request_us(starlette_app(), requests, SPAN_HEADERS)
    without = await per_request_us(aiva.instrument(starlette_app(), off), requests, SPAN_HEADERS)
    app = aiva.instrument(starlette_app(), on)
    async with running(app) as state:
        telemetry = state["aiva"].telemetry
        flush = telemetry.tracer_provider.force_flush
        traced = await timed_requests(app, state, requests, SPAN_HEADERS, settle=flush)
        client = client_span_us(telemetry, requests)
    return SpanCosts(client, traced - bare, traced - without)


def client_span_us(telemetry: Any, calls: int) -> float:
    """CPU µs of the process per httpx client span, timed as `timed_requests` times a
    request (warm-up, start-up heap frozen, export flushed inside the clock)."""
    import httpx
    from opentelemetry import context, trace
    from opentelemetry.instrumentation.utils import is_http_instrumentation_enabled

    from aiva.telemetry.httpx_client import _ClientCalls

    client = _ClientCalls(telemetry.tracer_provider, telemetry.meter_provider, None)
    url = "http://127.0.0.1:8080" + ROUTE
    response = httpx.Response(200, extensions={"http_version": b"HTTP/1.1"})
    parent = telemetry.tracer_provider.get_tracer("bench").start_span("GET /items")
    token = context.attach(trace.set_span_in_context(parent))

    def call_each(requests: list[httpx.Request]) -> None:
        for request in requests:
            if is_http_instrumentation_enabled():
                client.start(request).end(response)

    call_each([httpx.Request("GET", url) for _ in range(300)])
    batch = [httpx.Request("GET", url) for _ in range(calls)]
    telemetry.tracer_provider.force_flush()
    gc.collect()
    gc.freeze()
    started = time.process_time()
    call_each(batch)
    telemetry.tracer_provider.force_flush()
    spent = time.process_time() - started
    gc.unfreeze()
    context.detach(token)
    parent.end()
    return spent / calls * 1e6


@contextlib.contextmanager
def collector() -> Iterator[str]:
    """A real rotel (the benchmarks' collector, discarding what it receives) for the span
    check's exports; its gRPC endpoint. Stopped by PID on the way out."""
    from harness import Registry, Rotel

    registry = Registry()
    workdir = Path(tempfile.mkdtemp(prefix="aiva-spans-"))
    try:
        rotel = Rotel(workdir, registry)
        rotel.start()
        yield rotel.grpc_endpoint
    finally:
        registry.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument(
        "--spans-only", action="store_true", help="only the client span check (overhead runs it)"
    )
    opts = parser.parse_args()
    os.environ.update(SETTINGS_ENV)
    if not opts.spans_only:  # the access line's console output (no access line there)
        sys.stderr = Path(os.devnull).open("w")  # noqa: SIM115
    import aiva
    from aiva.settings import load_settings

    settings = load_settings(dict(SETTINGS_ENV), config_dir="/nonexistent").settings
    makers = {
        "starlette": starlette_app,
        "starlette+aiva": lambda: aiva.instrument(starlette_app(), settings),
        "fastapi": fastapi_app,
        "fastapi+aiva": lambda: aiva.instrument(fastapi_app(), settings),
    }
    figures: dict[str, list[float]] = {name: [] for name in makers}
    spans: list[SpanCosts] = []
    with collector() as endpoint:
        span_env = {**SPAN_SETTINGS_ENV, "AIVA_TELEMETRY__OTLP__ENDPOINT": endpoint}
        on = load_settings(span_env, config_dir="/nonexistent").settings
        off = load_settings(
            {**span_env, "AIVA_TELEMETRY__ENABLED": "false"}, config_dir="/nonexistent"
        ).settings
        for _ in range(opts.rounds):
            for name, make in makers.items():
                if not opts.spans_only:
                    figures[name].append(asyncio.run(per_request_us(make(), opts.requests)))
            spans.append(asyncio.run(span_costs(on, off, opts.requests)))
    out = sys.__stdout__
    assert out is not None
    if opts.spans_only:
        print(span_check(spans), file=out)
        return

    def added(ours: str, base: str) -> list[float]:
        return [a - b for a, b in zip(figures[ours], figures[base], strict=True)]

    added_starlette = added("starlette+aiva", "starlette")
    added_fastapi = added("fastapi+aiva", "fastapi")
    ratios = [f / s for f, s in zip(added_fastapi, added_starlette, strict=True)]
    for name, values in figures.items():
        print(f"{name:16s} {statistics.median(values):7.1f} CPU us/request", file=out)
    print(
        f"aiva adds {statistics.median(added_fastapi):.1f} us on FastAPI against "
        f"{statistics.median(added_starlette):.1f} on Starlette: "
        f"{statistics.median(ratios):.2f}x (per round "
        f"{', '.join(f'{r:.2f}' for r in ratios)}; limit 1.10x)",
        file=out,
    )
    print(span_check(spans), file=out)


def span_check(spans: list[SpanCosts]) -> str:
    """The client span against aiva's server span, with the span alone for reference."""
    client = statistics.median(c.client for c in spans)
    server = statistics.median(c.server for c in spans)
    alone = statistics.median(c.span_alone for c in spans)
    ratios = [c.client / c.server for c in spans if c.server > 0]
    ratio = statistics.median(ratios) if ratios else float("nan")
    verdict = "PASS" if ratio <= 1.0 else "FAIL"
    return (
        f"client span {client:+.1f} us against aiva's server span {server:+.1f} (traces over "
        f"bare): {ratio:.2f}x (per round {', '.join(f'{r:.2f}' for r in ratios)}): {verdict} "
        f"(limit 1.00x); the server span over aiva with telemetry off: {alone:+.1f}"
    )


if __name__ == "__main__":
    main()
