"""A canary password in every DSN and URL appears in no response, log line, span or metric.

The issue's Done-when, end to end: a real `aiva serve`, a real PostgreSQL that checks
passwords (and so rejects the canary), a real Redis, an HTTP dependency that answers 500
and one that refuses, OTLP to a real collector (rotel) and a log file. The checks fail,
so every error path writes its messages; then every output is searched for the canary.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import asyncpg
import redis

from infra.ports import LOOPBACK, free_port
from infra.postgres import Postgres
from infra.redis import RedisServer
from infra.rotel import Rotel
from infra.service import AivaService
from infra.wait import wait_for

PREFIX = "zzCANARY"


class _Answers500(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(500)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass  # the test's own output stays quiet


@contextmanager
def answering_500() -> Iterator[int]:
    """A local HTTP server that answers every GET with 500; yields its port."""
    server = ThreadingHTTPServer((LOOPBACK, 0), _Answers500)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def require_passwords(pg: Postgres, real_password: str) -> None:
    """The fixture's cluster trusts everyone; make TCP logins check a scram password, so the
    canary is a wrong password the server really rejects."""

    async def alter() -> None:
        connection = await asyncpg.connect(pg.dsn)
        try:
            await connection.execute(f"ALTER ROLE postgres PASSWORD '{real_password}'")
            (pg.data_dir / "pg_hba.conf").write_text(
                "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
            )
            await connection.execute("SELECT pg_reload_conf()")
        finally:
            await connection.close()

    async def rejected() -> bool:
        try:
            connection = await asyncpg.connect(pg.dsn, password="wrong")
        except asyncpg.InvalidPasswordError:
            return True
        await connection.close()
        return False

    asyncio.run(alter())
    wait_for(lambda: asyncio.run(rejected()), timeout=5)


def require_redis_password(server: RedisServer, real_password: str) -> None:
    """Likewise for Redis (the fixture stops it by PID, so a password does not get in its way)."""
    with redis.Redis(host=server.host, port=server.port) as client:
        client.config_set("requirepass", real_password)


def settings_yaml(pg_port: int, web_port: int, refused_port: int, canaries: dict[str, str]) -> str:
    return f"""
default:
  health:
    interval_s: 1
    timeout_s: 1
    checks:
      pgdsn:
        type: postgres
        dsn: postgresql://postgres:{canaries["dsn"]}@127.0.0.1:{pg_port}/postgres
        critical: false
      web:
        type: http
        url: http://user:{canaries["web"]}@127.0.0.1:{web_port}/status
        critical: false
      refused:
        type: http
        url: http://user:{canaries["refused"]}@127.0.0.1:{refused_port}/
        critical: false
        probes: [live, ready]
"""


def test_a_canary_password_appears_in_no_output(
    postgres: Callable[[], Postgres],
    redis_server: Callable[[], RedisServer],
    rotel: Callable[[], Rotel],
    aiva_service: Callable[..., AivaService],
    tmp_path: Path,
) -> None:
    canaries = {
        where: f"{PREFIX}{where}{secrets.token_hex(4)}"
        for where in ("password", "dsn", "web", "refused", "redis")
    }
    pg, cache, collector = postgres(), redis_server(), rotel()
    require_passwords(pg, real_password=secrets.token_hex(8))
    require_redis_password(cache, real_password=secrets.token_hex(8))
    log_file = tmp_path / "aiva-file.log"
    with answering_500() as web_port:
        service = aiva_service(
            env={
                "AIVA_DATABASE__HOST": "127.0.0.1",
                "AIVA_DATABASE__PORT": str(pg.port),
                "AIVA_DATABASE__USERNAME": "postgres",
                "AIVA_DATABASE__DATABASE": "postgres",
                "AIVA_DATABASE__SSL_MODE": "disable",
                "AIVA_DATABASE__PASSWORD": canaries["password"],
                "AIVA_REDIS__URL": f"redis://:{canaries['redis']}@127.0.0.1:{cache.port}/0",
                "AIVA_TELEMETRY__OTLP__ENDPOINT": collector.grpc_endpoint,
                "AIVA_TELEMETRY__OTLP__TIMEOUT_S": "2",
                "AIVA_TELEMETRY__METRICS__EXPORT_INTERVAL_S": "1",
                "AIVA_TELEMETRY__LOGS__FILE__PATH": str(log_file),
                "OTEL_BSP_SCHEDULE_DELAY": "200",
                "OTEL_BLRP_SCHEDULE_DELAY": "200",
            },
            config_files={
                "settings.yaml": settings_yaml(pg.port, web_port, free_port(), canaries),
            },
        )
        with service.client() as client:
            failing = {"postgres", "pgdsn", "redis", "web", "refused"}

            def all_failing() -> bool:
                report = client.get("/health").json()
                down = {c["name"] for c in report["checks"] if c["status"] == "unhealthy"}
                return failing <= down

            wait_for(all_failing, timeout=15, message=lambda: client.get("/health").text)
            time.sleep(2.5)  # a couple more rounds: their spans, logs and metrics too
            responses = {
                f"{path} {headers.get('Accept', '')}".strip(): client.get(path, headers=headers)
                for path, headers in [
                    ("/", {}),
                    ("/health", {}),
                    ("/health", {"Accept": "application/health+json"}),
                    ("/health/ready", {}),
                    ("/health/live", {}),
                    ("/health/startup", {}),
                    ("/ready", {}),
                    ("/readyz", {}),
                    ("/readyz?verbose", {}),
                    ("/livez", {}),
                    ("/livez?verbose", {}),
                    *((f"/readyz/{name}?verbose", {}) for name in sorted(failing)),
                    *((f"/readyz/{name}", {}) for name in sorted(failing)),
                    ("/livez/refused", {}),
                    ("/metrics", {}),
                    ("/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"}),
                    ("/info", {}),
                ]
            }
            ietf = client.get("/health", headers={"Accept": "application/health+json"}).json()
            report = client.get("/health").json()

        collector.wait_for_spans(
            lambda s: (
                s["name"] == "health.check postgres"
                and s["status"] == "ERROR"
                and any(e.get("name") == "exception" for e in s["events"])
            ),
            timeout=10,
        )
        collector.wait_for_log_records(
            lambda r: "health check web is unhealthy" in str(r["body"]), timeout=10
        )
        collector.wait_for_metric("aiva.health.status", timeout=10)
        assert service.terminate() == 0  # flushes the last spans, logs and metrics
        time.sleep(0.5)

    # The messages were produced (so the search below means something) ...
    by_name = {c["name"]: c for c in report["checks"]}
    assert "password authentication failed" in by_name["postgres"]["message"]
    assert "password authentication failed" in by_name["pgdsn"]["message"]
    assert by_name["web"]["message"] == "answered 500, expected 200"
    assert by_name["refused"]["message"] == "connection refused"
    assert by_name["redis"]["status"] == "unhealthy"
    assert "password" in by_name["redis"]["message"], by_name["redis"]
    assert "user:****@" in by_name["web"]["details"]["target"]
    assert ietf["checks"]["postgres:responseTime"][0]["status"] == "fail"
    assert "[-]postgres failed: password authentication failed" in responses["/readyz?verbose"].text
    assert "[-]refused failed: connection refused" in responses["/livez?verbose"].text
    console = service.log_text()
    assert "health check postgres is unhealthy" in console
    assert "health check web is unhealthy" in log_file.read_text()
    dump = collector.output()
    assert "health.check pgdsn" in dump

    # ... and no output holds a canary, plain or as a Basic credential.
    basic = {base64.b64encode(f"user:{canaries[w]}".encode()).decode() for w in ("web", "refused")}
    outputs = {f"GET {what}": r.text for what, r in responses.items()}
    outputs |= {
        "console": console,
        "log file": log_file.read_text(),
        "rotel dump": dump,
        "rotel log": (collector.workdir / "rotel.log").read_text(errors="replace")
        if (collector.workdir / "rotel.log").exists()
        else "",
    }
    leaks = {
        where: [
            line for line in text.splitlines() if PREFIX in line or any(b in line for b in basic)
        ]
        for where, text in outputs.items()
    }
    assert {where: lines[:3] for where, lines in leaks.items() if lines} == {}
