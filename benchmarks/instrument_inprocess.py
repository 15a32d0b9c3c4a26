"""In-process check of issue #10's two cost criteria, without the network in the way.

`benchmarks/overhead` measures them under wrk, where an uninstrumented FastAPI request
or httpx call varies more between rounds (103 to 148 CPU µs, 857 to 878 µs) than the
differences being compared. Here the ASGI app is called directly on one core, and
the client span is timed around a transport that answers at once:

1. CPU µs aiva adds per request on FastAPI (`instrument`) against on Starlette
   (`create_app`'s way: `instrument` on a Starlette app), same route, same settings
   (traces, Prometheus reader, the JSON access line to /dev/null);
2. CPU µs one httpx client span adds (aiva's wrapper: span, `traceparent`, duration
   point) against one aiva server span (HttpTelemetry.start_span + end_span), same
   SDK provider and batch processor.

Rounds are interleaved; each figure is the median over rounds. Run:
`taskset -c 0 python benchmarks/instrument_inprocess.py [--rounds 7]`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROUTE = "/items/1"
SETTINGS_ENV = {
    "AIVA_HEALTH__CHECKS__CPU__ENABLED": "false",
    "AIVA_TELEMETRY__INSTRUMENTATIONS": "[]",
    "AIVA_TELEMETRY__LOGS__LEVEL": "INFO",
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


async def per_request_us(
    app: Any, requests: int, headers: list[tuple[bytes, bytes]] | None = None
) -> float:
    """CPU µs per request, the app's lifespan running, called as a server would.

    `headers`: the request head's (default: a bare Host)."""
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
    gc.collect()
    gc.freeze()
    started = time.process_time()
    for _ in range(requests):
        await app({**scope, "state": dict(state)}, receive, send)
    spent = time.process_time() - started
    gc.unfreeze()
    await inbox.put({"type": "lifespan.shutdown"})
    await lifespan
    return spent / requests * 1e6


def span_costs(calls: int) -> tuple[float, float]:
    """(client span µs, server span µs) on one SDK provider with a batch processor."""
    import httpx
    from opentelemetry import context, trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from aiva.telemetry.histogram import ProducedHistogram
    from aiva.telemetry.http import HttpTelemetry
    from aiva.telemetry.httpx_client import _ClientCalls
    from aiva.telemetry.metrics import client_duration_histogram

    class Discard(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Discard()))
    from opentelemetry.metrics import NoOpMeterProvider

    produced: ProducedHistogram = client_duration_histogram()
    client = _ClientCalls(provider, NoOpMeterProvider(), produced)
    server = HttpTelemetry(provider, NoOpMeterProvider(), ())
    response = httpx.Response(200, extensions={"http_version": b"HTTP/1.1"})
    parent = provider.get_tracer("bench").start_span("parent")
    token = context.attach(trace.set_span_in_context(parent))
    scope = {"path": ROUTE, "scheme": "http", "query_string": b"", "client": ("127.0.0.1", 1)}

    def one_client() -> None:
        call = client.start(httpx.Request("GET", "http://127.0.0.1:8080" + ROUTE))
        call.end(response)

    def one_request_object() -> None:
        httpx.Request("GET", "http://127.0.0.1:8080" + ROUTE)

    def one_server() -> None:
        span, span_token = server.start_span("GET", scope, None)
        server.end_span(span, span_token, "GET", "/items/{item_id}", 200, None)

    def timed(work: Callable[[], None]) -> float:
        started = time.process_time()
        for _ in range(calls):
            work()
        return (time.process_time() - started) / calls * 1e6

    client_us = timed(one_client) - timed(one_request_object)  # the request is the user's
    server_us = timed(one_server)
    context.detach(token)
    provider.shutdown()
    return client_us, server_us


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=5000)
    opts = parser.parse_args()
    os.environ.update(SETTINGS_ENV)
    sys.stderr = Path(os.devnull).open("w")  # the access line's console output  # noqa: SIM115
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
    spans: list[tuple[float, float]] = []
    for _ in range(opts.rounds):
        for name, make in makers.items():
            figures[name].append(asyncio.run(per_request_us(make(), opts.requests)))
        spans.append(span_costs(opts.requests * 2))

    def added(ours: str, base: str) -> list[float]:
        return [a - b for a, b in zip(figures[ours], figures[base], strict=True)]

    added_starlette = added("starlette+aiva", "starlette")
    added_fastapi = added("fastapi+aiva", "fastapi")
    ratios = [f / s for f, s in zip(added_fastapi, added_starlette, strict=True)]
    out = sys.__stdout__
    assert out is not None
    for name, values in figures.items():
        print(f"{name:16s} {statistics.median(values):7.1f} CPU us/request", file=out)
    print(
        f"aiva adds {statistics.median(added_fastapi):.1f} us on FastAPI against "
        f"{statistics.median(added_starlette):.1f} on Starlette: "
        f"{statistics.median(ratios):.2f}x (per round "
        f"{', '.join(f'{r:.2f}' for r in ratios)}; limit 1.10x)",
        file=out,
    )
    client = [c for c, _ in spans]
    server = [s for _, s in spans]
    span_ratios = [c / s for c, s in spans]
    print(
        f"client span {statistics.median(client):.1f} us against aiva's server span "
        f"{statistics.median(server):.1f}: {statistics.median(span_ratios):.2f}x (per round "
        f"{', '.join(f'{r:.2f}' for r in span_ratios)}; limit 1.00x); against all aiva "
        f"adds to a Starlette request ({statistics.median(added_starlette):.1f} us): "
        f"{statistics.median(client) / statistics.median(added_starlette):.2f}x",
        file=out,
    )


if __name__ == "__main__":
    main()
