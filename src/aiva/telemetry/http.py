"""Per-request HTTP telemetry: the server span and the HTTP server metrics.

Written by hand rather than taken from opentelemetry-instrumentation-asgi: that
package makes three spans a request (the server span plus two "http send" spans)
and costs several times what Starlette itself does per request. This module makes
exactly one span, records one histogram point, and does nothing for unsampled
requests beyond the sampling decision.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Iterable, MutableMapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.metrics import CallbackOptions, MeterProvider, NoOpMeterProvider, Observation
from opentelemetry.trace import SpanKind, Status, StatusCode

from aiva import __version__
from aiva.telemetry.histogram import ProducedHistogram
from aiva.telemetry.metrics import (
    DURATION_BUCKETS_S,
    REQUEST_DURATION,
    REQUEST_DURATION_DESCRIPTION,
)

# The HTTP semantic conventions: any other method is reported as _OTHER, so a
# scanner sending random methods cannot grow the series count.
KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY"}
)
# Marks a request whose server span exists already; Starlette's own
# OpenTelemetryMiddleware honours the same key, so the two never double a span.
SERVER_SPAN_SCOPE_KEY = "starlette.opentelemetry"


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
    ) -> None:
        """`instrumented=False` leaves spans and metrics to another instrumentation (stock).

        `request_duration` is `http.server.request.duration` aggregated by aiva and
        collected by the provider's readers; without it, the duration is recorded
        through an SDK histogram of `meter_provider` (none when that is a no-op one).
        """
        self.tracer = tracer_provider.get_tracer("aiva.http", __version__)
        self.make_spans = instrumented and not isinstance(tracer_provider, trace.NoOpTracerProvider)
        meter = meter_provider.get_meter("aiva.http", __version__)
        self._record_duration: Callable[[Hashable, dict[str, Any], float], None] | None = None
        if instrumented and request_duration is not None:
            self._record_duration = request_duration.record
        elif instrumented and not isinstance(meter_provider, NoOpMeterProvider):
            histogram = meter.create_histogram(
                REQUEST_DURATION,
                unit="s",
                description=REQUEST_DURATION_DESCRIPTION,
                explicit_bucket_boundaries_advisory=DURATION_BUCKETS_S,
            )
            self._record_duration = lambda _key, attributes, value: histogram.record(
                value, attributes
            )
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
        self._attributes: dict[tuple[str, str | None, int, str], dict[str, Any]] = {}

    def excluded(self, path: str) -> bool:
        """Probe, health and metrics paths (and below them) get no span."""
        return path in self._excluded or path.startswith(self._excluded_prefixes)

    def start_span(
        self, method: str, scope: MutableMapping[str, Any], carrier: dict[str, str] | None
    ) -> tuple[trace.Span, object]:
        """Start the server span as the current span; returns it and the context token."""
        parent = propagate.extract(carrier) if carrier else None
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "url.path": scope["path"],
            "url.scheme": scope.get("scheme", "http"),
        }
        if scope.get("query_string"):
            attributes["url.query"] = scope["query_string"].decode("latin-1")
        client = scope.get("client")
        if client:
            attributes["client.address"] = client[0]
        span = self.tracer.start_span(
            method, context=parent, kind=SpanKind.SERVER, attributes=attributes
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
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)
            span.set_attribute("http.response.status_code", status)
            if error is not None:
                span.record_exception(error)
                span.set_attribute("error.type", type(error).__qualname__)
                span.set_status(Status(StatusCode.ERROR, str(error)))
            elif status >= 500:
                span.set_attribute("error.type", str(status))
                span.set_status(Status(StatusCode.ERROR))
        span.end()
        otel_context.detach(token)  # type: ignore[arg-type]

    def record(
        self, method: str, scheme: str, route: str | None, status: int, seconds: float
    ) -> None:
        if self._record_duration is not None:
            key = (method, route, status, scheme)
            self._record_duration(key, self._metric_attributes(key), seconds)

    def _metric_attributes(self, key: tuple[str, str | None, int, str]) -> dict[str, Any]:
        # Attribute sets repeat: cache one dict per (method, route, status, scheme). The
        # keys are bounded (known methods, route templates, status codes), never raw paths.
        attributes = self._attributes.get(key)
        if attributes is None:
            method, route, status, scheme = key
            attributes = {
                "http.request.method": method,
                "http.response.status_code": status,
                "url.scheme": scheme,
            }
            if route is not None:
                attributes["http.route"] = route
            if status >= 500:
                attributes["error.type"] = str(status)
            self._attributes[key] = attributes
        return attributes

    def _observe_active(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(count, {"http.request.method": method, "url.scheme": scheme})
            for (method, scheme), count in list(self.active.items())
        ]


def read_headers(
    headers: Iterable[tuple[bytes, bytes]],
) -> tuple[bytes | None, dict[str, str] | None]:
    """The X-Request-ID header and the trace-propagation headers, in one pass."""
    request_id = None
    carrier = None
    for name, value in headers:
        if name == b"x-request-id":
            request_id = value
        elif name in (b"traceparent", b"tracestate", b"baggage"):
            if carrier is None:
                carrier = {}
            carrier[name.decode("latin-1")] = value.decode("latin-1")
    return request_id, carrier


def normalise_method(method: str) -> str:
    return method if method in KNOWN_METHODS else "_OTHER"
