"""What an SDK OTLP exporter's export ended with: a batch the collector refuses as too
large, told apart from a collector that is down (aiva.telemetry.oversize sends it in halves).

The exporters' `export()` answers SUCCESS or FAILURE only; the error (the gRPC status, the
HTTP status code, the HTTP exporter's own size refusal, RequestPayloadTooLargeError) goes
to their internal metrics object alone, `_metrics.export_operation` (opentelemetry-exporter-
otlp 1.45). aiva stands an ExportOutcomes in for it, passing everything through.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

# The gRPC codes of a request over the collector's limit (see aiva.telemetry.oversize).
_TOO_LARGE_GRPC_CODES = frozenset({"RESOURCE_EXHAUSTED", "OUT_OF_RANGE"})
_RETRY_INFO = "google.rpc.retryinfo-bin"


class ExportOutcomes:
    """Stands in for an SDK OTLP exporter's `_metrics` (its internal metrics, or their
    no-op stand-in), passing every export through to it and keeping the last one's error,
    per thread.

    `export()` answers FAILURE alone; the error (the gRPC status, the HTTP status code,
    the exporter's own size refusal) is handed to `_metrics` only. Without it a batch
    refused as too large cannot be told from a collector that is down, and is lost whole.
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._last = threading.local()

    @contextlib.contextmanager
    def export_operation(self, num_items: int) -> Iterator[Any]:
        self._last.result = None
        with self._inner.export_operation(num_items) as result:
            try:
                yield result
            finally:
                self._last.result = result

    def refused_as_too_large(self) -> str | None:
        """Why the last export on this thread was refused as too large; None if it was not.

        Read once: an export that fails before it gets this far (the exporter is shut
        down) must not be taken for the refusal before it.
        """
        result = getattr(self._last, "result", None)
        self._last.result = None
        if result is None:
            return None
        return too_large(getattr(result, "error", None), getattr(result, "error_attrs", None))


def watch_outcomes(exporter: Any) -> ExportOutcomes | None:
    """Put an ExportOutcomes in the SDK exporter's `_metrics`; None for an exporter that
    has none (one of the tests' own)."""
    inner = getattr(exporter, "_metrics", None)
    if not callable(getattr(inner, "export_operation", None)):
        return None
    outcomes = ExportOutcomes(inner)
    exporter._metrics = outcomes
    return outcomes


def too_large(error: Any, attributes: Any) -> str | None:
    """The refusal as text when an export's error says the request was too large."""
    from opentelemetry.exporter.otlp.proto.http._common import RequestPayloadTooLargeError

    if isinstance(error, RequestPayloadTooLargeError):  # the HTTP exporter's own
        return str(error)
    code = getattr(error, "code", None)
    if callable(code):  # a grpc.RpcError
        name = getattr(code(), "name", "")
        if name in _TOO_LARGE_GRPC_CODES and not _has_retry_info(error):
            return f"{name}: {error.details()}"
        return None
    if isinstance(attributes, dict) and attributes.get("http.response.status_code") == 413:
        return "HTTP 413"
    return None


def _has_retry_info(error: Any) -> bool:
    """RESOURCE_EXHAUSTED with RetryInfo: the collector is busy, not refusing the size."""
    metadata = getattr(error, "trailing_metadata", None)
    trailing = metadata() if callable(metadata) else None
    return any(key == _RETRY_INFO for key, _ in trailing or ())


def outcomes_work() -> str | None:
    """The HTTP exporter's own refusal of a request over its `max_request_size` (made
    before anything is sent) is seen as too large, and the gRPC exporter has the same
    `_metrics.export_operation` to report through."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
        OTLPSpanExporter as GrpcSpanExporter,
    )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider

    grpc_exporter = GrpcSpanExporter(endpoint="127.0.0.1:9", insecure=True)
    try:  # no connection is made before an export
        if watch_outcomes(grpc_exporter) is None:
            return "the gRPC exporter has no _metrics.export_operation"
    finally:
        grpc_exporter.shutdown()
    # Port 9 (discard) is never reached: the request is refused before it is sent.
    exporter = OTLPSpanExporter(endpoint="http://127.0.0.1:9/v1/traces", max_request_size=1)
    try:
        outcomes = watch_outcomes(exporter)
        if outcomes is None:
            return "the HTTP exporter has no _metrics.export_operation"
        span = TracerProvider(shutdown_on_exit=False).get_tracer("aiva.fast").start_span("s")
        span.end()
        with _quiet("opentelemetry.exporter.otlp.proto.http.trace_exporter"):
            exporter.export([span])  # type: ignore[list-item]
        if outcomes.refused_as_too_large() is None:
            return "a request over max_request_size was not seen as refused as too large"
    finally:
        exporter.shutdown()  # type: ignore[no-untyped-call]
    return None


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    """The exporter's WARNING for the self-test's own refusal kept out of the service's
    log (start-up runs the self-test before serving, on one thread)."""
    exporter_logger = logging.getLogger(name)
    was = exporter_logger.disabled
    exporter_logger.disabled = True
    try:
        yield
    finally:
        exporter_logger.disabled = was
