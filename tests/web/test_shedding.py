"""Load shedding in-process: 503 with Retry-After past max_concurrency, probes exempt,
and the rejection counter from start-up."""

from __future__ import annotations

import threading

import anyio
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from aiva import create_app
from aiva.settings import Settings, load_settings


def settings(**environ: str) -> Settings:
    return load_settings(
        {"AIVA_HEALTH__CHECKS__CPU__ENABLED": "false", **environ}, config_dir="/nonexistent"
    ).settings


def _rejected(client: TestClient) -> dict[str, float]:
    found = {}
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("aiva_http_rejected_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            found[reason] = float(line.rsplit(" ", 1)[1])
    return found


def test_every_rejection_reason_is_counted_from_start_up() -> None:
    with TestClient(create_app(settings())) as client:
        assert _rejected(client) == {
            "overload": 0.0,
            "header_too_large": 0.0,
            "too_many_headers": 0.0,
            "header_timeout": 0.0,
        }


def test_requests_past_the_limit_get_503_and_probes_do_not() -> None:
    release = threading.Event()
    entered = threading.Semaphore(0)

    async def hold(request: Request) -> PlainTextResponse:
        entered.release()
        with anyio.fail_after(10):
            while not release.is_set():
                await anyio.sleep(0.01)
        return PlainTextResponse("held")

    app = create_app(
        settings(AIVA_SERVER__LIMITS__MAX_CONCURRENCY="2"), routes=[Route("/hold", hold)]
    )
    with TestClient(app) as client:
        answers: list[int] = []
        holders = [
            threading.Thread(target=lambda: answers.append(client.get("/hold").status_code))
            for _ in range(2)
        ]
        for thread in holders:
            thread.start()
        assert entered.acquire(timeout=10) and entered.acquire(timeout=10)
        try:
            shed = client.get("/", headers={"X-Request-ID": "shed-1"})
            assert shed.status_code == 503
            assert shed.headers["retry-after"] == "1"
            assert shed.headers["x-request-id"] == "shed-1"
            for probe in ("/livez", "/readyz", "/health/live", "/ready", "/metrics"):
                assert client.get(probe).status_code == 200, probe
            assert _rejected(client)["overload"] == 1
        finally:
            release.set()
            for thread in holders:
                thread.join(timeout=10)
        assert answers == [200, 200]
        assert client.get("/").status_code == 200
