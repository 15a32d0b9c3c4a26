"""Every dashboard and alert expression returns data from a real Prometheus scraping real aiva.

aiva runs with a critical check failing (redis on a closed port), OTLP pointed at a
closed port (so exports fail), a 1 s health interval, and serves demo traffic with
5xx answers and slow requests. Prometheus scrapes it (job `aiva`) and a dead target
(job `otel-collector`, the collector being down) and loads config/prometheus/alerts.yml.

Alert expressions are empty while everything is healthy; here the failure state
makes all of them return data except the ones listed in UNIT_TESTED_ONLY, which
are proven by the promtool unit tests (config/prometheus/alerts_test.yml) alone:

- OtelCollectorExportFailing: reads the collector's own otelcol_* counters, and
  no OpenTelemetry Collector can run on this machine.

For the same reason the dashboard targets in COLLECTOR_ONLY (the telemetry
dashboard's collector row, sent/failed/refused per signal) cannot return data
here; the live Prometheus must still accept each of them as a valid query, and
no other expression may read otelcol_* without being listed.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from infra.ports import free_port
from infra.prometheus import Prometheus, ScrapeTarget
from infra.service import AivaService

from ._repo import ALERTS, alert_rules, dashboard_expressions

UNIT_TESTED_ONLY = {"OtelCollectorExportFailing"}

# The collector's own counters (job otel-collector): no collector runs here.
COLLECTOR_ONLY = {
    f"aiva-telemetry.json: Collector: {title} [{ref}]"
    for title in ("sent per second", "send failures per second", "refused by receivers per second")
    for ref in "ABC"
}

# Grafana's variables as the test substitutes them: the dashboards' default job,
# every instance/route/check, and a rate window that holds many 1 s scrapes.
VARIABLES = {
    "__rate_interval": "1m",
    "job": "aiva",
    "instance": ".*",
    "route": ".*",
    "check": ".*",
}


def substitute(expr: str) -> str:
    """Replace $name and ${name} by the test's value; fail on an unknown variable."""

    def value(match: re.Match[str]) -> str:
        name = match[1] or match[2]
        assert name in VARIABLES, f"unknown variable ${name} in {expr!r}"
        return VARIABLES[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


def has_number(result: list[dict[str, Any]]) -> bool:
    """True when some series has a real (non-NaN) value."""
    return any(not math.isnan(float(series["value"][1])) for series in result)


def demo_traffic(service: AivaService, slow_requests: int) -> None:
    """Fast and slow demo requests, 5xx answers, an unmatched path and every probe."""
    with service.client(timeout=10.0) as client:
        for i in range(10):
            client.get(f"/api/demo/items/{i}")
            client.get("/api/demo/work")
        for _ in range(3):
            # uvicorn closes the connection after an unhandled exception: no keep-alive.
            response = client.get("/api/demo/fail", headers={"Connection": "close"})
            assert response.status_code == 500
        client.get("/no/such/path")
        for path in ("/health", "/health/live", "/health/ready", "/ready", "/livez", "/readyz"):
            client.get(path)
        client.get("/health/startup")

    def slow(_: int) -> int:
        # Above the 1 s p99 threshold of AivaHighLatencyP99.
        with service.client(timeout=10.0) as c:
            return c.get("/api/demo/work", params={"delay_ms": "1200"}).status_code

    if slow_requests:
        with ThreadPoolExecutor(max_workers=slow_requests) as pool:
            assert list(pool.map(slow, range(slow_requests))) == [200] * slow_requests


def wait_all(prom: Prometheus, queries: dict[str, str], timeout: float) -> dict[str, str]:
    """Poll every query until each returned a number once; return those that never did."""
    pending = dict(queries)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for where, expr in list(pending.items()):
            if has_number(prom.query(expr)):
                del pending[where]
        if pending:
            time.sleep(0.5)
    return pending


@pytest.mark.fast_layer("metric_producers", "prometheus_translation")
def test_every_dashboard_and_alert_expression_returns_data(
    aiva_service: Callable[..., AivaService], prometheus: Callable[..., Prometheus]
) -> None:
    closed = free_port()  # nothing listens here: redis, OTLP and the "collector" are down
    service = aiva_service(
        env={
            "AIVA_REDIS__URL": f"redis://127.0.0.1:{closed}/0",
            "AIVA_HEALTH__INTERVAL_S": "1",
            "AIVA_TELEMETRY__OTLP__ENDPOINT": f"http://127.0.0.1:{closed}",
            "AIVA_TELEMETRY__OTLP__TIMEOUT_S": "1",
            "AIVA_TELEMETRY__METRICS__EXPORT_INTERVAL_S": "1",
        }
    )
    # One round before the first scrape creates every series (a series is born with
    # its first request, and rate() ignores the increase that creates it) ...
    demo_traffic(service, slow_requests=0)
    prom = prometheus(
        targets=[
            ScrapeTarget(f"127.0.0.1:{service.port}", "/metrics", "aiva"),
            ScrapeTarget(f"127.0.0.1:{closed}", "/metrics", "otel-collector"),
        ],
        rule_files=[ALERTS],
    )
    # ... and one after it, which rate() sees as an increase.
    prom.wait_for_query('up{job="aiva"} == 1', timeout=20.0)
    demo_traffic(service, slow_requests=4)

    queries = {
        where: substitute(expr)
        for where, expr in dashboard_expressions()
        if where not in COLLECTOR_ONLY
    }
    for where, expr in dashboard_expressions():
        if where in COLLECTOR_ONLY:
            prom.query(substitute(expr))  # raises unless Prometheus parses and runs it
    live_alerts = sorted(set(alert_rules()) - UNIT_TESTED_ONLY)
    for name, expr in alert_rules().items():
        if name not in UNIT_TESTED_ONLY:
            queries[f"alerts.yml: {name}"] = expr
    # The rules loaded by the real server go pending (or firing) too.
    for name in live_alerts:
        queries[f"ALERTS: {name}"] = f'ALERTS{{alertname="{name}"}}'

    empty = wait_all(prom, queries, timeout=30.0)
    assert not empty, "returned no data:\n" + "\n".join(
        f"  {where}: {expr}" for where, expr in empty.items()
    )


def test_unit_tested_only_alerts_exist() -> None:
    assert set(alert_rules()) >= UNIT_TESTED_ONLY


def test_collector_only_lists_exactly_the_otelcol_expressions() -> None:
    reading_otelcol = {where for where, expr in dashboard_expressions() if "otelcol_" in expr}
    assert reading_otelcol == COLLECTOR_ONLY
    for where, expr in dashboard_expressions():
        if where in COLLECTOR_ONLY:
            assert 'job="otel-collector"' in expr and "aiva_" not in expr, where
