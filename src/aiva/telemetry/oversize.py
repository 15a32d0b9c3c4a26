"""OTLP requests too large for the collector: refused before they are sent, or by the
collector, then sent in halves; an item too large on its own is dropped and counted.

A batch processor cuts batches by count (512 spans), never by size, and the
collectors refuse a request over their limit whole: the OpenTelemetry Collector's and
rotel's gRPC receivers take 4 MiB (answering RESOURCE_EXHAUSTED and OUT_OF_RANGE), their
HTTP receivers 20 MiB (413). The SDK's gRPC exporter retries both codes until its timeout,
then drops the batch; issue #12 measured that 75 requests with a 60 KB URL took the 300
other spans of their batch with them (0 of 300 arrived).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, TypeVar

logger = logging.getLogger(__name__)

# The largest request the span and log exporters send, serialized (before any
# compression): the gRPC limit above, the smallest of the collectors' common ones.
MAX_REQUEST_BYTES = 4 * 1024 * 1024

# The OTLP specification's retryable gRPC codes, less two it lists under other rules:
# RESOURCE_EXHAUSTED is retryable only when the server sends RetryInfo (the SDK retries
# it always), and OUT_OF_RANGE is what tonic (rotel) answers to a request over its
# limit. Both come back for a request too large, and retrying it whole can only fail
# again, holding the export thread for the whole timeout.
RETRYABLE_GRPC_CODES = ("CANCELLED", "DEADLINE_EXCEEDED", "ABORTED", "UNAVAILABLE", "DATA_LOSS")
_TOO_LARGE_GRPC_CODES = frozenset({"RESOURCE_EXHAUSTED", "OUT_OF_RANGE"})
_RETRY_INFO = "google.rpc.retryinfo-bin"


def size_options(protocol: str) -> dict[str, Any]:
    """The SDK span or log exporter's options that refuse a request over MAX_REQUEST_BYTES
    before sending it (gRPC's own send limit; the HTTP exporter's max_request_size), and
    retry no refusal as too large."""
    if protocol == "grpc":
        from grpc import StatusCode  # type: ignore[import-untyped]

        return {
            "channel_options": (("grpc.max_send_message_length", MAX_REQUEST_BYTES),),
            "retryable_error_codes": [StatusCode[name] for name in RETRYABLE_GRPC_CODES],
        }
    return {"max_request_size": MAX_REQUEST_BYTES}


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
    """Put an ExportOutcomes in the SDK exporter's `_metrics`; None (and one warning) where
    this SDK has none."""
    inner = getattr(exporter, "_metrics", None)
    if not callable(getattr(inner, "export_operation", None)):
        logger.warning(
            "this OpenTelemetry SDK hides its exporters' errors: a batch the collector "
            "refuses as too large is lost whole"
        )
        return None
    outcomes = ExportOutcomes(inner)
    exporter._metrics = outcomes
    return outcomes


def too_large(error: Any, attributes: Any) -> str | None:
    """The refusal as text when an export's error says the request was too large."""
    if type(error).__name__ == "RequestPayloadTooLargeError":  # the HTTP exporter's own
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


T = TypeVar("T")
Outcome = Literal["exported", "failed", "dropped"]


def export_in_parts(
    batch: Sequence[T],
    send: Callable[[Sequence[T]], bool],
    refusal: Callable[[], str | None],
    count: Callable[[Outcome, int], None],
    what: str,
) -> bool:
    """Send the batch; when it is refused as too large, each half in turn, and so on: an
    item refused alone is dropped. Every item is counted once. True when nothing failed.

    `send` answers whether the export succeeded, `refusal` why the last one was refused
    as too large (None: it was not). The halving stops at single items, so it goes at most
    log2(len(batch)) deep. Once a part fails otherwise (the collector is down or slow),
    the parts not yet sent are counted failed at once rather than each waiting its own
    timeout.
    """
    if send(batch):
        count("exported", len(batch))
        return True
    reason = refusal()
    if reason is None:
        count("failed", len(batch))
        return False
    if len(batch) == 1:
        logger.warning("one %s refused as too large for the collector, dropped: %s", what, reason)
        count("dropped", 1)
        return True
    logger.info(
        "%d %ss refused as too large for the collector (%s): sent in halves",
        len(batch),
        what,
        reason,
    )
    middle = len(batch) // 2
    if not export_in_parts(batch[:middle], send, refusal, count, what):
        count("failed", len(batch) - middle)
        return False
    return export_in_parts(batch[middle:], send, refusal, count, what)
