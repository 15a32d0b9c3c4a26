"""The request telemetry's logic: methods, header parsing, exclusion rules, and the HTTP
server conventions' attributes on spans and metrics of in-memory SDK providers."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracerProvider

from aiva.settings.model import HttpSettings
from aiva.telemetry.http import (
    FORWARDED,
    HOST,
    KNOWN_METHODS,
    USER_AGENT,
    USER_AGENT_MAX,
    X_FORWARDED_HOST,
    X_FORWARDED_PROTO,
    HttpTelemetry,
    error_type,
    forwarded_for,
    forwarded_host,
    forwarded_parameter,
    forwarded_proto,
    normalise_method,
    parse_host,
    read_headers,
)
from aiva.telemetry.metrics import REQUEST_DURATION
from aiva.web.middleware import BodyBytes, declared_length


def test_unknown_methods_fold_into_other() -> None:
    assert normalise_method("GET") == "GET"
    assert normalise_method("PATCH") == "PATCH"
    assert normalise_method("FOOBAR") == "_OTHER"
    assert normalise_method("get") == "_OTHER"  # methods are case-sensitive


def test_read_headers_finds_request_id_and_propagation_headers() -> None:
    headers = [
        (b"host", b"x"),
        (b"x-request-id", b"abc"),
        (b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        (b"baggage", b"k=v"),
    ]
    request_id, carrier = read_headers(headers)
    assert request_id == b"abc"
    assert carrier == {
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "baggage": "k=v",
    }
    assert read_headers([(b"host", b"x")]) == (None, None)


def test_excluded_paths_cover_their_subpaths() -> None:
    http = HttpTelemetry(NoOpTracerProvider(), NoOpMeterProvider(), ["/livez", "/metrics"])
    assert http.excluded("/livez")
    assert http.excluded("/livez/redis")
    assert http.excluded("/metrics")
    assert not http.excluded("/livezz")
    assert not http.excluded("/api/metrics")
    assert not http.make_spans  # a no-op provider makes no spans at all


# --- the HTTP server conventions (issue 11) ------------------------------------------


class DemoFailure(Exception):
    """An exception outside builtins: error.type names its module."""


def test_known_methods_are_configurable_and_a_full_override() -> None:
    http = HttpTelemetry(
        NoOpTracerProvider(),
        NoOpMeterProvider(),
        [],
        settings=HttpSettings(("GET", "PROPFIND"), False, False),
    )
    assert http.method_of("PROPFIND") == "PROPFIND"
    assert http.method_of("GET") == "GET"
    assert http.method_of("POST") == "_OTHER"  # not added to the defaults: replacing them
    assert normalise_method("PROPFIND") == "_OTHER"
    assert normalise_method("QUERY") == "QUERY"


@pytest.mark.parametrize(
    ("value", "scheme", "expected"),
    [
        ("api.example:8443", "http", ("api.example", 8443)),
        ("api.example", "http", ("api.example", 80)),
        ("api.example", "https", ("api.example", 443)),
        ("api.example:", "https", ("api.example", 443)),
        ("192.0.2.1:8080", "http", ("192.0.2.1", 8080)),
        ("[2001:db8::1]:8443", "http", ("2001:db8::1", 8443)),
        ("[2001:db8::1]", "https", ("2001:db8::1", 443)),
        ("[::1]:", "http", ("::1", 80)),
        ("2001:db8::1", "http", ("2001:db8::1", 80)),  # unbracketed: no port to tell apart
        (" api.example:8443 ", "http", ("api.example", 8443)),
        ("api.example:abc", "http", ("api.example", None)),  # a bad port is left out
        ("api.example:70000", "http", ("api.example", None)),
        ("api.example:0", "http", ("api.example", None)),
        ("api.example:+80", "http", ("api.example", None)),
        ("api.example", "ftp", ("api.example", None)),  # no default port known
        ("", "http", None),
        (":8080", "http", None),
        ("[2001:db8::1", "http", None),
        ("[2001:db8::1]8443", "http", None),
    ],
)
def test_parse_host(value: str, scheme: str, expected: tuple[str, int | None] | None) -> None:
    assert parse_host(value, scheme) == expected


def test_parse_host_bounds_the_address() -> None:
    parsed = parse_host("a" * 5000 + ":8443", "http")
    assert parsed == ("a" * 255, 8443)


def test_forwarded_headers() -> None:
    forwarded = b'for=192.0.2.60;proto=https;host="api.example:8443", for=10.0.0.1;host=inner'
    assert forwarded_parameter(forwarded, "host") == "api.example:8443"  # the first element
    assert forwarded_parameter(forwarded, "proto") == "https"
    assert forwarded_parameter(b"For=192.0.2.60;Host=a.example", "host") == "a.example"
    assert forwarded_parameter(b"for=192.0.2.60", "host") is None
    assert forwarded_parameter(b'host=""', "host") is None

    assert forwarded_host({X_FORWARDED_HOST: b"api.example, proxy.internal"}) == b"api.example"
    assert forwarded_host({FORWARDED: forwarded, X_FORWARDED_HOST: b"other"}) == (
        b"api.example:8443"
    )
    assert forwarded_host({FORWARDED: b"for=192.0.2.60", X_FORWARDED_HOST: b"x"}) == b"x"
    assert forwarded_host({HOST: b"api.example"}) is None

    assert forwarded_proto({X_FORWARDED_PROTO: b"HTTPS, http"}) == "https"
    assert forwarded_proto({X_FORWARDED_PROTO: b"gopher"}) is None  # never a new scheme
    assert forwarded_proto({FORWARDED: b"proto=http", X_FORWARDED_PROTO: b"https"}) == "http"
    assert forwarded_proto({}) is None


def test_error_type_names_the_exception_or_the_5xx_status() -> None:
    assert error_type(RuntimeError("x"), 500) == "RuntimeError"  # builtins, as tracebacks say
    assert error_type(DemoFailure(), 500) == f"{DemoFailure.__module__}.DemoFailure"
    assert error_type(httpx.ConnectError("x"), 200) == "httpx.ConnectError"
    assert error_type(None, 503) == "503"
    assert error_type(None, 404) is None
    assert error_type(None, 200) is None


def test_read_headers_collects_the_span_headers_in_the_same_pass() -> None:
    headers = [
        (b"host", b"api.example:8443"),
        (b"user-agent", b"probe/1.0"),
        (b"host", b"second.example"),
        (b"accept", b"*/*"),
        (b"b3", b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
    ]
    collected: dict[bytes, bytes] = {}
    request_id, carrier = read_headers(headers, collected, frozenset({b"b3"}))
    assert request_id is None
    assert carrier == {"b3": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"}
    assert collected == {HOST: b"api.example:8443", USER_AGENT: b"probe/1.0"}  # first wins


def _spans() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _request(
    http: HttpTelemetry, method: str, headers: list[tuple[bytes, bytes]], **scope: Any
) -> tuple[dict[str, Any], str]:
    """One request through start_span/end_span as the middleware makes it."""
    collected: dict[bytes, bytes] = {}
    _, carrier = read_headers(headers, collected)
    full = {"method": method, "path": "/things/1", "scheme": "http", "http_version": "1.1",
            "client": ("192.0.2.7", 50000), "query_string": b"", **scope}  # fmt: skip
    normalised = http.method_of(method)
    scheme = http.scheme_of(full, collected)
    span, token = http.start_span(normalised, full, carrier, collected, scheme)
    http.end_span(span, token, normalised, "/things/{id}", 405, None)
    return full, scheme


def test_server_span_carries_the_conventions_attributes() -> None:
    provider, exporter = _spans()
    http = HttpTelemetry(provider, NoOpMeterProvider(), [])
    _request(
        http,
        "PROPFIND",
        [
            (b"host", b"api.example:8443"),
            (b"user-agent", b"x" * 5000),
            (b"x-forwarded-host", b"claimed.example"),  # not trusted by default
            (b"forwarded", b"proto=https;host=claimed.example"),
        ],
    )
    [span] = exporter.get_finished_spans()
    assert span.name == "HTTP /things/{id}"
    attributes = dict(span.attributes or {})
    assert attributes == {
        "http.request.method": "_OTHER",
        "http.request.method_original": "PROPFIND",
        "url.path": "/things/1",
        "url.scheme": "http",
        "client.address": "192.0.2.7",
        "network.protocol.version": "1.1",
        "user_agent.original": "x" * USER_AGENT_MAX,
        "server.address": "api.example",
        "server.port": 8443,
        "http.route": "/things/{id}",
        "http.response.status_code": 405,
    }
    provider.shutdown()


def test_an_unknown_method_without_route_is_named_http() -> None:
    provider, exporter = _spans()
    http = HttpTelemetry(provider, NoOpMeterProvider(), [])
    span, token = http.start_span("_OTHER", {"method": "BREW", "path": "/x"}, None)
    http.end_span(span, token, "_OTHER", None, 404, None)
    [finished] = exporter.get_finished_spans()
    assert finished.name == "HTTP"
    assert finished.attributes is not None
    assert finished.attributes["http.request.method_original"] == "BREW"
    provider.shutdown()


def test_trusted_proxy_headers_give_the_original_host_and_scheme() -> None:
    provider, exporter = _spans()
    trusting = HttpSettings(tuple(KNOWN_METHODS), True, False)
    http = HttpTelemetry(provider, NoOpMeterProvider(), [], settings=trusting)
    _, scheme = _request(
        http,
        "GET",
        [
            (b"host", b"app.internal:8000"),
            (b"forwarded", b'for=192.0.2.60;proto=https;host="api.example"'),
        ],
    )
    assert scheme == "https"
    _request(
        http,
        "GET",
        [(b"host", b"app.internal:8000"), (b"x-forwarded-host", b"[2001:db8::1]:8443")],
    )
    _request(http, "GET", [(b"host", b"app.internal:8000")])  # no proxy header: Host
    first, second, third = (dict(s.attributes or {}) for s in exporter.get_finished_spans())
    assert (first["server.address"], first["server.port"], first["url.scheme"]) == (
        "api.example",
        443,
        "https",
    )
    assert (second["server.address"], second["server.port"]) == ("2001:db8::1", 8443)
    assert (third["server.address"], third["server.port"]) == ("app.internal", 8000)
    # The client the proxy names, trusted; the peer's address without a proxy header.
    assert first["client.address"] == "192.0.2.60"
    assert third["client.address"] == "192.0.2.7"
    provider.shutdown()


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({b"forwarded": b"for=192.0.2.60;proto=https"}, "192.0.2.60"),
        ({b"forwarded": b'for="[2001:db8::1]:4711"'}, "2001:db8::1"),
        ({b"forwarded": b'for="192.0.2.9:80", for=10.0.0.1'}, "192.0.2.9"),
        ({b"x-forwarded-for": b"203.0.113.7, 10.0.0.1"}, "203.0.113.7"),
        ({b"forwarded": b"for=_hidden"}, None),
        ({b"forwarded": b"for=unknown"}, None),
        ({}, None),
    ],
)
def test_forwarded_for(headers: dict[bytes, bytes], expected: str | None) -> None:
    assert forwarded_for(headers) == expected


def test_untrusted_forwarded_for_is_ignored_and_the_query_is_scrubbed() -> None:
    provider, exporter = _spans()
    http = HttpTelemetry(provider, NoOpMeterProvider(), [])
    _request(
        http,
        "GET",
        [(b"x-forwarded-for", b"203.0.113.7")],
        query_string=b"page=2&access_token=s3cr3t&password=hunter2",
    )
    [span] = exporter.get_finished_spans()
    attributes = dict(span.attributes or {})
    assert attributes["client.address"] == "192.0.2.7"
    assert attributes["url.query"] == "page=2&access_token=****&password=****"
    provider.shutdown()


def _points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    return [
        point
        for resource in (data.resource_metrics if data else [])
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]


def test_error_type_is_the_same_on_span_and_metric() -> None:
    provider, exporter = _spans()
    reader = InMemoryMetricReader()
    http = HttpTelemetry(provider, MeterProvider(metric_readers=[reader]), [])
    scope = {"method": "GET", "path": "/fail", "scheme": "http", "http_version": "1.1"}
    error = DemoFailure("boom")
    span, token = http.start_span("GET", scope, None)
    http.end_span(span, token, "GET", "/fail", 500, error)
    http.record("GET", "http", "/fail", 500, 0.01, "1.1", error)
    http.record("GET", "http", "/gone", 503, 0.01, "1.1", None)
    [finished] = exporter.get_finished_spans()
    points = {
        p.attributes["http.route"]: dict(p.attributes) for p in _points(reader, REQUEST_DURATION)
    }
    assert finished.attributes is not None
    assert (
        points["/fail"]["error.type"] == finished.attributes["error.type"] == error_type(error, 500)
    )
    assert points["/gone"]["error.type"] == "503"
    # The metric's attributes: bounded ones only, never a header's value.
    assert set(points["/fail"]) == {
        "http.request.method", "http.response.status_code", "url.scheme", "http.route",
        "network.protocol.version", "error.type",
    }  # fmt: skip
    provider.shutdown()


@pytest.mark.parametrize("on", [True, False])
def test_body_size_histograms_only_when_asked_for(on: bool) -> None:
    reader = InMemoryMetricReader()
    http = HttpTelemetry(
        NoOpTracerProvider(),
        MeterProvider(metric_readers=[reader]),
        [],
        settings=HttpSettings(tuple(KNOWN_METHODS), False, on),
    )
    assert http.measure_bodies is on
    http.record("POST", "http", "/upload", 201, 0.01, "1.1", None, 1000, 12)
    requests = _points(reader, "http.server.request.body.size")
    responses = _points(reader, "http.server.response.body.size")
    if on:
        assert [(p.sum, p.attributes["http.route"]) for p in requests] == [(1000, "/upload")]
        assert [p.sum for p in responses] == [12]
    else:
        assert requests == responses == []


def test_body_bytes_counts_a_chunked_body_and_what_is_sent() -> None:
    messages = [
        {"type": "http.request", "body": b"x" * 300, "more_body": True},
        {"type": "http.request", "body": b"y" * 200, "more_body": False},
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        return None

    async def exchange(bodies: BodyBytes) -> None:
        if bodies.counts_request:
            await bodies.receive()
            await bodies.receive()
        await bodies.send({"type": "http.response.start", "status": 200, "headers": []})
        await bodies.send({"type": "http.response.body", "body": b"z" * 42, "more_body": True})
        await bodies.send({"type": "http.response.body", "body": b"", "more_body": False})

    chunked = BodyBytes(receive, send, None)
    asyncio.run(exchange(chunked))
    assert (chunked.request, chunked.response) == (500, 42)
    declared = BodyBytes(receive, send, b"1234")
    assert not declared.counts_request  # the declared length is the size: nothing to wrap
    asyncio.run(exchange(declared))
    assert (declared.request, declared.response) == (1234, 42)
    assert declared_length(b"12x") is None and declared_length(b"9" * 30) is None
