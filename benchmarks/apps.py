"""Apps under test for benchmarks/overhead: one JSON route, bare or with stock OTel wiring."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

# Every configuration serves this route shape (the same as aiva's demo route).
ROUTE = "/api/demo/items/{item_id}"
METRICS_PATH = "/metrics"
# Metric export interval for the OTLP metric reader: aiva's default (15 s).
METRIC_EXPORT_INTERVAL_MS = 15_000

logger = logging.getLogger("benchmarks.apps")


class _Shutdown(Protocol):
    """A provider that flushes and stops on shutdown()."""

    def shutdown(self) -> Any: ...


Endpoint = Callable[[Request], Any]


async def _item(request: Request) -> Response:
    """The demo route: a small JSON body echoing the path parameter."""
    return JSONResponse({"item_id": request.path_params["item_id"], "name": "demo"})


async def _item_logged(request: Request) -> Response:
    """The demo route plus one INFO log record per request (the 'full pipeline' shape)."""
    item_id = request.path_params["item_id"]
    logger.info("served item %s", item_id)
    return JSONResponse({"item_id": item_id, "name": "demo"})


def _lifespan(providers: Sequence[_Shutdown]) -> Callable[[Starlette], Any]:
    """A lifespan that shuts every provider down (flushing spans, metrics, logs) on exit."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            for provider in providers:
                provider.shutdown()

    return lifespan


def _starlette(
    endpoint: Endpoint,
    providers: Sequence[_Shutdown] = (),
    extra_routes: Sequence[Route] = (),
    middleware: Sequence[Middleware] = (),
) -> Starlette:
    """A Starlette app serving ROUTE with endpoint, plus extra routes, shutting providers down."""
    return Starlette(
        routes=[Route(ROUTE, endpoint), *extra_routes],
        middleware=list(middleware),
        lifespan=_lifespan(providers),
    )


def _tracer_provider() -> Any:
    """SDK tracer provider (sampler and resource from OTEL_* variables) + batch OTLP gRPC."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def _meter_provider(otlp: bool) -> Any:
    """SDK meter provider with a PrometheusMetricReader (and a periodic OTLP gRPC reader)."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import Resource

    readers: list[Any] = [PrometheusMetricReader()]
    if otlp:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        readers.append(
            PeriodicExportingMetricReader(
                OTLPMetricExporter(), export_interval_millis=METRIC_EXPORT_INTERVAL_MS
            )
        )
    return MeterProvider(metric_readers=readers, resource=Resource.create())


def _logger_provider() -> Any:
    """SDK logger provider + batch OTLP gRPC, attached to the root logger with a console handler."""
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.resources import Resource

    provider = LoggerProvider(resource=Resource.create())
    provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter()))
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    root.addHandler(console)
    root.addHandler(LoggingHandler(level=logging.INFO, logger_provider=provider))
    return provider


async def _metrics(request: Request) -> Response:
    """Prometheus exposition of the default prometheus_client registry."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def _stock(endpoint: Endpoint, metrics: str, providers: list[_Shutdown]) -> Starlette:
    """Contrib StarletteInstrumentor on an app; metrics is 'none', 'prometheus' or 'full'."""
    # The stock way to keep the scrape endpoint out of traces (read when the module is imported).
    os.environ.setdefault("OTEL_PYTHON_STARLETTE_EXCLUDED_URLS", METRICS_PATH)
    from opentelemetry.instrumentation.starlette import StarletteInstrumentor
    from opentelemetry.metrics import NoOpMeterProvider

    tracer_provider = _tracer_provider()
    meter_provider = (
        NoOpMeterProvider() if metrics == "none" else _meter_provider(metrics == "full")
    )
    routes = [] if metrics == "none" else [Route(METRICS_PATH, _metrics)]
    all_providers = [tracer_provider, *providers]
    if metrics != "none":
        all_providers.append(meter_provider)
    app = _starlette(endpoint, all_providers, routes)
    StarletteInstrumentor.instrument_app(
        app, tracer_provider=tracer_provider, meter_provider=meter_provider
    )
    return app


def bare() -> Starlette:
    """Plain Starlette, no OpenTelemetry at all: the baseline."""
    return _starlette(_item)


def stock_traces() -> Starlette:
    """Stock contrib instrumentation, traces only (BatchSpanProcessor, OTLP gRPC)."""
    return _stock(_item, "none", [])


def stock_traces_prom() -> Starlette:
    """Stock traces plus metrics through a PrometheusMetricReader (served at /metrics)."""
    return _stock(_item, "prometheus", [])


def stock_full() -> Starlette:
    """Stock traces, metrics to Prometheus and OTLP, one INFO log per request to console + OTLP."""
    return _stock(_item_logged, "full", [_logger_provider()])


def starlette_lean() -> Starlette:
    """Starlette's own experimental OpenTelemetryMiddleware with BatchSpanProcessor/OTLP gRPC."""
    from starlette.middleware.opentelemetry import OpenTelemetryMiddleware

    tracer_provider = _tracer_provider()
    middleware = [Middleware(OpenTelemetryMiddleware, tracer_provider=tracer_provider)]
    return _starlette(_item, [tracer_provider], middleware=middleware)


# --- the pairs compared with their own baseline --------------------------------------------------


def fastapi_app() -> Any:
    """Plain FastAPI serving ROUTE the FastAPI way: bare under uvicorn, and the app that
    `aiva serve apps:fastapi_app --factory` instruments (`aiva.instrument(app, settings)`)."""
    from fastapi import FastAPI

    app = FastAPI()

    @app.get(ROUTE)
    async def read_item(item_id: str) -> dict[str, str]:
        return {"item_id": item_id, "name": "demo"}

    return app


# The local upstream's address (benchmarks/upstream.py), set by the benchmark.
UPSTREAM_VARIABLE = "BENCH_UPSTREAM_URL"


async def _call_upstream(request: Request) -> Response:
    """ROUTE making one GET to the upstream with the lifespan's client."""
    upstream = await request.state.upstream.get(request.state.upstream_url)
    upstream.raise_for_status()  # a failing upstream shows as a 500 (wrk counts it)
    return JSONResponse({"item_id": request.path_params["item_id"], "name": upstream.text})


@contextlib.asynccontextmanager
async def _client_lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    """One httpx.AsyncClient for the app's life, handed to requests through state."""
    import httpx

    # trust_env=False: no proxy variable of the calling shell may reroute loopback calls.
    async with httpx.AsyncClient(trust_env=False) as client:
        yield {"upstream": client, "upstream_url": os.environ[UPSTREAM_VARIABLE]}


def upstream_call() -> Starlette:
    """ROUTE calling the upstream once over httpx, for `aiva serve apps:upstream_call
    --factory`: `create_app`'s own construction (instrument on a plain Starlette) with
    the client's lifespan, which `create_app` takes no argument for."""
    return Starlette(routes=[Route(ROUTE, _call_upstream)], lifespan=_client_lifespan)
