"""httpx client spans, `traceparent` and `http.client.request.duration`, at a server span's cost.

Written by hand rather than taken from opentelemetry-instrumentation-httpx: that
instrumentor added 394 CPU µs a call under load (3.6x what aiva's whole server span
adds, `benchmarks/overhead`, httpx_call_on), most of it its own Python (header
normalisation, URL re-parsing, attribute helpers for two convention sets). This
wraps the same two public transport methods it wraps, makes one CLIENT span with the
stable conventions, injects the context, and records one histogram point.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from types import FunctionType
from typing import Any

import httpx
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.utils import is_http_instrumentation_enabled
from opentelemetry.metrics import Histogram, MeterProvider
from opentelemetry.trace import SpanKind, Status, StatusCode

from aiva import __version__
from aiva.settings.masking import mask_text
from aiva.telemetry.histogram import ProducedHistogram
from aiva.telemetry.http import KNOWN_METHODS, error_type
from aiva.telemetry.metrics import CLIENT_DURATION, DURATION_BUCKETS_S
from aiva.telemetry.propagation import FormatsPropagator
from aiva.telemetry.spans import tracer_of

SCOPE = "aiva.httpx"
# The wrapper remembers the method it replaced under this name: the class itself says
# whether it is patched (no module state), and uninstrument puts that method back.
_ORIGINAL = "_aiva_original"
_DEFAULT_PORTS = {"http": 80, "https": 443}

SyncSend = Callable[[httpx.HTTPTransport, httpx.Request], httpx.Response]
AsyncSend = Callable[[httpx.AsyncHTTPTransport, httpx.Request], Awaitable[httpx.Response]]


class HttpxInstrumentation:
    """Patches httpx's two transports (sync and async) for the whole process."""

    @property
    def is_instrumented_by_opentelemetry(self) -> bool:
        """True when aiva's wrapper, or the contrib instrumentor's, is in place."""
        return any(
            hasattr(method, _ORIGINAL) or hasattr(method, "__wrapped__")
            for method in (
                httpx.HTTPTransport.handle_request,
                httpx.AsyncHTTPTransport.handle_async_request,
            )
        )

    def instrument(
        self,
        *,
        tracer_provider: trace.TracerProvider,
        meter_provider: MeterProvider,
        client_duration: ProducedHistogram | None = None,
        **_: Any,
    ) -> None:
        """`client_duration`: the duration aggregated by aiva (aiva.telemetry.histogram,
        ~1 µs a point against the SDK histogram's ~11 here); else an SDK histogram."""
        calls = _ClientCalls(tracer_provider, meter_provider, client_duration)
        send: SyncSend = httpx.HTTPTransport.handle_request
        send_async: AsyncSend = httpx.AsyncHTTPTransport.handle_async_request

        def handle_request(
            transport: httpx.HTTPTransport, request: httpx.Request
        ) -> httpx.Response:
            if not is_http_instrumentation_enabled():  # inside a health check, say
                return send(transport, request)
            call = calls.start(request)
            try:
                response = send(transport, request)
            except Exception as error:
                call.fail(error)
                raise
            call.end(response)
            return response

        async def handle_async_request(
            transport: httpx.AsyncHTTPTransport, request: httpx.Request
        ) -> httpx.Response:
            if not is_http_instrumentation_enabled():
                return await send_async(transport, request)
            call = calls.start(request)
            try:
                response = await send_async(transport, request)
            except (Exception, asyncio.CancelledError) as error:  # recorded, raised on
                call.fail(error)
                raise
            call.end(response)
            return response

        setattr(handle_request, _ORIGINAL, send)
        setattr(handle_async_request, _ORIGINAL, send_async)
        # The public methods httpx's clients call for every request (as the contrib does).
        setattr(httpx.HTTPTransport, "handle_request", handle_request)  # noqa: B010
        setattr(httpx.AsyncHTTPTransport, "handle_async_request", handle_async_request)  # noqa: B010

    def uninstrument(self, **_: Any) -> None:
        """Put the methods back, where aiva's wrapper is still the outermost one: under
        another's wrapper (the contrib's, applied later) it stays, or that one breaks."""
        for cls, name in (
            (httpx.HTTPTransport, "handle_request"),
            (httpx.AsyncHTTPTransport, "handle_async_request"),
        ):
            current = cls.__dict__.get(name)
            # type(), not isinstance: the contrib's wrapt proxy passes isinstance checks
            # and hands out the wrapped function's attributes as its own.
            if type(current) is FunctionType and _ORIGINAL in current.__dict__:
                setattr(cls, name, current.__dict__[_ORIGINAL])


class _ClientCalls:
    """The tracer, the duration histogram and the cached metric attributes."""

    def __init__(
        self,
        tracer_provider: trace.TracerProvider,
        meter_provider: MeterProvider,
        produced: ProducedHistogram | None,
    ) -> None:
        self.tracer = tracer_of(tracer_provider, SCOPE, __version__)
        self.produced = produced
        self.duration: Histogram | None = None
        if produced is None:
            self.duration = meter_provider.get_meter(SCOPE, __version__).create_histogram(
                CLIENT_DURATION,
                unit="s",
                description="Duration of HTTP client requests.",
                explicit_bucket_boundaries_advisory=DURATION_BUCKETS_S,
            )
        # One dict per (method, host, port, status, version, error): these repeat.
        self.attributes: dict[tuple[Any, ...], dict[str, Any]] = {}

    def start(self, request: httpx.Request) -> _Call:
        url = request.url
        method = request.method if request.method in KNOWN_METHODS else "_OTHER"
        host = url.host
        port = url.port or _DEFAULT_PORTS.get(url.scheme)
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "url.full": _full_url(url),
            "server.address": host,
        }
        if port is not None:
            attributes["server.port"] = port
        if method == "_OTHER":
            attributes["http.request.method_original"] = request.method
        parent = otel_context.get_current()  # read once: the span's parent, the baggage
        span = self.tracer.start_span(
            "HTTP" if method == "_OTHER" else method,
            parent,
            kind=SpanKind.CLIENT,
            attributes=attributes,
        )
        textmap = propagate.get_global_textmap()  # a user's own, set later, is honoured
        if type(textmap) is FormatsPropagator:  # a subclass may inject otherwise
            textmap.inject_span(span, request.headers, parent)
        else:
            textmap.inject(request.headers, context=trace.set_span_in_context(span, parent))
        return _Call(self, span, method, host, port)


class _Call:
    """One request in flight."""

    __slots__ = ("calls", "host", "method", "port", "span", "started")

    def __init__(
        self, calls: _ClientCalls, span: trace.Span, method: str, host: str, port: int | None
    ) -> None:
        self.calls, self.span, self.method, self.host, self.port = calls, span, method, host, port
        self.started = time.perf_counter()

    def end(self, response: httpx.Response) -> None:
        seconds = time.perf_counter() - self.started
        status = response.status_code
        version = _protocol_version(response)
        error = str(status) if status >= 400 else None
        span = self.span
        if span.is_recording():
            attributes: dict[str, Any] = {"http.response.status_code": status}
            if version is not None:
                attributes["network.protocol.version"] = version
            if error is not None:
                attributes["error.type"] = error
                span.set_status(Status(StatusCode.ERROR))
            span.set_attributes(attributes)  # one call: the span takes its lock once
        span.end()
        self._record(seconds, status, version, error)

    def fail(self, error: BaseException) -> None:
        seconds = time.perf_counter() - self.started
        kind = error_type(error, 0) or type(error).__qualname__
        span = self.span
        if span.is_recording():
            message = mask_text(str(error))  # a driver's message may quote the URL
            span.record_exception(error, attributes={"exception.message": message})
            span.set_attribute("error.type", kind)
            span.set_status(Status(StatusCode.ERROR, message))
        span.end()
        self._record(seconds, None, None, kind)

    def _record(
        self, seconds: float, status: int | None, version: str | None, error: str | None
    ) -> None:
        key = (self.method, self.host, self.port, status, version, error)
        attributes = self.calls.attributes.get(key)
        if attributes is None:
            attributes = {"http.request.method": self.method, "server.address": self.host}
            optional = {
                "server.port": self.port,
                "http.response.status_code": status,
                "network.protocol.version": version,
                "error.type": error,
            }
            attributes.update({k: v for k, v in optional.items() if v is not None})
            self.calls.attributes[key] = attributes
        if self.calls.produced is not None:
            self.calls.produced.record(key, attributes, seconds)
        elif self.calls.duration is not None:
            self.calls.duration.record(seconds, attributes)


# Query parameters whose values are credentials (matched in lower case, `-` as `_`);
# the contrib's list (signatures) plus the usual token and key names.
_SECRET_PARAMETER = re.compile(
    r"(pass(word|wd)?|pwd|secret|token|access_token|refresh_token|id_token|api_?key|key|"
    r"auth|authorization|credentials?|session|sig|signature|x_amz_(signature|credential|"
    r"security_token)|x_goog_signature|awsaccesskeyid)"
)


def _full_url(url: httpx.URL) -> str:
    """The URL without credentials: user and password REDACTED, and the value of every
    query parameter named like a credential (as the contrib does for its few names:
    REDACTED survives URL encoding, `****` would not). Only a URL with a user part or
    a query can carry one, so the common URL is taken as it is."""
    if not (url.userinfo or url.query):
        return str(url)
    if url.userinfo:
        url = url.copy_with(username="REDACTED", password="REDACTED")
    if url.query:
        params = [
            (k, "REDACTED" if _SECRET_PARAMETER.fullmatch(k.lower().replace("-", "_")) else v)
            for k, v in url.params.multi_items()
        ]
        url = url.copy_with(params=params)
    return str(url)


def _protocol_version(response: httpx.Response) -> str | None:
    version = response.extensions.get("http_version")  # b"HTTP/1.1", b"HTTP/2"
    if isinstance(version, bytes) and version.startswith(b"HTTP/"):
        return version[5:].decode("ascii")
    return None
