"""Pure logic of the request telemetry: methods, header parsing, exclusion rules."""

from __future__ import annotations

from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.trace import NoOpTracerProvider

from aiva.telemetry.http import HttpTelemetry, normalise_method, read_headers


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
