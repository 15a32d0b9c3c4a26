"""Health against the real things: PostgreSQL, Redis, a black-holing proxy, a collector."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable

import httpx

from infra.postgres import Postgres
from infra.prometheus import Prometheus
from infra.proxy import TcpProxy
from infra.redis import RedisServer
from infra.rotel import Rotel
from infra.service import AivaService
from infra.wait import wait_for

FAST = {"AIVA_HEALTH__INTERVAL_S": "1", "AIVA_HEALTH__TIMEOUT_S": "1"}


def database_env(pg: Postgres) -> dict[str, str]:
    return {
        "AIVA_DATABASE__HOST": "127.0.0.1",
        "AIVA_DATABASE__PORT": str(pg.port),
        "AIVA_DATABASE__USERNAME": "postgres",
        "AIVA_DATABASE__DATABASE": "postgres",
        "AIVA_DATABASE__SSL_MODE": "disable",
    }


def check(report: dict[str, object], name: str) -> dict[str, object]:
    return next(c for c in report["checks"] if c["name"] == name)  # type: ignore[attr-defined, index]


def gauge(service: AivaService, check_name: str, status: str) -> float | None:
    for line in httpx.get(f"{service.base_url}/metrics", timeout=5).text.splitlines():
        if (
            line.startswith("aiva_health_status")
            and f'check="{check_name}"' in line
            and f'status="{status}"' in line
        ):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_redis_outage_and_recovery(
    postgres: Callable[[], Postgres],
    redis_server: Callable[[], RedisServer],
    aiva_service: Callable[..., AivaService],
) -> None:
    pg, redis = postgres(), redis_server()
    service = aiva_service(env={**FAST, **database_env(pg), "AIVA_REDIS__URL": redis.url})
    with service.client() as client:
        wait_for(lambda: client.get("/health/ready").status_code == 200, timeout=10)
        report = client.get("/health").json()
        assert check(report, "postgres")["status"] == "healthy"
        assert check(report, "postgres")["details"]["server_version"].startswith("15")  # type: ignore[index]
        assert check(report, "redis")["details"]["latency_ms"] >= 0  # type: ignore[index]

        redis.stop()
        stopped = time.monotonic()
        wait_for(lambda: client.get("/health/ready").status_code == 503, timeout=5)
        assert time.monotonic() - stopped <= 1 + 1 + 1  # interval + timeout (+1 s of polling slack)
        assert client.get("/readyz").status_code == 503
        assert client.get("/health/live").status_code == 200
        assert client.get("/livez").status_code == 200
        report = client.get("/health").json()
        assert report["status"] == "unhealthy"
        redis_check = check(report, "redis")
        assert (redis_check["status"], redis_check["message"]) == (
            "unhealthy",
            "connection refused",
        )
        assert check(report, "postgres")["status"] == "healthy"
        assert gauge(service, "redis", "unhealthy") == 1
        assert gauge(service, "redis", "healthy") == 0

        redis.start()
        wait_for(lambda: client.get("/health/ready").status_code == 200, timeout=10)
        assert gauge(service, "redis", "healthy") == 1
    log = service.log_text()
    assert "health check redis is unhealthy (was healthy): connection refused" in log
    assert "health check redis is healthy (was unhealthy)" in log


def test_postgres_outage(
    postgres: Callable[[], Postgres], aiva_service: Callable[..., AivaService]
) -> None:
    pg = postgres()
    service = aiva_service(env={**FAST, **database_env(pg)})
    with service.client() as client:
        wait_for(lambda: client.get("/health/ready").status_code == 200, timeout=10)
        pg.stop()
        wait_for(lambda: client.get("/health/ready").status_code == 503, timeout=5)
        assert check(client.get("/health").json(), "postgres")["status"] == "unhealthy"
        assert client.get("/health/live").status_code == 200
        pg.start()
        wait_for(lambda: client.get("/health/ready").status_code == 200, timeout=10)


def test_black_hole_times_out_while_probes_stay_fast(
    redis_server: Callable[[], RedisServer],
    tcp_proxy: Callable[..., TcpProxy],
    aiva_service: Callable[..., AivaService],
) -> None:
    redis = redis_server()
    proxy = tcp_proxy("127.0.0.1", redis.port)
    service = aiva_service(env={**FAST, "AIVA_REDIS__URL": f"redis://{proxy.address}/0"})
    with service.client() as client:
        wait_for(lambda: client.get("/health/ready").status_code == 200, timeout=10)
        proxy.set_mode("blackhole")
        wait_for(
            lambda: check(client.get("/health").json(), "redis")["message"] == "timed out after 1s",
            timeout=6,
        )
        timings: list[tuple[float, str]] = []
        for _ in range(30):  # while checks hang in the background, probes answer at once
            for path in ("/health/ready", "/readyz", "/health/live", "/livez", "/health"):
                started = time.perf_counter()
                client.get(path)
                timings.append((time.perf_counter() - started, path))
            time.sleep(0.05)
        slowest = max(timings)
        assert slowest[0] < 0.1, slowest  # every probe, not their average


def test_probe_storm_does_not_reach_the_dependency(
    redis_server: Callable[[], RedisServer],
    tcp_proxy: Callable[..., TcpProxy],
    aiva_service: Callable[..., AivaService],
) -> None:
    redis = redis_server()
    proxy = tcp_proxy("127.0.0.1", redis.port)
    env = {"AIVA_HEALTH__INTERVAL_S": "2", "AIVA_REDIS__URL": f"redis://{proxy.address}/0"}
    service = aiva_service(env=env)
    wait_for(lambda: httpx.get(f"{service.base_url}/health/ready").status_code == 200, timeout=10)
    before, started = proxy.accepted, time.monotonic()

    async def storm() -> list[int]:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(
            base_url=service.base_url, limits=limits, timeout=30
        ) as client:
            paths = ["/health/ready", "/readyz", "/ready", "/health"] * 250
            return [r.status_code for r in await asyncio.gather(*(client.get(p) for p in paths))]

    codes = asyncio.run(storm())
    elapsed = time.monotonic() - started
    assert codes.count(200) == 1000
    # One connection a background round, whatever the number of probes.
    allowed = int(elapsed / 2) + 2
    assert proxy.accepted - before <= allowed, (proxy.accepted - before, elapsed)


def test_health_spans_and_prometheus_gauge(
    redis_server: Callable[[], RedisServer],
    rotel: Callable[[], Rotel],
    prometheus: Callable[..., Prometheus],
    aiva_service: Callable[..., AivaService],
) -> None:
    redis, collector = redis_server(), rotel()
    service = aiva_service(
        env={
            **FAST,
            "AIVA_REDIS__URL": redis.url,
            "AIVA_TELEMETRY__OTLP__ENDPOINT": collector.grpc_endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "200",
        }
    )
    redis.stop()
    span = collector.wait_for_spans(
        lambda s: s["name"] == "health.check redis" and s["status"] == "ERROR", timeout=10
    )[0]
    assert span["attributes"]["health.check.name"] == "redis"
    assert span["attributes"]["health.check.status"] == "unhealthy"
    assert span["attributes"]["health.check.critical"] is True
    parent = [s for s in collector.spans() if s["span_id"] == span["parent_id"]]
    assert [p["name"] for p in parent] == ["health.evaluate"]
    server = prometheus(targets=[f"127.0.0.1:{service.port}"])
    [sample] = server.wait_for_query('aiva_health_status{check="redis",status="unhealthy"} == 1')
    assert sample["value"][1] == "1"
    assert server.wait_for_query('aiva_health_overall{status="unhealthy"} == 1')
    assert server.wait_for_query('aiva_health_check_duration_seconds_count{check="redis"} > 0')


def test_health_command(
    redis_server: Callable[[], RedisServer],
    aiva_service: Callable[..., AivaService],
    tmp_path: object,
) -> None:
    redis = redis_server()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIVA_", "OTEL_"))}
    env |= {"AIVA_CONFIG_DIR": str(tmp_path), "AIVA_REDIS__URL": redis.url, **FAST}

    def aiva(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "aiva", "health", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    up = aiva("--probe", "ready")
    assert up.returncode == 0, up.stderr
    assert '"status": "healthy"' in up.stdout or '"status": "degraded"' in up.stdout
    service = aiva_service(env={**FAST, "AIVA_REDIS__URL": redis.url})
    wait_for(lambda: httpx.get(f"{service.base_url}/health/ready").status_code == 200, timeout=10)
    assert aiva("--url", service.base_url, "--probe", "ready").returncode == 0
    redis.stop()
    down = aiva()
    assert down.returncode == 1
    assert '"message": "connection refused"' in down.stdout
    wait_for(lambda: httpx.get(f"{service.base_url}/health/ready").status_code == 503, timeout=5)
    asked = aiva("--url", service.base_url, "--probe", "ready")
    assert asked.returncode == 1
    report = json.loads(asked.stdout)  # the same report form as in-process
    assert report["status"] == "unhealthy"
    assert '\n  "status": "unhealthy"' in asked.stdout  # printed as in-process, indented
    assert aiva("--url", service.base_url, "--probe", "live").returncode == 0
    env["AIVA_HEALTH__INTERVAL_S"] = "0"
    assert aiva().returncode == 2
