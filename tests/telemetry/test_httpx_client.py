"""aiva's httpx client spans against a real local HTTP server: errors, cancellation,
streaming, credentials, and living beside the contrib instrumentor."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from opentelemetry import baggage, propagate
from opentelemetry import context as otel_context
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode, format_span_id, format_trace_id
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from aiva.telemetry.httpx_client import SCOPE, HttpxInstrumentation
from aiva.telemetry.metrics import client_duration_histogram
from aiva.telemetry.propagation import build_propagator
from infra.ports import LOOPBACK, free_port


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # what network.protocol.version must then say

    def do_GET(self) -> None:
        if self.path.startswith("/slow"):
            time.sleep(2)
        body = b"x" * 1000 if self.path.startswith("/big") else b"ok"
        if self.path.startswith("/echo"):  # the propagation headers the call carried
            body = "|".join(
                f"{name}={self.headers.get(name, '')}"
                for name in ("traceparent", "tracestate", "baggage", "x-b3-traceid")
            ).encode()
        self.send_response(500 if self.path.startswith("/boom") else 200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return None


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        return None  # a client that gave up (the cancellation test) is no error here


@pytest.fixture
def server() -> Iterator[str]:
    httpd = _Server((LOOPBACK, 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://{LOOPBACK}:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """aiva's httpx wrapper on, over private providers; taken off afterwards."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    wrapper = HttpxInstrumentation()
    wrapper.instrument(
        tracer_provider=provider,
        meter_provider=meter_provider,
        client_duration=client_duration_histogram(),
    )
    try:
        yield exporter
    finally:
        wrapper.uninstrument()
        provider.shutdown()
        meter_provider.shutdown()


def clients(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [
        s
        for s in exporter.get_finished_spans()
        if s.kind is SpanKind.CLIENT
        and s.instrumentation_scope is not None
        and s.instrumentation_scope.name == SCOPE
    ]


def test_statuses_errors_and_streams(server: str, spans: InMemorySpanExporter) -> None:
    refused = f"http://{LOOPBACK}:{free_port()}"
    with httpx.Client(timeout=5) as client:
        assert client.get(server + "/boom").status_code == 500
        with pytest.raises(httpx.ConnectError):
            client.get(refused + "/nobody")
        with client.stream("GET", server + "/big") as streamed:
            assert len(streamed.read()) == 1000
    boom, refused_span, big = clients(spans)
    assert boom.attributes is not None and boom.attributes["error.type"] == "500"
    assert boom.status.status_code is StatusCode.ERROR
    assert refused_span.attributes is not None
    assert refused_span.attributes["error.type"] == "httpx.ConnectError"
    assert [e.name for e in refused_span.events] == ["exception"]
    assert big.attributes is not None and big.attributes["http.response.status_code"] == 200
    assert big.attributes["network.protocol.version"] == "1.1"


def test_a_cancelled_call_still_ends_its_span(server: str, spans: InMemorySpanExporter) -> None:
    async def call() -> None:
        async with httpx.AsyncClient() as client:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(client.get(server + "/slow"), 0.3)

    asyncio.run(call())
    [cancelled] = clients(spans)
    assert cancelled.attributes is not None
    assert cancelled.attributes["error.type"] == "asyncio.exceptions.CancelledError"


def test_credentials_never_reach_the_span(server: str, spans: InMemorySpanExporter) -> None:
    host = server.removeprefix("http://")
    with httpx.Client(timeout=5) as client:
        client.get(f"http://user:pw-1@{host}/q?token=t-1&Api-Key=k-1&page=2&password=p-1")
    [span] = clients(spans)
    assert span.attributes is not None
    full = str(span.attributes["url.full"])
    assert full == (
        f"http://REDACTED:REDACTED@{host}/q"
        "?token=REDACTED&Api-Key=REDACTED&page=2&password=REDACTED"
    )


def test_unknown_methods_are_reported_as_the_conventions_say(
    server: str, spans: InMemorySpanExporter
) -> None:
    with httpx.Client(timeout=5) as client:
        client.request("PURGE", server + "/")
    [span] = clients(spans)
    assert span.name == "HTTP"
    assert span.attributes is not None
    assert span.attributes["http.request.method"] == "_OTHER"
    assert span.attributes["http.request.method_original"] == "PURGE"


def test_the_contrib_wrapper_on_top_is_left_in_place() -> None:
    original = httpx.AsyncHTTPTransport.__dict__["handle_async_request"]
    ours = HttpxInstrumentation()
    ours.instrument(tracer_provider=TracerProvider(), meter_provider=MeterProvider())
    contrib = HTTPXClientInstrumentor()
    contrib.instrument()
    try:
        ours.uninstrument()  # under the contrib's wrapper: must not take it off
        assert contrib.is_instrumented_by_opentelemetry
        assert hasattr(httpx.AsyncHTTPTransport.handle_async_request, "__wrapped__")
    finally:
        contrib.uninstrument()
        ours.uninstrument()  # outermost again now
    assert httpx.AsyncHTTPTransport.__dict__["handle_async_request"] is original


class _Marker(TextMapPropagator):
    """A user's own format: its header says which propagator wrote it."""

    def extract(self, carrier: object, context: object = None, getter: object = None) -> object:
        raise NotImplementedError  # never called: only injection is under test

    def inject(self, carrier: object, context: object = None, setter: object = None) -> None:
        carrier["x-b3-traceid"] = "from-a-user-propagator"  # type: ignore[index]

    @property
    def fields(self) -> set[str]:
        return {"x-b3-traceid"}


@pytest.mark.parametrize(
    ("global_textmap", "bagged", "expected"),
    [
        ("aiva", False, "traceparent"),  # the direct path
        ("aiva", True, "traceparent baggage"),  # baggage to write: the propagators
        ("user-tracecontext", True, "traceparent"),  # a user's, set after aiva's
        ("user-own", True, "marker"),
    ],
    ids=["aiva-w3c", "aiva-w3c-baggage", "user-tracecontext", "user-own"],
)
def test_the_call_carries_the_global_formats_headers(
    server: str, spans: InMemorySpanExporter, global_textmap: str, bagged: bool, expected: str
) -> None:
    """aiva's own W3C formats are written directly; any other global propagator that a
    user sets (after aiva set its own) is asked as the API asks it."""
    textmaps: dict[str, TextMapPropagator] = {
        "aiva": build_propagator(("tracecontext", "baggage")),
        "user-tracecontext": TraceContextTextMapPropagator(),
        "user-own": _Marker(),
    }
    before = propagate.get_global_textmap()
    propagate.set_global_textmap(textmaps[global_textmap])
    entries = baggage.set_baggage("tenant", "t-7") if bagged else otel_context.Context()
    token = otel_context.attach(entries)
    try:
        with httpx.Client(timeout=5) as client:
            echoed = dict(
                item.split("=", 1) for item in client.get(server + "/echo").text.split("|")
            )
    finally:
        otel_context.detach(token)
        propagate.set_global_textmap(before)
    [span] = clients(spans)
    context = span.context
    assert context is not None
    ids = f"{format_trace_id(context.trace_id)}-{format_span_id(context.span_id)}"
    traceparent = f"00-{ids}-{context.trace_flags:02x}"
    if expected == "marker":
        assert echoed == {
            "traceparent": "", "tracestate": "", "baggage": "",
            "x-b3-traceid": "from-a-user-propagator",
        }  # fmt: skip
    else:
        assert echoed["traceparent"] == traceparent
        assert echoed["baggage"] == ("tenant=t-7" if "baggage" in expected else "")
        assert echoed["x-b3-traceid"] == ""
