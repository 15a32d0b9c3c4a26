"""Per-request HTTP telemetry: the server span and the HTTP server metrics.

Written by hand rather than taken from opentelemetry-instrumentation-asgi: that
package makes three spans a request (the server span plus two "http send" spans)
and costs several times what Starlette itself does per request. This module makes
exactly one span, records one histogram point, and does nothing for unsampled
requests beyond the sampling decision.

The attributes follow the stable HTTP server conventions (semconv 1.44): the span
has the required, conditionally required and recommended ones (but `network.peer.*`,
which `client.address` repeats), `server.address` and `server.port` from `Host` or,
when trusted, from the proxy's headers; the metrics have the required and recommended
ones and none read from a header (a client picks those: each new value a new series).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Mapping, MutableMapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.metrics import CallbackOptions, MeterProvider, NoOpMeterProvider, Observation
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import SpanKind, Status, StatusCode

from aiva import __version__
from aiva.settings.masking import mask_text, masked_exception
from aiva.settings.model import HttpSettings
from aiva.telemetry.histogram import ProducedHistogram
from aiva.telemetry.metrics import (
    BODY_SIZE_BUCKETS_BY,
    DURATION_BUCKETS_S,
    REQUEST_BODY_SIZE,
    REQUEST_DURATION,
    REQUEST_DURATION_DESCRIPTION,
    RESPONSE_BODY_SIZE,
    BodySizeHistograms,
)
from aiva.telemetry.propagation import header_names
from aiva.telemetry.spans import tracer_of

# The HTTP semantic conventions' known methods (RFC 9110's, PATCH and QUERY): any other
# is reported as _OTHER, so a scanner sending random methods cannot grow the series count.
KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY"}
)
OTHER_METHOD = "_OTHER"
# The span name's `{method}` for a method outside the known ones.
OTHER_METHOD_SPAN_NAME = "HTTP"
DEFAULT_HTTP_SETTINGS = HttpSettings(
    known_methods=tuple(sorted(KNOWN_METHODS)), trust_proxy_headers=False, body_size_metrics=False
)
# Marks a request whose server span exists already; Starlette's own
# OpenTelemetryMiddleware honours the same key, so the two never double a span.
SERVER_SPAN_SCOPE_KEY = "starlette.opentelemetry"

# Headers a span's attributes come from, collected by read_headers in its one pass.
HOST, USER_AGENT, CONTENT_LENGTH = b"host", b"user-agent", b"content-length"
FORWARDED, X_FORWARDED_HOST, X_FORWARDED_PROTO, X_FORWARDED_FOR = (
    b"forwarded",
    b"x-forwarded-host",
    b"x-forwarded-proto",
    b"x-forwarded-for",
)
_COLLECTED = frozenset(
    {
        HOST,
        USER_AGENT,
        CONTENT_LENGTH,
        FORWARDED,
        X_FORWARDED_HOST,
        X_FORWARDED_PROTO,
        X_FORWARDED_FOR,
    }
)
_PROPAGATION = frozenset({b"traceparent", b"tracestate", b"baggage"})
# A client can send a user agent of any length (uvicorn bounds only the whole head):
# cut it at ten times a browser's (Chrome 126 on Linux sends 101 bytes). The global
# attribute value limit (telemetry.limits) cuts shorter when set.
USER_AGENT_MAX = 1024
# A DNS name has at most 253 characters: a longer Host is no real one, kept cut.
ADDRESS_MAX = 255
_DEFAULT_PORTS = {"http": 80, "https": 443}
_SCHEMES = frozenset(_DEFAULT_PORTS)
# network.protocol.version values a metric may carry (ASGI's http_version); another
# value (none known) stays on the span only.
_METRIC_VERSIONS = frozenset({"1.0", "1.1", "2", "3"})
# Parsed Host values by (raw value, scheme): a service sees few hosts, a scanner many;
# the cache is emptied when it reaches this size, so it stays bounded either way.
_HOST_CACHE_MAX = 256
# A client picks the URL's length: excluded-URL patterns (the operator's regular
# expressions, perhaps with backtracking) search this much of it at most.
URL_MATCH_MAX = 8192

# (key, attributes, value, span): `span` is the server span when there is one, so the
# exemplar filter needs no lookup of the current context (see aiva.telemetry.histogram).
Recorder = Callable[[Hashable, dict[str, Any], float, trace.Span | None], None]


class HttpTelemetry:
    """The tracer, instruments and path rules the request middleware uses."""

    def __init__(
        self,
        tracer_provider: trace.TracerProvider,
        meter_provider: MeterProvider,
        excluded_paths: Sequence[str],
        request_duration: ProducedHistogram | None = None,
        *,
        instrumented: bool = True,
        settings: HttpSettings = DEFAULT_HTTP_SETTINGS,
        body_sizes: BodySizeHistograms | None = None,
        propagator: TextMapPropagator | None = None,
        excluded_urls: Sequence[str] = (),
    ) -> None:
        """`instrumented=False` leaves spans and metrics to another instrumentation (stock).

        `request_duration` (and `body_sizes`, when settings.body_size_metrics) are
        aggregated by aiva and collected by the provider's readers; without them, the
        measurements go through SDK histograms of `meter_provider` (none when that is a
        no-op one). `propagator`: the formats a parent context is read in (default: the
        global one, W3C trace context and baggage).
        """
        self.tracer = tracer_of(tracer_provider, "aiva.http", __version__)
        self.make_spans = instrumented and not isinstance(tracer_provider, trace.NoOpTracerProvider)
        self._extract = propagator.extract if propagator is not None else propagate.extract
        # The headers read_headers gathers for the propagator.
        self.propagation_headers = header_names(propagator) if propagator else _PROPAGATION
        self.known_methods = frozenset(settings.known_methods)
        self.trust_proxy_headers = settings.trust_proxy_headers
        meter = meter_provider.get_meter("aiva.http", __version__)
        sdk_meter = instrumented and not isinstance(meter_provider, NoOpMeterProvider)
        self._record_duration: Recorder | None = None
        if instrumented and request_duration is not None:
            self._record_duration = request_duration.record
        elif sdk_meter:
            self._record_duration = _sdk_recorder(
                meter, REQUEST_DURATION, "s", REQUEST_DURATION_DESCRIPTION, DURATION_BUCKETS_S
            )
        self._record_request_size: Recorder | None = None
        self._record_response_size: Recorder | None = None
        if instrumented and settings.body_size_metrics and body_sizes is not None:
            self._record_request_size = body_sizes.request.record
            self._record_response_size = body_sizes.response.record
        elif sdk_meter and settings.body_size_metrics:
            self._record_request_size, self._record_response_size = (
                _sdk_recorder(meter, name, "By", description, BODY_SIZE_BUCKETS_BY)
                for name, description in (
                    (REQUEST_BODY_SIZE, "Size of HTTP server request bodies."),
                    (RESPONSE_BODY_SIZE, "Size of HTTP server response bodies."),
                )
            )
        # Read by the middleware: count the bodies' bytes only when they are recorded.
        self.measure_bodies = self._record_request_size is not None
        # An observable instrument over a plain Counter: two dict updates a request
        # instead of two SDK measurements; the callback runs on the SDK's thread and
        # only reads a snapshot.
        self.active: Counter[tuple[str, str]] = Counter()
        meter.create_observable_up_down_counter(
            "http.server.active_requests",
            callbacks=[self._observe_active],
            unit="{request}",
            description="Number of active HTTP server requests.",
        )
        self._excluded = frozenset(excluded_paths)
        self._excluded_prefixes = tuple(p.rstrip("/") + "/" for p in excluded_paths)
        # OTEL_PYTHON_EXCLUDED_URLS' patterns, searched as the contrib instrumentations
        # do: any of them found anywhere in the URL (validated as patterns at load).
        self._excluded_url = (
            re.compile("|".join(f"(?:{pattern})" for pattern in excluded_urls))
            if excluded_urls
            else None
        )
        self._attributes: dict[Hashable, dict[str, Any]] = {}
        self._hosts: dict[tuple[bytes, str], tuple[str, int | None] | None] = {}

    def excluded(self, path: str) -> bool:
        """Probe, health and metrics paths (and below them) get no span."""
        return path in self._excluded or path.startswith(self._excluded_prefixes)

    def url_excluded(
        self, scope: MutableMapping[str, Any], headers: Mapping[bytes, bytes], scheme: str
    ) -> bool:
        """Whether a pattern of `telemetry.traces.excluded_urls` is found in the request's
        URL, built as the contrib ASGI instrumentation builds it (scheme, Host, root path
        and path; no query). Only the first URL_MATCH_MAX characters are searched."""
        if self._excluded_url is None:
            return False
        host = headers.get(HOST)
        if host is not None:
            authority = host.decode("latin-1")
        else:
            server = scope.get("server") or ("0.0.0.0", 80)
            authority = f"{server[0]}:{server[1]}"
        url = f"{scheme}://{authority}{scope.get('root_path', '')}{scope['path']}"
        return self._excluded_url.search(url[:URL_MATCH_MAX]) is not None

    def method_of(self, raw: str) -> str:
        """`http.request.method`: the method when known, else `_OTHER`."""
        return raw if raw in self.known_methods else OTHER_METHOD

    def scheme_of(self, scope: MutableMapping[str, Any], headers: dict[bytes, bytes]) -> str:
        """`url.scheme`: the original request's (the proxy's header) when trusted."""
        if self.trust_proxy_headers:
            proto = forwarded_proto(headers)
            if proto is not None:
                return proto
        return str(scope.get("scheme", "http"))

    def start_span(
        self,
        method: str,
        scope: MutableMapping[str, Any],
        carrier: dict[str, str] | None,
        headers: dict[bytes, bytes] | None = None,
        scheme: str | None = None,
    ) -> tuple[trace.Span, object]:
        """Start the server span as the current span; returns it and the context token.

        `headers`: what read_headers collected; `scheme`: scheme_of's answer.
        """
        parent = self._extract(carrier) if carrier else None
        scheme = scheme or scope.get("scheme", "http")
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "url.path": scope["path"],
            "url.scheme": scheme,
        }
        if method == OTHER_METHOD:
            attributes["http.request.method_original"] = scope.get("method", method)
        if scope.get("query_string"):
            # The conventions: sensitive values in the query SHOULD be scrubbed (a
            # `?token=...`, `&password=...`): the log scrubber's patterns mask them.
            # Cut first: the scrubber's cost grows with the text (a 30 KB query took
            # 0.47 ms), and no more than this much is kept on a span anyway.
            query = scope["query_string"][:URL_MATCH_MAX].decode("latin-1")
            attributes["url.query"] = mask_text(query)
        client = forwarded_for(headers) if headers and self.trust_proxy_headers else None
        if client is None and scope.get("client"):
            client = scope["client"][0]
        if client:
            attributes["client.address"] = client
        version = scope.get("http_version")
        if version:
            attributes["network.protocol.version"] = version
        if headers:
            agent = headers.get(USER_AGENT)
            if agent is not None:
                attributes["user_agent.original"] = agent[:USER_AGENT_MAX].decode("latin-1")
            server = self._server(headers, scheme)
            if server is not None:
                attributes["server.address"] = server[0]
                if server[1] is not None:
                    attributes["server.port"] = server[1]
        span = self.tracer.start_span(
            OTHER_METHOD_SPAN_NAME if method == OTHER_METHOD else method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes=attributes,
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        return span, token

    def end_span(
        self,
        span: trace.Span,
        token: object,
        method: str,
        route: str | None,
        status: int,
        error: BaseException | None,
    ) -> None:
        if span.is_recording():
            if route is not None:
                prefix = OTHER_METHOD_SPAN_NAME if method == OTHER_METHOD else method
                span.update_name(f"{prefix} {route}")
                span.set_attribute("http.route", route)
            span.set_attribute("http.response.status_code", status)
            kind = error_type(error, status)
            if kind is not None:
                span.set_attribute("error.type", kind)
                if error is not None:  # its text may quote a DSN or a token: masked
                    masked = masked_exception(error)
                    span.record_exception(error, attributes=masked)
                    span.set_status(Status(StatusCode.ERROR, masked["exception.message"]))
                else:
                    span.set_status(Status(StatusCode.ERROR))
        span.end()
        otel_context.detach(token)  # type: ignore[arg-type]

    def record(
        self,
        method: str,
        scheme: str,
        route: str | None,
        status: int,
        seconds: float,
        version: str | None = None,
        error: BaseException | None = None,
        request_bytes: int | None = None,
        response_bytes: int | None = None,
        span: trace.Span | None = None,
    ) -> None:
        """The request's duration (and body sizes, when measured) under one attribute set.

        `span`: the request's server span, still current (None when it has none): the
        one an exemplar of these measurements points to.
        """
        if self._record_duration is None:
            return
        # Keyed by the error's class, not its name: the name is made once per key.
        key = (method, route, status, scheme, version, None if error is None else type(error))
        attributes = self._attributes.get(key)
        if attributes is None:
            attributes = self._metric_attributes(key, error)
        self._record_duration(key, attributes, seconds, span)
        if self._record_request_size is not None and request_bytes is not None:
            self._record_request_size(key, attributes, request_bytes, span)
        if self._record_response_size is not None and response_bytes is not None:
            self._record_response_size(key, attributes, response_bytes, span)

    def _metric_attributes(
        self, key: tuple[Any, ...], error: BaseException | None
    ) -> dict[str, Any]:
        # Attribute sets repeat: one dict per key. Every part is bounded (known methods,
        # route templates, status codes, schemes, the server's protocol versions, the
        # exception classes the code can raise), never a raw path or a header's value.
        method, route, status, scheme, version, _ = key
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "http.response.status_code": status,
            "url.scheme": scheme,
        }
        if route is not None:
            attributes["http.route"] = route
        if version in _METRIC_VERSIONS:
            attributes["network.protocol.version"] = version
        kind = error_type(error, status)
        if kind is not None:
            attributes["error.type"] = kind
        self._attributes[key] = attributes
        return attributes

    def _server(self, headers: dict[bytes, bytes], scheme: str) -> tuple[str, int | None] | None:
        """(server.address, server.port): the proxy's original host when trusted, else Host."""
        raw = None
        if self.trust_proxy_headers:
            raw = forwarded_host(headers)
        if raw is None:
            raw = headers.get(HOST)
            if raw is None:
                return None
        cache_key = (raw, scheme)
        try:
            return self._hosts[cache_key]
        except KeyError:
            pass
        if len(self._hosts) >= _HOST_CACHE_MAX:
            self._hosts.clear()
        parsed = self._hosts[cache_key] = parse_host(raw.decode("latin-1"), scheme)
        return parsed

    def _observe_active(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(count, {"http.request.method": method, "url.scheme": scheme})
            for (method, scheme), count in list(self.active.items())
        ]


def _sdk_recorder(
    meter: Any, name: str, unit: str, description: str, boundaries: Sequence[float]
) -> Recorder:
    histogram = meter.create_histogram(
        name, unit=unit, description=description, explicit_bucket_boundaries_advisory=boundaries
    )
    # The SDK takes the span from the current context, where the server span still is.
    return lambda _key, attributes, value, _span: histogram.record(value, attributes)


def read_headers(
    headers: Iterable[tuple[bytes, bytes]],
    collected: dict[bytes, bytes] | None = None,
    propagation: frozenset[bytes] = _PROPAGATION,
) -> tuple[bytes | None, dict[str, str] | None]:
    """The X-Request-ID header and the `propagation` headers, in one pass.

    `collected`, when given, receives the first value of each header a span's
    attributes come from (Host, User-Agent, Content-Length and the proxy headers).
    """
    request_id = None
    carrier = None
    for name, value in headers:
        if name == b"x-request-id":
            request_id = value
        elif name in propagation:
            if carrier is None:
                carrier = {}
            carrier[name.decode("latin-1")] = value.decode("latin-1")
        elif collected is not None and name in _COLLECTED and name not in collected:
            collected[name] = value
    return request_id, carrier


def normalise_method(method: str, known: frozenset[str] = KNOWN_METHODS) -> str:
    return method if method in known else OTHER_METHOD


def error_type(error: BaseException | None, status: int) -> str | None:
    """`error.type`: the exception's fully qualified class name when one ended the
    request (as Python's tracebacks name it: builtins without their module), else the
    status code for a 5xx, else None (the request succeeded)."""
    if error is not None:
        cls = type(error)
        module = cls.__module__
        return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"
    return str(status) if status >= 500 else None


def parse_host(value: str, scheme: str) -> tuple[str, int | None] | None:
    """(address, port) from a Host (or X-Forwarded-Host, or Forwarded's host) value.

    `api.example:8443`, `[2001:db8::1]:8443`; without a port, the scheme's default one;
    an invalid port leaves the port out. None when there is no address at all.
    """
    value = value.strip()
    if value.startswith("["):  # an IPv6 literal, its brackets not part of the address
        end = value.find("]")
        if end < 0:
            return None
        address, rest = value[1:end], value[end + 1 :]
        if rest and not rest.startswith(":"):
            return None
        port_text = rest[1:] if rest else None
    elif value.count(":") == 1:
        address, _, port_text = value.partition(":")
    else:  # a name, an IPv4 address, or a bare IPv6 one (no port can be told apart)
        address, port_text = value, None
    if not address:
        return None
    return address[:ADDRESS_MAX], _port(port_text, scheme)


def _port(text: str | None, scheme: str) -> int | None:
    if not text:  # absent, or `host:` (RFC 3986 allows an empty port)
        return _DEFAULT_PORTS.get(scheme)
    if text.isascii() and text.isdigit() and len(text) <= 5 and 0 < int(text) <= 65535:
        return int(text)
    return None


def forwarded_host(headers: dict[bytes, bytes]) -> bytes | None:
    """The original host a proxy passed on: Forwarded's `host=`, else X-Forwarded-Host
    (the first proxy's, for a chain of them)."""
    forwarded = headers.get(FORWARDED)
    if forwarded is not None:
        host = forwarded_parameter(forwarded, "host")
        if host is not None:
            return host.encode("latin-1")
    value = headers.get(X_FORWARDED_HOST)
    if value is not None:
        first = value.split(b",", 1)[0].strip()
        return first or None
    return None


def forwarded_for(headers: dict[bytes, bytes]) -> str | None:
    """The original client a proxy passed on: Forwarded's `for=` (without brackets and
    port), else X-Forwarded-For's first address; None for an obfuscated `for=_hidden` or
    `unknown` (RFC 7239), or none given."""
    address = None
    forwarded = headers.get(FORWARDED)
    if forwarded is not None:
        node = forwarded_parameter(forwarded, "for")
        if node is not None:
            if node.startswith("["):  # an IPv6 address, perhaps with a port
                address = node[1:].split("]", 1)[0]
            else:
                address = node.rsplit(":", 1)[0] if node.count(":") == 1 else node
    if address is None:
        value = headers.get(X_FORWARDED_FOR)
        if value is not None:
            address = value.split(b",", 1)[0].strip().decode("latin-1")
    if not address or address.startswith("_") or address.lower() == "unknown":
        return None
    return address[:ADDRESS_MAX]


def forwarded_proto(headers: dict[bytes, bytes]) -> str | None:
    """The original scheme a proxy passed on (Forwarded's `proto=`, else
    X-Forwarded-Proto), when it is http or https; None otherwise."""
    proto = None
    forwarded = headers.get(FORWARDED)
    if forwarded is not None:
        proto = forwarded_parameter(forwarded, "proto")
    if proto is None:
        value = headers.get(X_FORWARDED_PROTO)
        if value is not None:
            proto = value.split(b",", 1)[0].decode("latin-1")
    if proto is None:
        return None
    proto = proto.strip().lower()
    return proto if proto in _SCHEMES else None


def forwarded_parameter(value: bytes, name: str) -> str | None:
    """One parameter of the first element of a Forwarded header (RFC 7239), unquoted:
    `for=192.0.2.60;proto=https;host="api.example:8443", for=...`."""
    first = value.decode("latin-1").split(",", 1)[0]
    for pair in first.split(";"):
        key, sep, item = pair.partition("=")
        if sep and key.strip().lower() == name:
            item = item.strip()
            if len(item) >= 2 and item[0] == item[-1] == '"':
                item = item[1:-1].replace('\\"', '"')
            return item or None
    return None
