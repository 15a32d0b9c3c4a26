"""`aiva serve` as users run it: a real process, real sockets, real signals."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.ports import free_port
from infra.processes import ManagedProcess
from infra.require import in_ci
from infra.service import REPO_ROOT, SRC_DIR, AivaService, service_env


def test_serves_root_on_embedded_defaults(aiva_service: Callable[..., AivaService]) -> None:
    service = aiva_service()
    with service.client() as client:
        response = client.get("/")
    assert response.status_code == 200
    assert response.json() == {"service": "aiva", "version": "0.1.0", "environment": "development"}
    assert response.headers["x-request-id"]


def test_readme_first_command_serves_on_127_0_0_1_8000(tmp_path: Path) -> None:
    # The README's `aiva serve`, word for word: no options, no settings folder, no AIVA_*
    # or OTEL_* variables, in an empty working directory.
    if not port_is_free(8000):
        reason = "port 8000 is taken on this machine: the README's default cannot be tried"
        if in_ci():
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    env = service_env({}, tmp_path)
    del env["AIVA_CONFIG_DIR"]
    aiva = Path(sys.executable).with_name("aiva")
    argv = [str(aiva), "serve"] if aiva.exists() else [sys.executable, "-m", "aiva", "serve"]
    process = ManagedProcess(argv, tmp_path / "aiva.log", env=env, cwd=tmp_path, name="aiva")

    def ready() -> bool:
        try:
            return httpx.get("http://127.0.0.1:8000/", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    process.start(ready, 30)
    try:
        body = httpx.get("http://127.0.0.1:8000/", timeout=5).json()
        assert body == {"service": "aiva", "version": "0.1.0", "environment": "development"}
    finally:
        process.signal(signal.SIGTERM)
        assert process.wait(15) == 0
        process.stop(5)


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_workers_serve_and_exit_0_on_sigterm(aiva_service: Callable[..., AivaService]) -> None:
    service = aiva_service(args=["--workers", "2"])
    with service.client() as client:
        pids = {client.get("/info").json()["runtime"]["pid"] for _ in range(40)}
    assert service.pid not in pids  # the workers serve, not the supervisor
    assert service.terminate(timeout=20) == 0


def test_sigterm_exits_0_after_graceful_shutdown(aiva_service: Callable[..., AivaService]) -> None:
    service = aiva_service()
    assert service.terminate(timeout=15) == 0
    assert "shut down after SIGTERM" in service.log_text()


def test_options_and_env_sections_reach_the_server(
    aiva_service: Callable[..., AivaService],
) -> None:
    settings = (
        "default:\n  service:\n    name: svc-default\nproduction:\n  service:\n    name: svc-prod\n"
    )
    service = aiva_service(args=["--env", "production"], config_files={"settings.yaml": settings})
    with service.client() as client:
        body = client.get("/").json()
    assert body == {"service": "svc-prod", "version": "0.1.0", "environment": "production"}


def test_bad_settings_exit_2_before_serving(aiva_service: Callable[..., AivaService]) -> None:
    service = aiva_service(env={"AIVA_TELEMETRY__TRACES__SAMPLER_RATIO": "2"}, start=False)
    service.spawn()
    assert service.wait(timeout=30) == 2
    log = service.log_text()
    assert log.strip().splitlines() == [
        "settings error: telemetry.traces.sampler_ratio: must be between 0 and 1, got 2 "
        "(from environment variable AIVA_TELEMETRY__TRACES__SAMPLER_RATIO)"
    ]


def test_json_log_lines_one_per_request(aiva_service: Callable[..., AivaService]) -> None:
    service = aiva_service()
    with service.client() as client:
        client.get("/info", headers={"X-Request-ID": "req-42"})
    service.terminate()
    records = [json.loads(line) for line in service.log_text().splitlines() if line.startswith("{")]
    [access] = [r for r in records if r["request_id"] == "req-42"]
    assert access["logger"] == "aiva.access"
    assert (access["http_route"], access["status_code"]) == ("/info", 200)
    for record in records:
        assert {
            "timestamp",
            "level",
            "message",
            "logger",
            "trace_id",
            "span_id",
            "request_id",
        } <= set(record)


# --- graceful shutdown bounded by server.graceful_timeout_s ---------------------------


@pytest.fixture
def slow_service(
    tmp_path: Path,
) -> Iterator[Callable[[float], tuple[subprocess.Popen[bytes], str]]]:
    """Factory: a service with a `/slow?s=N` route and the given graceful timeout."""
    started: list[subprocess.Popen[bytes]] = []

    def start(graceful_timeout_s: float) -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        env = service_env(
            {
                "AIVA_SERVER__PORT": str(port),
                "AIVA_SERVER__GRACEFUL_TIMEOUT_S": str(graceful_timeout_s),
            },
            tmp_path,
        )
        env["PYTHONPATH"] += f":{REPO_ROOT}"
        log = (tmp_path / f"slow-{port}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.apps.slow_service"], env=env, stdout=log, stderr=log
        )
        log.close()
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/", timeout=1).status_code == 200:
                    return process, url
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError("slow service did not start")

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def request_in_background(url: str) -> tuple[threading.Thread, dict[str, object]]:
    outcome: dict[str, object] = {}

    def call() -> None:
        try:
            outcome["response"] = httpx.get(url, timeout=30)
        except httpx.HTTPError as error:
            outcome["error"] = error

    thread = threading.Thread(target=call)
    thread.start()
    return thread, outcome


def test_in_flight_request_finishes_after_sigterm(slow_service) -> None:  # type: ignore[no-untyped-def]
    process, url = slow_service(10)
    thread, outcome = request_in_background(url + "/slow?s=1.5")
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    thread.join(timeout=20)
    response = outcome.get("response")
    assert isinstance(response, httpx.Response), outcome
    assert (response.status_code, response.text) == (200, "slept 1.5")
    assert process.wait(timeout=20) == 0


def test_graceful_shutdown_is_bounded(slow_service) -> None:  # type: ignore[no-untyped-def]
    process, url = slow_service(1)
    thread, _ = request_in_background(url + "/slow?s=60")
    time.sleep(0.5)
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0
    assert time.monotonic() - sent < 6  # 1 s of grace, not the request's 60 s
    thread.join(timeout=20)


# --- aiva serve MODULE:APP: a user's own app ----------------------------------------------

_USER_APP_ENV = {
    "PYTHONPATH": os.pathsep.join([str(SRC_DIR), str(REPO_ROOT)]),
    "AIVA_HEALTH__CHECKS__CPU__ENABLED": "false",
}


def test_serve_runs_a_users_fastapi_app_in_every_worker(
    aiva_service: Callable[..., AivaService],
) -> None:
    service = aiva_service(
        env=_USER_APP_ENV,
        args=["tests.apps.orders_api:build", "--factory", "--workers", "2"],
        ready_path="/livez",
    )
    with service.client() as client:
        for _ in range(20):
            assert client.get("/orders/3/check").json() == {"order": 3, "user": "anonymous"}
        pids = {client.get("/info").json()["runtime"]["pid"] for _ in range(40)}
        assert client.get("/health/startup").status_code == 200
    assert service.pid not in pids
    assert service.terminate(timeout=20) == 0


def test_serve_a_users_starlette_app_drains_and_exits_0(
    aiva_service: Callable[..., AivaService], postgres: Callable[..., Any], redis_server: Any
) -> None:
    database, cache = postgres(), redis_server()
    service = aiva_service(
        env={**_USER_APP_ENV, "INVENTORY_DSN": database.dsn, "INVENTORY_REDIS": cache.url},
        args=["tests.apps.inventory_service:app"],
    )
    with service.client() as client:
        assert client.get("/stock/2").json()["count"] == 20  # the app's lifespan state
        assert client.get("/readyz").text == "ok"
    assert service.terminate(timeout=20) == 0
    log = service.log_text()
    assert "shut down after SIGTERM" in log and "flushing telemetry" in log


@pytest.mark.parametrize(
    ("target", "says"),
    [
        ("tests.apps.no_such_module:app", "cannot load tests.apps.no_such_module:app"),
        ("tests.apps.orders_api:lifespan", "takes a Starlette or FastAPI application"),
    ],
)
def test_serve_refuses_what_it_cannot_serve_in_one_line(
    aiva_service: Callable[..., AivaService], target: str, says: str
) -> None:
    service = aiva_service(env=_USER_APP_ENV, args=[target], start=False)
    service.spawn()
    assert service.wait(timeout=30) == 2
    log = service.log_text()
    assert says in log and "Traceback" not in log, log
