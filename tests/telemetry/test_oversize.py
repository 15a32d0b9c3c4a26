"""The halving of batches refused as too large, and how a refusal is recognised (the
exporters against a real rotel: tests/reliability/test_bounded_items.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.otlp.proto.http._common import RequestPayloadTooLargeError

from aiva.fast.export_outcomes import ExportOutcomes, too_large, watch_outcomes
from aiva.telemetry.oversize import export_in_parts

LIMIT = 100


class Collector:
    """Takes a batch of sizes whose sum is at most LIMIT; refuses a larger one as too large."""

    def __init__(self, down_after: int | None = None) -> None:
        self.sent: list[Sequence[int]] = []
        self.received: list[int] = []
        self.refused = False
        self.down_after = down_after
        self.counts: dict[str, int] = {"exported": 0, "failed": 0, "dropped": 0}

    def send(self, batch: Sequence[int]) -> bool:
        self.sent.append(batch)
        self.refused = sum(batch) > LIMIT
        if self.refused:
            return False
        if self.down_after is not None and len(self.received) >= self.down_after:
            return False
        self.received += batch
        return True

    def refusal(self) -> str | None:
        return "too large" if self.refused else None

    def count(self, outcome: Any, items: int) -> None:
        self.counts[outcome] += items

    def export(self, batch: Sequence[int]) -> bool:
        return export_in_parts(batch, self.send, self.refusal, self.count, "span")


def test_a_batch_that_fits_goes_whole() -> None:
    collector = Collector()
    assert collector.export([10] * 10)
    assert collector.sent == [[10] * 10]
    assert collector.counts == {"exported": 10, "failed": 0, "dropped": 0}


def test_a_refused_batch_goes_in_halves_until_each_part_fits() -> None:
    collector = Collector()
    batch = [10] * 40  # 400: four parts of 100
    assert collector.export(batch)
    assert collector.received == batch  # in order, each item once
    assert [len(part) for part in collector.sent] == [40, 20, 10, 10, 20, 10, 10]
    assert collector.counts == {"exported": 40, "failed": 0, "dropped": 0}


def test_an_item_too_large_alone_is_dropped_and_the_rest_arrive() -> None:
    collector = Collector()
    batch = [1, 2, 3, 500, 4, 5, 6]
    assert collector.export(batch)
    assert collector.received == [1, 2, 3, 4, 5, 6]
    assert collector.counts == {"exported": 6, "failed": 0, "dropped": 1}
    # At most 2n - 1 requests, however the sizes fall; here the halving went 3 deep.
    assert len(collector.sent) <= 2 * len(batch) - 1


def test_every_item_too_large_sends_at_most_twice_the_batch() -> None:
    collector = Collector()
    assert collector.export([500] * 64)
    assert len(collector.sent) == 2 * 64 - 1
    assert collector.counts == {"exported": 0, "failed": 0, "dropped": 64}


def test_once_a_part_fails_otherwise_the_rest_is_failed_unsent() -> None:
    collector = Collector(down_after=0)  # the collector goes down: nothing is taken
    assert not collector.export([60] * 4)  # 240: refused, then [60, 60] refused, [60] fails
    assert [len(part) for part in collector.sent] == [4, 2, 1]
    assert collector.counts == {"exported": 0, "failed": 4, "dropped": 0}


class RpcError(grpc.RpcError):  # type: ignore[misc]
    """What a gRPC call raises: a status code, its details and trailing metadata."""

    def __init__(self, code: grpc.StatusCode, metadata: tuple[tuple[str, bytes], ...] = ()):
        self._code, self._metadata = code, metadata

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "decoded message length too large"

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        return self._metadata


@pytest.mark.parametrize(
    ("error", "attributes", "refused"),
    [
        (RpcError(grpc.StatusCode.OUT_OF_RANGE), None, True),  # tonic (rotel)
        (RpcError(grpc.StatusCode.RESOURCE_EXHAUSTED), None, True),  # grpc-go, grpc's own
        # RESOURCE_EXHAUSTED with RetryInfo: the collector is busy, the size is no matter.
        (
            RpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, (("google.rpc.retryinfo-bin", b""),)),
            None,
            False,
        ),
        (RpcError(grpc.StatusCode.UNAVAILABLE), None, False),
        (None, {"http.response.status_code": 413}, True),
        (None, {"http.response.status_code": 503}, False),
        (RequestPayloadTooLargeError("over max_request_size"), None, True),
        (ConnectionError("refused"), None, False),
        (None, None, False),
    ],
)
def test_a_refusal_as_too_large_is_told_from_other_failures(
    error: Any, attributes: Any, refused: bool
) -> None:
    assert (too_large(error, attributes) is not None) is refused


def test_the_sdk_exporters_errors_are_watched() -> None:
    exporter = OTLPSpanExporter(endpoint="http://127.0.0.1:9", insecure=True, timeout=1)
    outcomes = watch_outcomes(exporter)
    assert isinstance(outcomes, ExportOutcomes)
    assert exporter._metrics is outcomes
    with outcomes.export_operation(3) as result:
        result.error = RpcError(grpc.StatusCode.OUT_OF_RANGE)
    assert outcomes.refused_as_too_large() == "OUT_OF_RANGE: decoded message length too large"
    assert outcomes.refused_as_too_large() is None  # read once
    with outcomes.export_operation(3):
        pass
    assert outcomes.refused_as_too_large() is None
    exporter.shutdown()


def test_an_exporter_without_the_hook_is_left_alone() -> None:
    # Where the SDK's exporters lack it, the fast layer's self-test (outcomes_work) fails
    # and says so once; an exporter of another kind is simply left alone.
    class Plain:
        pass

    assert watch_outcomes(Plain()) is None
