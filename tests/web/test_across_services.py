"""One trace across two real services: an existing FastAPI app under `aiva.instrument`,
run by plain `uvicorn`, calls an existing Starlette app served by `aiva serve
MODULE:APP`, which reads a real PostgreSQL and a real Redis; rotel receives it all."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.ports import free_port
from infra.postgres import Postgres
from infra.processes import ManagedProcess
from infra.redis import RedisServer
from infra.rotel import Rotel
from infra.service import REPO_ROOT, SRC_DIR, AivaService, answers, service_env
from tests.web.test_instrument import request_count, series

PYTHONPATH = os.pathsep.join([str(SRC_DIR), str(REPO_ROOT)])


def telemetry_env(collector: Rotel, service_name: str) -> dict[str, str]:
    return {
        "PYTHONPATH": PYTHONPATH,
        "OTEL_SERVICE_NAME": service_name,
        "AIVA_TELEMETRY__OTLP__ENDPOINT": collector.grpc_endpoint,
        "AIVA_TELEMETRY__OTLP__TIMEOUT_S": "2",
        "AIVA_TELEMETRY__METRICS__EXPORT_INTERVAL_S": "1",
        "AIVA_HEALTH__CHECKS__CPU__ENABLED": "false",
    }


class UvicornApp:
    """`python -m uvicorn MODULE:APP` on a free port: a user running uvicorn directly."""

    def __init__(self, target: str, env: dict[str, str], workdir: Path) -> None:
        self.port = free_port()
        config_dir = workdir / "config"
        config_dir.mkdir(exist_ok=True)
        argv = [sys.executable, "-m", "uvicorn", target, "--host", "127.0.0.1"]
        self.process = ManagedProcess(
            argv=[*argv, "--port", str(self.port)],
            log_path=workdir / "uvicorn.log",
            env=service_env(env, config_dir),
            cwd=workdir,
            name="uvicorn",
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process.start(lambda: answers(self.base_url + "/livez"), 30)


@pytest.fixture
def uvicorn_app(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[str, dict[str, str]], UvicornApp]]:
    started: list[UvicornApp] = []

    def make(target: str, env: dict[str, str]) -> UvicornApp:
        app = UvicornApp(target, env, tmp_path_factory.mktemp("uvicorn"))
        started.append(app)
        app.start()
        return app

    yield make
    for app in started:
        app.process.stop()


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
    return lines


@pytest.mark.fast_layer("fastapi_telemetry_config")
def test_one_trace_across_two_services(
    rotel: Callable[[], Rotel],
    postgres: Callable[[], Postgres],
    redis_server: Callable[[], RedisServer],
    aiva_service: Callable[..., AivaService],
    uvicorn_app: Callable[[str, dict[str, str]], UvicornApp],
) -> None:
    collector, database, cache = rotel(), postgres(), redis_server()
    inventory = aiva_service(
        env={
            **telemetry_env(collector, "inventory"),
            "INVENTORY_DSN": database.dsn,
            "INVENTORY_REDIS": cache.url,
        },
        args=["tests.apps.inventory_service:app"],
    )
    orders = uvicorn_app(
        "tests.apps.orders_service:app",
        {**telemetry_env(collector, "orders"), "INVENTORY_URL": inventory.base_url},
    )

    response = httpx.get(orders.base_url + "/orders/4", headers={"X-User": "ada"}, timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["stock"]["count"] == 40  # PostgreSQL answered through B

    def by_name(name: str, service: str) -> Callable[[dict[str, Any]], bool]:
        return lambda s: s["name"] == name and s["resource"].get("service.name") == service

    [a_server] = collector.wait_for_spans(by_name("GET /orders/{order_id}", "orders"))
    trace_id = a_server["trace_id"]

    def in_trace(span: dict[str, Any]) -> bool:
        return bool(span["trace_id"] == trace_id)

    spans = collector.wait_for_spans(in_trace, count=5, timeout=15)
    servers = [s for s in spans if s["kind"] == "SERVER"]
    clients = [s for s in spans if s["kind"] == "CLIENT"]
    assert len(servers) == 2, spans  # exactly one server span in each service
    [b_server] = [s for s in servers if s["resource"].get("service.name") == "inventory"]
    assert b_server["name"] == "GET /stock/{item_id}"
    assert a_server["parent_id"] == ""

    [a_client] = [s for s in clients if s["resource"].get("service.name") == "orders"]
    assert a_client["parent_id"] == a_server["span_id"]
    assert b_server["parent_id"] == a_client["span_id"]  # traceparent crossed the wire

    b_clients = [s for s in clients if s["resource"].get("service.name") == "inventory"]
    database_spans = [s for s in b_clients if "postgresql" in json.dumps(s["attributes"])]
    cache_spans = [s for s in b_clients if "redis" in json.dumps(s["attributes"])]
    assert database_spans and cache_spans, b_clients
    assert all(s["parent_id"] == b_server["span_id"] for s in database_spans + cache_spans)

    # B's own log line, and its access line, carry the trace.
    b_lines = json_lines(inventory.log_text())
    [stock_line] = [line for line in b_lines if line["message"] == "stock read"]
    assert stock_line["trace_id"] == trace_id
    access = [line for line in b_lines if line["logger"] == "aiva.access"]
    assert any(line["trace_id"] == trace_id for line in access)

    # A runs under plain uvicorn: its lines are aiva's JSON on the console, and OTLP
    # log records at the collector, without any call beyond instrument().
    a_access = [
        line
        for line in json_lines(orders.process.log_text())
        if line["logger"] == "aiva.access" and line["trace_id"] == trace_id
    ]
    assert a_access and a_access[0]["http_route"] == "/orders/{order_id}"
    collector.wait_for_log_records(
        lambda r: r["trace_id"] == trace_id and r["resource"].get("service.name") == "orders"
    )

    # aiva's pipeline is up before B's own lifespan starts and flushed after it ends:
    # both of its lifespan's lines reach the collector.
    assert inventory.terminate(timeout=20) == 0
    for line in ("inventory ready", "inventory closing"):
        collector.wait_for_log_records(
            lambda r, line=line: (
                r["body"] == line  # type: ignore[misc]
                and r["resource"].get("service.name") == "inventory"
            )
        )


@pytest.mark.fast_layer("fastapi_telemetry_config")
def test_a_fastapi_app_makes_one_server_span_and_one_series_per_route(
    rotel: Callable[[], Rotel], aiva_service: Callable[..., AivaService]
) -> None:
    """Served by `aiva serve MODULE:FACTORY --factory`, with aiva's providers global:
    FastAPI's own telemetry would add a span and a series of its own."""
    collector = rotel()
    orders = aiva_service(
        env=telemetry_env(collector, "orders"),
        args=["tests.apps.orders_api:build", "--factory"],
        ready_path="/livez",  # the orders API has no GET / of its own
    )
    with orders.client() as client:
        for order in (1, 2, 3):
            assert client.get(f"/orders/{order}/check").status_code == 200
        assert client.get("/orders/0/check").status_code == 409
        text = client.get("/metrics").text

    spans = collector.wait_for_spans(
        lambda s: s["name"] == "GET /orders/{order_id}/check", count=4, timeout=10
    )
    traces = {s["trace_id"] for s in spans}
    assert len(traces) == 4
    every = collector.spans()
    assert not [s for s in every if s["trace_id"] in traces and s["scope"] != "aiva.http"]
    assert len([s for s in every if s["trace_id"] in traces]) == 4

    counts = series(text, "http_server_request_duration_seconds_count")
    route = [s for s in counts if s.get("http_route") == "/orders/{order_id}/check"]
    assert len(route) == 2, route  # 200 and 409, one series each
    assert request_count(text, "/orders/{order_id}/check") == 4
    assert not [s for s in counts if "fastapi" in s.get("otel_scope_name", "")]
    assert not [s for s in counts if "http_route" not in s and s != {}], counts
