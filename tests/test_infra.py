"""The test infrastructure itself: every component really starts, answers, stops and restarts."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from infra.postgres import Postgres
from infra.processes import ManagedProcess, ProcessError
from infra.prometheus import Prometheus
from infra.proxy import TcpProxy
from infra.redis import RedisServer
from infra.require import require_binary
from infra.rotel import Rotel
from infra.service import AivaService

Record = dict[str, Any]


def _send_span(exporter: Any, service_name: str, span_name: str, attributes: dict[str, Any]) -> str:
    """Export one SERVER span (plus one child) through exporter; returns the trace id (hex)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import SpanKind

    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name, "deployment.environment": "test"})
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        tracer = provider.get_tracer("infra-test")
        with (
            tracer.start_as_current_span(
                span_name, kind=SpanKind.SERVER, attributes=attributes
            ) as span,
            tracer.start_as_current_span("child"),
        ):
            pass
        return format(span.get_span_context().trace_id, "032x")
    finally:
        provider.shutdown()


def _send_log(exporter: Any, service_name: str, body: str) -> None:
    """Export one WARN log record through exporter."""
    from opentelemetry._logs import SeverityNumber
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
    from opentelemetry.sdk.resources import Resource

    provider = LoggerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    try:
        provider.get_logger("infra-test").emit(
            body=body,
            severity_number=SeverityNumber.WARN,
            severity_text="WARN",
            attributes={"k": "v"},
        )
    finally:
        provider.shutdown()


def _send_counter(exporter: Any, service_name: str, name: str) -> None:
    """Export one counter through exporter."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource

    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=60_000)
    provider = MeterProvider(
        resource=Resource.create({"service.name": service_name}), metric_readers=[reader]
    )
    try:
        provider.get_meter("infra-test").create_counter(name).add(2, {"route": "/x"})
        provider.force_flush()
    finally:
        provider.shutdown()


def _grpc_span_exporter(collector: Rotel) -> Any:
    """OTLP/gRPC span exporter aimed at the collector."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=collector.grpc_endpoint, insecure=True, timeout=5)


def _service_spans(collector: Rotel, service: str, count: int) -> list[Record]:
    """Wait for count spans of this service.name."""
    return collector.wait_for_spans(
        lambda s: s["resource"].get("service.name") == service, count=count, timeout=10
    )


def test_rotel_receives_otlp_over_grpc_and_http(rotel: Callable[[], Rotel]) -> None:
    """Spans over gRPC and HTTP/protobuf, a log (gRPC) and a metric (HTTP) are in the dump."""
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )

    collector = rotel()
    service = f"infra-{uuid.uuid4().hex[:8]}"
    attrs = {"http.route": "/items/{item_id}", "n": 5, "ok": True, "note": "two\nlines"}
    grpc_trace = _send_span(_grpc_span_exporter(collector), service, "GET /items/{item_id}", attrs)
    http_exporter = HttpSpanExporter(endpoint=f"{collector.http_endpoint}/v1/traces", timeout=5)
    http_trace = _send_span(http_exporter, service, "POST /http", {"via": "http"})
    _send_log(
        OTLPLogExporter(endpoint=collector.grpc_endpoint, insecure=True, timeout=5),
        service,
        "hello log",
    )
    _send_counter(
        OTLPMetricExporter(endpoint=f"{collector.http_endpoint}/v1/metrics", timeout=5),
        service,
        "infra_hits",
    )

    spans = {s["name"]: s for s in _service_spans(collector, service, count=4)}
    server = spans["GET /items/{item_id}"]
    assert (server["trace_id"], server["kind"], server["parent_id"]) == (grpc_trace, "SERVER", "")
    assert server["attributes"] == attrs
    assert (
        server["resource"]["service.name"] == service
        and server["resource"]["deployment.environment"] == "test"
    )
    assert spans["POST /http"]["trace_id"] == http_trace and spans["POST /http"]["attributes"] == {
        "via": "http"
    }
    children = [s for s in collector.spans() if s["name"] == "child"]
    assert {c["parent_id"] for c in children} == {server["span_id"], spans["POST /http"]["span_id"]}
    (log,) = collector.wait_for_log_records(lambda r: r["body"] == "hello log")
    assert (log["severity"], log["attributes"], log["resource"]["service.name"]) == (
        "WARN",
        {"k": "v"},
        service,
    )
    assert collector.wait_for_metric("infra_hits")[0]["type"] == "Sum"
    assert "infra_hits" in collector.metric_names()


def test_rotel_restart_keeps_ports(rotel: Callable[[], Rotel]) -> None:
    """After stop() nothing listens; restart() comes back on the same ports and receives again."""
    collector = rotel()
    ports, first_pid = (collector.grpc_port, collector.http_port), collector.pid
    collector.stop()
    assert not collector.running
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", collector.grpc_port), timeout=0.5).close()
    collector.start()
    assert (collector.grpc_port, collector.http_port) == ports and collector.pid != first_pid
    mark = collector.mark()
    trace_id = _send_span(_grpc_span_exporter(collector), "infra-restart", "after-restart", {})
    found = collector.wait_for_spans(lambda s: s["name"] == "after-restart", since=mark)
    assert found[0]["trace_id"] == trace_id


async def _select_one(dsn: str) -> int:
    """Connect with asyncpg, select 1, close."""
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        return int(await conn.fetchval("select 1"))
    finally:
        await conn.close()


def test_postgres_answers_stops_and_recovers(postgres: Callable[[], Postgres]) -> None:
    """select 1 works; after stop() connecting fails; after start() it answers again."""
    cluster = postgres()
    assert asyncio.run(_select_one(cluster.dsn)) == 1
    cluster.stop()
    with pytest.raises(OSError):
        asyncio.run(_select_one(cluster.dsn))
    cluster.start()
    assert asyncio.run(_select_one(cluster.dsn)) == 1


def _redis_client(host: str, port: int, timeout: float = 0.5) -> redis.Redis:
    """Sync client with a short timeout and no retries (one attempt per command)."""
    return redis.Redis(
        host=host,
        port=port,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


def test_redis_answers_stops_and_recovers(redis_server: Callable[[], RedisServer]) -> None:
    """PING works; after stop() it fails with ConnectionError; after start() it answers again."""
    server = redis_server()
    client = _redis_client(server.host, server.port)
    try:
        assert client.ping() is True
        server.stop()
        with pytest.raises(redis.ConnectionError):
            client.ping()
        server.start()
        assert client.ping() is True
    finally:
        client.close()


def test_prometheus_scrapes_a_target(prometheus: Callable[..., Prometheus]) -> None:
    """Prometheus scraping its own /metrics reports up == 1 through the query API."""
    server = prometheus(scrape_self=True)
    result = server.wait_for_query('up{job="prometheus"} == 1', timeout=20)
    assert result[0]["metric"]["instance"] == server.address
    assert result[0]["value"][1] == "1"


def test_proxy_pass_refuse_blackhole(
    redis_server: Callable[[], RedisServer], tcp_proxy: Callable[..., TcpProxy]
) -> None:
    """pass forwards (counted), refuse refuses, blackhole makes a 0.5 s client time out."""
    server = redis_server()
    proxy = tcp_proxy(server.host, server.port)
    client = _redis_client(proxy.host, proxy.port)
    try:
        assert client.ping() is True
        chunks = proxy.stats.chunks_up
        assert client.ping() is True
        assert proxy.stats.chunks_up == chunks + 1 and proxy.stats.chunks_down >= 2
        assert proxy.accepted == 1 and proxy.stats.upstream_connections == 1
        proxy.set_mode("refuse")
        assert proxy.active_connections == 0
        with pytest.raises(redis.ConnectionError, match="refused"):
            client.ping()
        proxy.set_mode("blackhole")
        started = time.monotonic()
        with pytest.raises(redis.TimeoutError):
            client.ping()
        assert time.monotonic() - started < 3
        assert proxy.accepted == 2 and proxy.stats.upstream_connections == 1
        proxy.set_mode("pass")
        assert client.ping() is True
        assert proxy.stats.upstream_connections == 2
    finally:
        client.close()


def test_proxy_blackhole_raw_socket_times_out(tcp_proxy: Callable[..., TcpProxy]) -> None:
    """A raw client connecting to a blackholed proxy gets no byte back within its 0.5 s timeout."""
    with socket.socket() as target:
        target.bind(("127.0.0.1", 0))
        target.listen()
        proxy = tcp_proxy("127.0.0.1", target.getsockname()[1], mode="blackhole")
        with socket.create_connection((proxy.host, proxy.port), timeout=0.5) as conn:
            conn.sendall(b"hello")
            with pytest.raises(socket.timeout):
                conn.recv(1)
        assert proxy.stats.bytes_up == 0 and proxy.stats.upstream_connections == 0


def test_managed_process_reports_early_exit_and_timeout(tmp_path: Path) -> None:
    """Early exit and readiness timeout both raise with the log tail, and the process is reaped."""
    quitter = ManagedProcess(
        ["/bin/sh", "-c", "echo boom-from-child; exit 3"], tmp_path / "quit.log"
    )
    with pytest.raises(ProcessError, match=r"(?s)exited early with code 3.*boom-from-child"):
        quitter.start(lambda: False, timeout=5)
    sleeper = ManagedProcess(
        ["/bin/sh", "-c", "echo still-starting; exec sleep 30"], tmp_path / "sleep.log"
    )
    started = time.monotonic()
    with pytest.raises(ProcessError, match=r"(?s)not ready within.*still-starting"):
        sleeper.start(lambda: False, timeout=0.5)
    assert not sleeper.running and sleeper.returncode is not None
    assert time.monotonic() - started < 5


def test_require_binary_skips_or_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing binary skips with an install hint (fails when CI=true); else its path."""
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(
        pytest.skip.Exception, match="no-such-tool not found: apt-get install no-such-tool"
    ):
        require_binary("no-such-tool", "apt-get install no-such-tool")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no-such-tool not found"):
        require_binary("/nonexistent/no-such-tool", "apt-get install no-such-tool")
    assert require_binary("sh", "always there").endswith("/sh")


def test_aiva_service_serves_and_terminates(aiva_service: Callable[..., AivaService]) -> None:
    """`python -m aiva serve` reads the private config dir, answers GET / and exits 0 on SIGTERM."""
    settings = "default:\n  service:\n    name: infra-check\n"
    service = aiva_service(config_files={"settings.yaml": settings})
    assert service.env["AIVA_CONFIG_DIR"] == str(service.config_dir)
    response = httpx.get(f"{service.base_url}/", timeout=5)
    assert response.status_code == 200
    assert response.json()["service"] == "infra-check"
    assert service.terminate() == 0, service.log_text()
