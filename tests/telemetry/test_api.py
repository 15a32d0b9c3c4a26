"""The library API: operation, log_context, tracer, meter (sync, async, concurrent tasks)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from opentelemetry.trace import StatusCode

import aiva
from aiva.context import log_fields_var
from tests.telemetry.conftest import InMemoryTelemetry


def test_operation_context_manager(
    otel: InMemoryTelemetry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiva.operation")
    with aiva.operation("load.user", user_kind="admin"):
        pass
    [span] = otel.spans.get_finished_spans()
    assert span.name == "load.user"
    assert span.attributes == {"user_kind": "admin"}
    [point] = otel.metric_points("aiva.operation.duration")
    assert point.attributes == {"operation": "load.user"}  # type: ignore[attr-defined]
    assert point.count == 1  # type: ignore[attr-defined]
    levels = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "aiva.operation"]
    assert levels == [
        ("DEBUG", "operation load.user started"),
        ("INFO", "operation load.user finished"),
    ]
    assert caplog.records[-1].duration_ms >= 0  # type: ignore[attr-defined]


def test_operation_records_and_propagates_errors(
    otel: InMemoryTelemetry, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(ValueError, match="boom"), aiva.operation("parse"):
        raise ValueError("boom")
    [span] = otel.spans.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]
    [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert error.getMessage() == "operation parse failed: boom"
    [point] = otel.metric_points("aiva.operation.duration")
    assert point.attributes == {"operation": "parse", "error.type": "ValueError"}  # type: ignore[attr-defined]


def test_operation_decorates_sync_and_async(otel: InMemoryTelemetry) -> None:
    @aiva.operation("sync.step")
    def sync_step(x: int) -> int:
        return x + 1

    @aiva.operation("async.step")
    async def async_step(x: int) -> int:
        await asyncio.sleep(0)
        return x * 2

    assert sync_step(1) == 2
    assert asyncio.run(async_step(3)) == 6
    assert sorted(s.name for s in otel.spans.get_finished_spans()) == ["async.step", "sync.step"]


def test_operation_async_context_manager_nests(otel: InMemoryTelemetry) -> None:
    async def run() -> None:
        async with aiva.operation("outer"):
            with aiva.operation("inner"):
                await asyncio.sleep(0)

    asyncio.run(run())
    spans = {s.name: s for s in otel.spans.get_finished_spans()}
    assert spans["inner"].parent is not None
    assert spans["inner"].parent.span_id == spans["outer"].context.span_id


def test_log_context_binds_fields_to_logs_and_span(
    otel: InMemoryTelemetry, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        aiva.tracer().start_as_current_span("request"),
        aiva.log_context(user_id="u1", component="billing"),
    ):
        assert log_fields_var.get() == {"user_id": "u1", "component": "billing"}
    assert log_fields_var.get() is None
    [span] = otel.spans.get_finished_spans()
    assert span.attributes == {"user_id": "u1", "component": "billing"}


def test_log_context_never_leaks_between_concurrent_tasks(otel: InMemoryTelemetry) -> None:
    seen: dict[str, object] = {}

    async def task(name: str, delay: float) -> None:
        with aiva.log_context(user_id=name):
            await asyncio.sleep(delay)
            with aiva.log_context(session_id=f"s-{name}"):
                await asyncio.sleep(delay)
                seen[name] = dict(log_fields_var.get() or {})
        seen[f"{name}-after"] = log_fields_var.get()

    async def run() -> None:
        await asyncio.gather(task("a", 0.02), task("b", 0.01), task("c", 0.0))

    asyncio.run(run())
    for name in "abc":
        assert seen[name] == {"user_id": name, "session_id": f"s-{name}"}
        assert seen[f"{name}-after"] is None


def test_meter_and_tracer_come_from_the_configured_providers(otel: InMemoryTelemetry) -> None:
    aiva.meter().create_counter("orders.placed").add(3, {"kind": "web"})
    with aiva.tracer().start_as_current_span("custom"):
        pass
    [point] = otel.metric_points("orders.placed")
    assert point.value == 3  # type: ignore[attr-defined]
    assert [s.name for s in otel.spans.get_finished_spans()] == ["custom"]
