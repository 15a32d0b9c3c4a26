"""Exemplars in OTLP histogram points, at a real collector (rotel): they name spans the
collector received, under the default trace_based filter and OTEL_METRICS_EXEMPLAR_FILTER."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest

from infra.rotel import Rotel
from infra.service import AivaService
from infra.wait import WaitTimeout
from tests.telemetry.test_otlp import otlp_env

SAMPLED_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
UNSAMPLED_TRACE = "5c0a3f1e8d2b4a6c9e7f1a3b5c7d9e0f"
CALLER_SPAN = "00f067aa0ba902b7"
HISTOGRAMS = ("http.server.request.duration", "aiva.operation.duration")


def exemplars_of(collector: Rotel, name: str, since: int) -> list[dict[str, Any]]:
    """Every exemplar of every point of `name` received since `since`, with its point's
    attributes."""
    return [
        {**exemplar, "point": attributes}
        for metric in collector.metrics(since)
        if metric["name"] == name
        for attributes, exemplars in zip(
            metric["point_attributes"], metric["point_exemplars"], strict=True
        )
        for exemplar in exemplars
    ]


def send_traffic(service: AivaService) -> None:
    with service.client() as client:
        for index in range(3):
            sampled = f"00-{SAMPLED_TRACE}-{CALLER_SPAN}-01"
            assert client.get("/api/demo/work", headers={"traceparent": sampled}).status_code == 200
            assert client.get(f"/api/demo/items/{index}").status_code == 200
            # The caller decided not to sample: parent-based sampling follows it.
            unsampled = f"00-{UNSAMPLED_TRACE}-{CALLER_SPAN}-00"
            assert (
                client.get("/api/demo/work", headers={"traceparent": unsampled}).status_code == 200
            )


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_duration_exemplars_name_spans_the_collector_received(
    rotel: Callable[[], Rotel], aiva_service: Callable[..., AivaService], protocol: str
) -> None:
    collector = rotel()
    service = aiva_service(env=otlp_env(collector, protocol))  # the default filter
    since = collector.mark()
    send_traffic(service)

    # Every export carries the exemplars offered since the previous one: wait until those
    # of both histograms have come, the work request's included.
    def arrived(c: Rotel) -> bool:
        return all(
            any(e["trace_id"] == SAMPLED_TRACE for e in exemplars_of(c, name, since))
            for name in HISTOGRAMS
        )

    collector.wait_for(arrived, timeout=15.0, since=since)
    # The spans they name (the readiness poll's, before `since`, too), once exported.
    named = {
        (e["trace_id"], e["span_id"])
        for name in HISTOGRAMS
        for e in exemplars_of(collector, name, since)
    }
    spans: dict[tuple[str, str], dict[str, Any]] = {}

    def spans_arrived(c: Rotel) -> bool:
        spans.update({(s["trace_id"], s["span_id"]): s for s in c.spans()})
        return named <= spans.keys()

    with contextlib.suppress(WaitTimeout):  # the assertions below say which one is missing
        collector.wait_for(spans_arrived, timeout=15.0)

    requests = exemplars_of(collector, "http.server.request.duration", since)
    assert requests
    for exemplar in requests:
        span = spans.get((exemplar["trace_id"], exemplar["span_id"]))
        assert span is not None, f"an exemplar names no span the collector received: {exemplar}"
        # The request's own server span, on the point of its route.
        assert span["kind"] == "SERVER"
        assert span["attributes"]["http.route"] == exemplar["point"]["http.route"]
        assert span["start_time"] <= exemplar["timestamp"] <= span["end_time"]
        assert 0 < exemplar["value"] * 1e9 <= span["end_time"] - span["start_time"]
    routes = {e["point"]["http.route"] for e in requests}
    assert {"/api/demo/work", "/api/demo/items/{item_id}"} <= routes

    operations = exemplars_of(collector, "aiva.operation.duration", since)
    assert operations
    for exemplar in operations:
        span = spans.get((exemplar["trace_id"], exemplar["span_id"]))
        assert span is not None, f"an exemplar names no span the collector received: {exemplar}"
        assert span["name"] == exemplar["point"]["operation"]  # the operation's own span
    assert {"demo.work", "demo.fetch", "demo.compute"} <= {
        e["point"]["operation"] for e in operations if e["trace_id"] == SAMPLED_TRACE
    }

    # trace_based: the unsampled requests gave no exemplar (always_on would have).
    every = requests + operations
    assert all(e["trace_id"] != UNSAMPLED_TRACE for e in every)
    assert not any(s["trace_id"] == UNSAMPLED_TRACE for s in spans.values())


def test_always_off_from_the_standard_variable_gives_no_exemplars(
    rotel: Callable[[], Rotel], aiva_service: Callable[..., AivaService]
) -> None:
    collector = rotel()
    service = aiva_service(
        env=otlp_env(collector, "grpc", OTEL_METRICS_EXEMPLAR_FILTER="always_off")
    )
    since = collector.mark()
    send_traffic(service)

    # Two exports after the traffic: each histogram's points, and not one exemplar.
    def exported_twice(c: Rotel) -> bool:
        names = [m["name"] for m in c.metrics(since)]
        return all(names.count(name) >= 2 for name in HISTOGRAMS)

    collector.wait_for(exported_twice, timeout=15.0, since=since)
    # Traced all the same.
    collector.wait_for_spans(lambda s: s["trace_id"] == SAMPLED_TRACE, timeout=15.0)
    for name in HISTOGRAMS:
        assert exemplars_of(collector, name, since) == [], name
