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

import logging
from collections.abc import Callable, Sequence
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
