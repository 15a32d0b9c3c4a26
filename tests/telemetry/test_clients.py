"""Client spans and traceparent through the contrib instrumentors, against real servers."""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import threading
import time
import typing
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis
import redis.asyncio as aioredis
import uvicorn
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from aiva import create_app
from aiva.errors import SettingsError
from aiva.settings import Settings, load_settings
from aiva.settings.model import ClientLibrary
from aiva.telemetry.clients import CLIENT_LIBRARIES, client_libraries, instrument_clients
from infra.ports import LOOPBACK, free_port
from infra.postgres import Postgres
from infra.redis import RedisServer
from infra.rotel import Rotel
from tests.test_cli import aiva as run_aiva

HTTPX_SCOPE = "aiva.httpx"
ASYNCPG_SCOPE = "opentelemetry.instrumentation.asyncpg"
REDIS_SCOPE = "opentelemetry.instrumentation.redis"
REDIS_PASSWORD = "redis-s3cret"
PG_PASSWORD = "pg-s3cret"
URL_PASSWORD = "url-s3cret"
QUERY_PASSWORD = "query-s3cret"


def settings(**environ: str) -> Settings:
    return load_settings(environ, config_dir="/nonexistent").settings


def instrumented(name: ClientLibrary) -> bool:
    return bool(CLIENT_LIBRARIES[name].instrumentor().is_instrumented_by_opentelemetry)


# --- the setting ----------------------------------------------------------------


def test_unknown_name_is_a_settings_error() -> None:
    variable = "AIVA_TELEMETRY__INSTRUMENTATIONS"
    with pytest.raises(SettingsError) as caught:
        settings(**{variable: '["httpx", "requests"]'})
    assert [str(p) for p in caught.value.problems] == [
        "telemetry.instrumentations: must be auto or a list of: asyncpg, httpx, redis, "
        f"got ['httpx', 'requests'] (from environment variable {variable})"
    ]


def test_the_setting_through_the_cli(tmp_path: Path) -> None:
    def aiva(*args: str, value: str) -> subprocess.CompletedProcess[str]:
        return run_aiva(*args, config=tmp_path, env={"AIVA_TELEMETRY__INSTRUMENTATIONS": value})

    refused = aiva("config", "validate", value='["httpx", "requests"]')
    assert refused.returncode == 2
    assert refused.stderr.startswith(
        "settings error: telemetry.instrumentations: must be auto or a list of: asyncpg, httpx, redis"
    )
    shown = aiva("config", "show", "--sources", value='["httpx"]')
    assert shown.returncode == 0, shown.stderr
    assert (
        "telemetry.instrumentations = [httpx]    "
        "# environment variable AIVA_TELEMETRY__INSTRUMENTATIONS"
    ) in shown.stdout.splitlines()


def test_auto_is_every_installed_library_and_a_list_is_taken_as_given() -> None:
    assert settings().telemetry.instrumentations == "auto"
    assert client_libraries(settings().telemetry.instrumentations) == ("httpx", "asyncpg", "redis")
    chosen = settings(AIVA_TELEMETRY__INSTRUMENTATIONS='["redis", "httpx", "redis"]')
    assert client_libraries(chosen.telemetry.instrumentations) == ("redis", "httpx")
    assert (
        client_libraries(settings(AIVA_TELEMETRY__INSTRUMENTATIONS="[]").telemetry.instrumentations)
        == ()
    )


def test_the_setting_names_exactly_the_rows_of_the_table() -> None:
    assert set(typing.get_args(ClientLibrary)) == set(CLIENT_LIBRARIES)


Providers = tuple[TracerProvider, MeterProvider, InMemorySpanExporter, InMemoryMetricReader]


@pytest.fixture
def providers() -> Iterator[Providers]:
    """Private SDK providers backed by memory (never the globals)."""
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield tracer_provider, meter_provider, spans, reader
    tracer_provider.shutdown()
    meter_provider.shutdown()


def test_an_empty_list_instruments_nothing_and_auto_all_three(providers: Providers) -> None:
    tracer_provider, meter_provider, _, _ = providers
    none = instrument_clients((), tracer_provider, meter_provider)
    assert none.names == ()
    assert not any(instrumented(name) for name in CLIENT_LIBRARIES)
    every = instrument_clients(client_libraries("auto"), tracer_provider, meter_provider)
    try:
        assert every.names == ("httpx", "asyncpg", "redis")
        assert all(instrumented(name) for name in CLIENT_LIBRARIES)
    finally:
        assert every.uninstrument() == []
    assert not any(instrumented(name) for name in CLIENT_LIBRARIES)
    assert every.uninstrument() == []  # once only


def test_the_process_keeps_its_own_semantic_convention_mode(providers: Providers) -> None:
    # aiva asks for the stable conventions for its own instrumentors only: the mode
    # other instrumentations in the process read is left as the environment set it.
    from opentelemetry.instrumentation import _semconv

    signals = (_semconv._OpenTelemetryStabilitySignalType.HTTP,)
    before = _semconv._get_semconv_opt_in_modes(signals)
    done = instrument_clients(("httpx",), *providers[:2])
    try:
        assert _semconv._get_semconv_opt_in_modes(signals) == before
    finally:
        done.uninstrument()


def test_disabled_telemetry_instruments_nothing() -> None:
    done = instrument_clients(
        client_libraries("auto"), trace.NoOpTracerProvider(), metrics.NoOpMeterProvider()
    )
    assert done.names == ()
    assert not any(instrumented(name) for name in CLIENT_LIBRARIES)


# --- real servers ---------------------------------------------------------------


class Downstream:
    """A plain HTTP server on a free port that keeps the headers of every request."""

    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []
        seen = self.headers

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append({k.lower(): v for k, v in self.headers.items()})
                body = b"downstream"
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.url = f"http://{LOOPBACK}:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Downstream:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@contextmanager
def serving(app: Starlette) -> Iterator[str]:
    """Serve the app with uvicorn in a thread (its lifespan included); yields its URL.

    Leaving the block runs the lifespan's shutdown: telemetry is flushed and unpatched.
    """
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host=LOOPBACK, port=port, log_config=None, lifespan="on")
    )
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the app did not start within 15 s"
    try:
        yield f"http://{LOOPBACK}:{port}"
    finally:
        server.should_exit = True
        thread.join(20)
    assert not thread.is_alive()


def get(url: str, headers: dict[str, str] | None = None) -> bytes:
    """A GET through urllib: the test's own calls stay out of the instrumented httpx."""
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        body: bytes = response.read()
        return body


def require_password(server: RedisServer, password: str) -> str:
    """Turn on AUTH on a running redis (CONFIG SET requirepass); its URL with the password."""
    command = [b"CONFIG", b"SET", b"requirepass", password.encode()]
    payload = b"*%d\r\n" % len(command) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in command)
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(payload)
        assert sock.recv(64).startswith(b"+OK")
    return f"redis://:{password}@{server.host}:{server.port}/0"


def otlp_settings(collector: Rotel, **more: str) -> Settings:
    return settings(
        AIVA_TELEMETRY__OTLP__ENDPOINT=collector.grpc_endpoint,
        AIVA_TELEMETRY__OTLP__TIMEOUT_S="2",
        AIVA_TELEMETRY__METRICS__EXPORT_INTERVAL_S="1",
        AIVA_HEALTH__CHECKS__CPU__ENABLED="false",
        OTEL_SERVICE_NAME="clients-test",
        **more,
    )


# In-process: on the plain pipeline the stable conventions come through
# OTEL_SEMCONV_STABILITY_OPT_IN, which takes only if nothing in the process read it first,
# and earlier tests in this process have (the documented limit of the plain path).
@pytest.mark.fast_layer("semconv_mode")
def test_one_trace_holds_the_server_span_and_its_client_spans(
    rotel: Callable[[], Rotel],
    postgres: Callable[[], Postgres],
    redis_server: Callable[[], RedisServer],
) -> None:
    collector, database, cache = rotel(), postgres(), redis_server()
    redis_url = require_password(cache, REDIS_PASSWORD)
    # The test cluster trusts every local connection: the password is accepted, unused.
    dsn = database.dsn.replace("postgres@", f"postgres:{PG_PASSWORD}@")
    assert PG_PASSWORD in dsn

    with Downstream() as downstream:
        host = downstream.url.removeprefix("http://")
        target = f"http://user:{URL_PASSWORD}@{host}/down?password={QUERY_PASSWORD}"

        async def work(request: Request) -> JSONResponse:
            async with httpx.AsyncClient() as client:
                answer = await client.get(target, timeout=5)
            connection = await asyncpg.connect(dsn)
            try:
                number = await connection.fetchval("SELECT 41 + 1")
            finally:
                await connection.close()
            cache_client = aioredis.Redis.from_url(redis_url)
            try:
                await cache_client.set("clients-test", "1")
                pong = await cache_client.ping()
            finally:
                await cache_client.aclose()
            return JSONResponse({"downstream": answer.text, "number": number, "pong": pong})

        app = create_app(otlp_settings(collector), routes=[Route("/work", work)])
        with serving(app) as url:
            assert instrumented("httpx") and instrumented("asyncpg") and instrumented("redis")
            assert (
                get(url + "/work", {"baggage": "tenant=acme"})
                == b'{"downstream":"downstream","number":42,"pong":true}'
            )
        # The lifespan's shutdown took every patch off again.
        assert not any(instrumented(name) for name in CLIENT_LIBRARIES)
        assert not hasattr(httpx.AsyncHTTPTransport.handle_async_request, "__wrapped__")

    [server] = collector.wait_for_spans(lambda s: s["name"] == "GET /work")
    assert server["kind"] == "SERVER"
    in_trace = collector.wait_for_spans(
        lambda s: s["trace_id"] == server["trace_id"] and s["kind"] == "CLIENT", count=4
    )
    by_scope: dict[str, list[dict[str, Any]]] = {}
    for span in in_trace:
        assert span["parent_id"] == server["span_id"], span
        by_scope.setdefault(span["scope"], []).append(span)
    [http_span] = by_scope[HTTPX_SCOPE]
    [sql_span] = by_scope[ASYNCPG_SCOPE]
    assert sorted(s["name"] for s in by_scope[REDIS_SCOPE]) == ["PING", "SET"]

    # The downstream server continued the same trace, parented on the client span.
    [headers] = downstream.headers
    version, trace_id, parent_id, _flags = headers["traceparent"].split("-")
    assert (version, trace_id, parent_id) == ("00", server["trace_id"], http_span["span_id"])
    assert headers["baggage"] == "tenant=acme"  # the caller's baggage travels on

    # Stable conventions, without any opt-in variable.
    attributes = http_span["attributes"]
    assert http_span["name"] == "GET"
    assert attributes["http.request.method"] == "GET"
    assert attributes["http.response.status_code"] == 200
    assert attributes["server.address"] == LOOPBACK
    assert "http.url" not in attributes and "http.method" not in attributes
    assert sql_span["attributes"]["db.system.name"] == "postgresql"
    assert sql_span["attributes"]["db.query.text"] == "SELECT 41 + 1"
    assert sql_span["attributes"]["db.namespace"] == "postgres"
    assert "db.statement" not in sql_span["attributes"]
    redis_attributes = by_scope[REDIS_SCOPE][0]["attributes"]
    assert redis_attributes["db.system.name"] == "redis"
    assert "db.system" not in redis_attributes
    durations = collector.wait_for_metric("http.client.request.duration")
    assert {d["unit"] for d in durations} == {"s"}

    # No credential anywhere in what reached the collector: user, password and the
    # `password=` parameter are REDACTED.
    assert attributes["url.full"] == f"http://REDACTED:REDACTED@{host}/down?password=REDACTED"
    dump = collector.output()
    for secret in (REDIS_PASSWORD, PG_PASSWORD, URL_PASSWORD, QUERY_PASSWORD):
        assert secret not in dump, secret


def test_sync_clients_make_client_spans_until_uninstrumented(
    providers: Providers, redis_server: Callable[[], RedisServer]
) -> None:
    tracer_provider, meter_provider, spans, reader = providers
    cache = redis_server()
    done = instrument_clients(("httpx", "redis"), tracer_provider, meter_provider)
    assert done.names == ("httpx", "redis")
    tracer = tracer_provider.get_tracer("test")
    with Downstream() as downstream:
        try:
            with tracer.start_as_current_span("parent") as parent:
                with httpx.Client() as client:
                    assert client.get(downstream.url + "/sync", timeout=5).text == "downstream"
                assert redis.Redis.from_url(cache.url).ping() is True
        finally:
            assert done.uninstrument() == []
        before = len(spans.get_finished_spans())
        # Unpatched: the same calls make no span and send no traceparent.
        with httpx.Client() as client:
            client.get(downstream.url + "/after", timeout=5)
        redis.Redis.from_url(cache.url).ping()
        assert len(spans.get_finished_spans()) == before
        assert "traceparent" in downstream.headers[0]
        assert "traceparent" not in downstream.headers[1]

    clients = [s for s in spans.get_finished_spans() if s.kind == trace.SpanKind.CLIENT]
    assert sorted((s.instrumentation_scope.name, s.name) for s in clients) == [  # type: ignore[union-attr]
        (HTTPX_SCOPE, "GET"),
        (REDIS_SCOPE, "PING"),
    ]
    parent_id = parent.get_span_context().span_id
    assert all(s.parent is not None and s.parent.span_id == parent_id for s in clients)
    data = reader.get_metrics_data()
    names = {
        m.name
        for resource in (data.resource_metrics if data else [])
        for scope in resource.scope_metrics
        for m in scope.metrics
    }
    assert "http.client.request.duration" in names
    assert "http.client.duration" not in names


def test_instrumentation_already_on_is_left_to_its_owner(
    providers: Providers, caplog: pytest.LogCaptureFixture
) -> None:
    tracer_provider, meter_provider, _, _ = providers
    first = instrument_clients(("httpx",), tracer_provider, meter_provider)
    try:
        with caplog.at_level(logging.INFO, logger="aiva.telemetry.clients"):
            second = instrument_clients(("httpx",), tracer_provider, meter_provider)
        assert second.names == ()
        assert any(
            "httpx is already instrumented" in r.getMessage()
            and "keep that instrumentation's providers" in r.getMessage()
            for r in caplog.records
        )
        assert second.uninstrument() == []
        assert instrumented("httpx")  # the second app took nothing off
    finally:
        first.uninstrument()
    assert not instrumented("httpx")


def test_health_checks_make_no_client_spans(
    rotel: Callable[[], Rotel],
    postgres: Callable[[], Postgres],
    redis_server: Callable[[], RedisServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "200")  # read by the SDK's batch processor
    collector, database, cache = rotel(), postgres(), redis_server()
    configured = otlp_settings(
        collector,
        AIVA_DATABASE__HOST=database.host,
        AIVA_DATABASE__PORT=str(database.port),
        AIVA_DATABASE__DATABASE=database.database,
        AIVA_DATABASE__USERNAME=database.user,
        AIVA_REDIS__URL=cache.url,
        AIVA_HEALTH__INTERVAL_S="0.2",
    )
    assert set(configured.health.checks) >= {"postgres", "redis"}
    with serving(create_app(configured)):
        assert instrumented("asyncpg") and instrumented("redis")

        def two_rounds(received: Rotel) -> bool:
            names = [s["name"] for s in received.spans()]
            return all(names.count(f"health.check {n}") >= 2 for n in ("postgres", "redis"))

        collector.wait_for(two_rounds, timeout=15)

    checks = [s for s in collector.spans() if s["name"].startswith("health.check ")]
    traces = {s["trace_id"] for s in checks}
    assert {s["name"] for s in checks} >= {"health.check postgres", "health.check redis"}
    clients = [
        s for s in collector.spans() if s["scope"] in (ASYNCPG_SCOPE, REDIS_SCOPE, HTTPX_SCOPE)
    ]
    assert clients == []
    assert not [s for s in collector.spans() if s["trace_id"] in traces and s["kind"] == "CLIENT"]


def test_the_contrib_httpx_variables_aiva_does_not_honour_are_named_at_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    environ = {
        "AIVA_HEALTH__CHECKS__CPU__ENABLED": "false",
        "OTEL_PYTHON_HTTPX_EXCLUDED_URLS": "healthcheck",
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST": "x-tenant",
        "OTEL_SEMCONV_STABILITY_OPT_IN": "database/dup",  # honoured: not named
    }
    loaded = load_settings(environ, config_dir="/nonexistent")
    assert loaded.unsupported == (
        "OTEL_PYTHON_HTTPX_EXCLUDED_URLS",
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST",
    )
    with_http = load_settings(
        {"OTEL_SEMCONV_STABILITY_OPT_IN": "database/dup, http/dup"}, config_dir="/nonexistent"
    )
    assert with_http.unsupported == ("OTEL_SEMCONV_STABILITY_OPT_IN",)
    with (
        caplog.at_level(logging.WARNING, logger="aiva.web.lifespan"),
        TestClient(create_app(loaded)),
    ):
        pass
    [warning] = [
        r.getMessage()
        for r in caplog.records
        if "not supported by aiva as settings" in r.getMessage()
    ]
    assert "OTEL_PYTHON_HTTPX_EXCLUDED_URLS" in warning
    assert "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST" in warning
