"""The running service against a real collector (rotel) over gRPC and HTTP/protobuf."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.ports import free_port
from infra.processes import ManagedProcess
from infra.rotel import Rotel
from infra.service import REPO_ROOT, AivaService, answers, service_env
from tests.apps.mounted_service import MOUNTED_TEMPLATE

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_SPAN_ID = "b7ad6b7169203331"


def otlp_env(collector: Rotel, protocol: str, **more: str) -> dict[str, str]:
    endpoint = collector.grpc_endpoint if protocol == "grpc" else collector.http_endpoint
    return {
        "AIVA_TELEMETRY__OTLP__ENDPOINT": endpoint,
        "AIVA_TELEMETRY__OTLP__PROTOCOL": protocol,
        "AIVA_TELEMETRY__OTLP__TIMEOUT_S": "2",
        "AIVA_TELEMETRY__METRICS__EXPORT_INTERVAL_S": "1",
        "OTEL_SERVICE_NAME": "otlp-test",
        "OTEL_RESOURCE_ATTRIBUTES": "team=core",
        **more,
    }


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_signals_reach_the_collector(
    rotel: Callable[[], Rotel], aiva_service: Callable[..., AivaService], protocol: str
) -> None:
    collector = rotel()
    service = aiva_service(env=otlp_env(collector, protocol))
    with service.client() as client:
        assert client.get("/api/demo/items/7").status_code == 200
        work = client.get(
            "/api/demo/work", headers={"traceparent": f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"}
        )
        assert work.status_code == 200

    [item] = collector.wait_for_spans(lambda s: s["name"] == "GET /api/demo/items/{item_id}")
    assert item["kind"] == "SERVER"
    assert item["attributes"]["http.request.method"] == "GET"
    assert item["attributes"]["http.route"] == "/api/demo/items/{item_id}"
    assert item["attributes"]["http.response.status_code"] == 200
    assert item["attributes"]["url.path"] == "/api/demo/items/7"
    assert item["attributes"]["url.scheme"] == "http"
    resource = item["resource"]
    assert resource["service.name"] == "otlp-test"
    assert resource["service.version"] == "0.1.0"
    assert resource["deployment.environment.name"] == "development"
    assert resource["team"] == "core"
    assert resource["process.pid"] == service.pid
    assert {"service.instance.id", "host.name"} <= set(resource)

    # The incoming traceparent is continued: same trace, parented on the caller's span.
    [server] = collector.wait_for_spans(lambda s: s["name"] == "GET /api/demo/work")
    assert (server["trace_id"], server["parent_id"]) == (TRACE_ID, PARENT_SPAN_ID)
    children = collector.wait_for_spans(
        lambda s: s["trace_id"] == TRACE_ID and s["kind"] == "INTERNAL", count=3
    )
    assert {s["name"] for s in children} == {"demo.work", "demo.fetch", "demo.compute"}

    # A log line written inside the request carries its trace and span ids.
    [line] = collector.wait_for_log_records(lambda r: str(r["body"]).startswith("processed "))
    work_span = next(s for s in children if s["name"] == "demo.work")
    assert (line["trace_id"], line["span_id"]) == (TRACE_ID, work_span["span_id"])
    assert line["severity_text"] == "INFO"
    assert line["attributes"]["component"] == "demo"
    assert line["attributes"]["request_id"] == work.headers["x-request-id"]

    collector.wait_for_metric("http.server.request.duration")
    collector.wait_for_metric("http.server.active_requests")
    collector.wait_for_metric("process.cpu.time")


def test_one_server_span_per_request_and_errors_recorded(
    rotel: Callable[[], Rotel], aiva_service: Callable[..., AivaService]
) -> None:
    collector = rotel()
    service = aiva_service(env=otlp_env(collector, "grpc"))
    for _ in range(5):
        httpx.get(f"{service.base_url}/api/demo/items/1", timeout=5)
    failed = httpx.get(f"{service.base_url}/api/demo/fail", timeout=5)
    assert failed.status_code == 500

    [error] = collector.wait_for_spans(lambda s: s["name"] == "GET /api/demo/fail")
    assert error["status"] == "ERROR"
    assert error["attributes"]["http.response.status_code"] == 500
    assert error["attributes"]["error.type"] == "RuntimeError"
    [event] = [e for e in error["events"] if e["name"] == "exception"]
    assert event["attributes"]["exception.message"] == "demo failure"

    spans = collector.wait_for_spans(lambda s: s["kind"] == "SERVER", count=6)
    per_trace = Counter(s["trace_id"] for s in spans)
    assert set(per_trace.values()) == {1}
    assert len(spans) == 6 + 1  # and the readiness poll's GET /


def test_probe_and_metrics_paths_are_not_traced(
    rotel: Callable[[], Rotel], aiva_service: Callable[..., AivaService]
) -> None:
    collector = rotel()
    service = aiva_service(env=otlp_env(collector, "grpc"))
    with service.client() as client:
        for path in ("/metrics", "/livez", "/readyz/redis", "/health/live", "/ready"):
            client.get(path)
        client.get("/api/demo/items/marker")
    collector.wait_for_spans(lambda s: s["attributes"].get("url.path") == "/api/demo/items/marker")
    paths = {s["attributes"].get("url.path") for s in collector.spans() if s["kind"] == "SERVER"}
    assert paths == {"/", "/api/demo/items/marker"}


def test_sampler_ratio_zero_sends_no_request_spans(
    rotel: Callable[[], Rotel], aiva_service: Callable[..., AivaService]
) -> None:
    collector = rotel()
    env = otlp_env(collector, "grpc", AIVA_TELEMETRY__TRACES__SAMPLER_RATIO="0")
    service = aiva_service(env=env)
    for _ in range(20):
        httpx.get(f"{service.base_url}/api/demo/items/1", timeout=5)
    # Logs still flow: wait for the access lines, then no span may have arrived.
    collector.wait_for_log_records(lambda r: str(r["body"]).startswith("GET /api/demo/items"), 20)
    assert service.terminate() == 0
    assert collector.spans() == []


def test_sigterm_mid_request_completes_and_flushes_its_span(
    rotel: Callable[[], Rotel], aiva_service: Callable[..., AivaService]
) -> None:
    collector = rotel()
    env = otlp_env(collector, "grpc", AIVA_TELEMETRY__METRICS__EXPORT_INTERVAL_S="60")
    service = aiva_service(env=env)
    outcome: dict[str, httpx.Response] = {}

    def slow_request() -> None:
        outcome["response"] = httpx.get(
            f"{service.base_url}/api/demo/work?delay_ms=1500",
            headers={"x-request-id": "last"},
            timeout=30,
        )

    thread = threading.Thread(target=slow_request)
    thread.start()
    time.sleep(0.5)
    # The batch processor holds spans for up to 5 s and metrics wait 60 s: only the
    # shutdown flush can deliver them before the process exits.
    assert service.terminate(timeout=20) == 0
    thread.join(timeout=20)
    assert outcome["response"].status_code == 200
    [span] = [s for s in collector.spans() if s["name"] == "GET /api/demo/work"]
    assert span["attributes"]["http.response.status_code"] == 200
    assert "http.server.request.duration" in collector.metric_names()
    assert any(
        r["attributes"].get("request_id") == "last" and str(r["body"]) == "GET /api/demo/work 200"
        for r in collector.log_records()
    )


def is_demo_server_span(span: dict[str, Any]) -> bool:
    # By name: the stock instrumentation speaks the old conventions (no url.path).
    return span["kind"] == "SERVER" and span["name"].startswith("GET /api/demo")


def server_spans_per_trace(collector: Rotel, count: int) -> Counter[str]:
    collector.wait_for_spans(is_demo_server_span, count=count)
    time.sleep(1)  # anything doubled would arrive in the same batch or the next one
    return Counter(s["trace_id"] for s in collector.spans() if is_demo_server_span(s))


def start_test_app(module: str, env: dict[str, str], tmp_path: Path) -> tuple[ManagedProcess, str]:
    """Run tests/apps/<module> (a service built on aiva) on a free port; its process and URL."""
    port = free_port()
    full_env = service_env({**env, "AIVA_SERVER__PORT": str(port)}, tmp_path)
    full_env["PYTHONPATH"] += os.pathsep + str(REPO_ROOT)
    process = ManagedProcess(
        argv=[sys.executable, "-m", f"tests.apps.{module}"],
        log_path=tmp_path / "service.log",
        env=full_env,
        cwd=tmp_path,
        name=module,
    )
    url = f"http://127.0.0.1:{port}"

    process.start(lambda: answers(url + "/"), 30)
    return process, url


@pytest.mark.parametrize("extra", ["contrib", "starlette"])
def test_one_server_span_when_the_stack_is_instrumented_twice(
    rotel: Callable[[], Rotel], tmp_path: Path, extra: str
) -> None:
    collector = rotel()
    more = {"OTEL_BSP_SCHEDULE_DELAY": "200", "EXTRA_INSTRUMENTATION": extra}
    process, url = start_test_app(
        "instrumented_twice", otlp_env(collector, "grpc", **more), tmp_path
    )
    try:
        for _ in range(5):
            assert httpx.get(url + "/api/demo/items/one", timeout=5).status_code == 200
        per_trace = server_spans_per_trace(collector, 5)
        assert len(per_trace) == 5 and set(per_trace.values()) == {1}, per_trace
        names = {
            s["name"]
            for s in collector.spans()
            if s["attributes"].get("url.path") == "/api/demo/items/one"
        }
        assert names == {"GET /api/demo/items/{item_id}"}
        # aiva's middleware wraps the whole stack, so it makes the one span: the contrib
        # middleware is taken out, Starlette's own sees the shared scope flag and stands by.
        assert {s["scope"] for s in collector.spans() if s["kind"] == "SERVER"} == {"aiva.http"}
    finally:
        process.stop(15)


def test_routes_under_mounts_keep_their_full_template(
    rotel: Callable[[], Rotel], tmp_path: Path
) -> None:
    # Span names, span and metric attributes, and the /metrics labels all carry the
    # template with every Mount prefix, never the raw path.
    collector = rotel()
    process, url = start_test_app("mounted_service", otlp_env(collector, "grpc"), tmp_path)
    try:
        for order_id in ("17", "18"):
            response = httpx.get(f"{url}/api/v1/orders/{order_id}", timeout=5)
            assert response.json() == {"order": order_id}
        metrics_text = httpx.get(url + "/metrics", timeout=5).text
        spans = collector.wait_for_spans(lambda s: s["name"] == f"GET {MOUNTED_TEMPLATE}", 2)
        assert {s["attributes"]["http.route"] for s in spans} == {MOUNTED_TEMPLATE}
        assert {s["attributes"]["url.path"] for s in spans} == {
            "/api/v1/orders/17",
            "/api/v1/orders/18",
        }
        series = [
            line
            for line in metrics_text.splitlines()
            if line.startswith("http_server_request_duration_seconds_count{") and "/orders/" in line
        ]
        assert len(series) == 1, series
        assert f'http_route="{MOUNTED_TEMPLATE}"' in series[0]
        assert series[0].rsplit(" ", 1)[1] == "2.0"
    finally:
        process.stop(15)


def test_stock_instrumentation_is_selectable_and_single(
    rotel: Callable[[], Rotel], aiva_service: Callable[..., AivaService]
) -> None:
    collector = rotel()
    env = otlp_env(
        collector, "grpc", AIVA_TELEMETRY__INSTRUMENTATION="stock", OTEL_BSP_SCHEDULE_DELAY="200"
    )
    service = aiva_service(env=env)
    for _ in range(3):
        assert httpx.get(f"{service.base_url}/api/demo/items/one", timeout=5).status_code == 200
    per_trace = server_spans_per_trace(collector, 3)
    assert len(per_trace) == 3 and set(per_trace.values()) == {1}, per_trace
    scopes = {s["scope"] for s in collector.spans() if s["kind"] == "SERVER"}
    assert any("starlette" in str(scope) for scope in scopes), scopes
