"""Rate limiting and the wrong-API-key throttle against a real `aiva serve`: 100 requests
a minute give exactly the documented 429s and fields, in one process (memory) and across
two workers sharing a real Redis; a Redis that dies or goes silent lets requests through
within the timeout; wrong keys get bounded log lines and 429 after the threshold.

Every loop is bounded in count (a few hundred requests at most, 2,000 for the keys) and
every request has a timeout.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest

from infra.proxy import TcpProxy
from infra.redis import RedisServer
from infra.service import AivaService
from infra.wait import wait_for

ENV = {"AIVA_HEALTH__CHECKS__CPU__ENABLED": "false", "AIVA_TELEMETRY__LOGS__LEVEL": "INFO"}
LIMITED = {
    "AIVA_SECURITY__RATE_LIMIT__ENABLED": "true",
    "AIVA_SECURITY__RATE_LIMIT__REQUESTS": "100",
    "AIVA_SECURITY__RATE_LIMIT__WINDOW_S": "60",
}
ITEMS = "/api/demo/items/{n}"
PROBES = ("/livez", "/readyz", "/health", "/health/live", "/health/ready", "/ready", "/metrics")
# A second client on loopback: Linux answers the whole 127/8 on `lo`.
OTHER_CLIENT = "127.0.0.2"
# A request while the rate limit's Redis is down or silent: its 100 ms, plus a shared
# machine's margin.
FAIL_OPEN_BOUND_S = 1.0


@contextmanager
def _client(service: AivaService, local_address: str | None = None) -> Iterator[httpx.Client]:
    transport = httpx.HTTPTransport(local_address=local_address) if local_address else None
    with httpx.Client(base_url=service.base_url, timeout=10, transport=transport) as client:
        yield client


def _assert_refused(answer: httpx.Response, policy: str, quota: int, window: int) -> int:
    """The documented 429; returns its Retry-After."""
    assert answer.status_code == 429, answer.text
    retry_after = int(answer.headers["retry-after"])
    assert 1 <= retry_after <= window
    assert answer.headers["ratelimit-policy"] == f'"{policy}";q={quota};w={window}'
    assert answer.headers["ratelimit"] == f'"{policy}";r=0;t={retry_after}'
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json() == {
        "type": "https://iana.org/assignments/http-problem-types#quota-exceeded",
        "title": "Too Many Requests",
        "status": 429,
        "violated-policies": [policy],
    }
    assert answer.headers["x-request-id"]
    return retry_after


def _access_lines(service: AivaService) -> list[dict[str, object]]:
    lines = []
    for line in service.log_text().splitlines():
        if line.startswith("{") and '"aiva.access"' in line:
            lines.append(json.loads(line))
    return lines


def _metric(service: AivaService, name: str, key: str = "", **labels: str) -> float:
    """Sum of the series of `name` having `labels` (per-worker series added up), read
    as the other client (the first may be throttled)."""
    headers = {"X-API-Key": key} if key else {}
    with _client(service, OTHER_CLIENT) as client:
        text = client.get("/metrics", headers=headers).text
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(w in line for w in wanted):
            total += float(line.rpartition(" ")[2])
    return total


def test_a_hundred_a_minute_exactly_then_429_probes_and_others_untouched(
    aiva_service: Callable[..., AivaService],
) -> None:
    service = aiva_service(env={**ENV, **LIMITED}, ready_path="/livez")
    with _client(service) as client:
        allowed = [client.get(ITEMS.format(n=n)) for n in range(100)]
        refused = [client.get(ITEMS.format(n=n)) for n in range(10)]
        probes = {path: client.get(path).status_code for path in PROBES for _ in range(3)}
    assert [a.status_code for a in allowed] == [200] * 100
    # Fields once less than half the quota is left, `r` counting down to 0.
    assert [a.headers.get("ratelimit-policy") for a in allowed[:50]] == [None] * 50
    remaining = [
        re.fullmatch(r'"default";r=(\d+);t=(\d+)', a.headers["ratelimit"]) for a in allowed[50:]
    ]
    assert [int(m.group(1)) for m in remaining if m] == list(range(49, -1, -1))
    assert all(1 <= int(m.group(2)) <= 60 for m in remaining if m)
    assert {a.headers["ratelimit-policy"] for a in allowed[50:]} == {'"default";q=100;w=60'}
    for answer in refused:
        _assert_refused(answer, "default", 100, 60)
    assert probes == dict.fromkeys(PROBES, 200)
    # Another client has its own window.
    with _client(service, OTHER_CLIENT) as other:
        assert [other.get("/").status_code for _ in range(60)] == [200] * 60
    # A refused request is telemetry too: its access line under its route template,
    # and the counter by policy and route.
    lines = [line for line in _access_lines(service) if line["status_code"] == 429]
    assert len(lines) == 10
    assert {line["http_route"] for line in lines} == {"/api/demo/items/{item_id}"}
    counted = _metric(
        service,
        "aiva_http_rate_limited_total",
        policy="default",
        http_route="/api/demo/items/{item_id}",
    )
    assert counted == 10


def test_two_workers_share_one_window_through_redis(
    aiva_service: Callable[..., AivaService], redis_server: Callable[[], RedisServer]
) -> None:
    redis = redis_server()
    service = aiva_service(
        env={**ENV, **LIMITED, "AIVA_SECURITY__RATE_LIMIT__STORAGE": redis.url},
        args=["--workers", "2"],
        ready_path="/livez",
    )
    # Both workers up before counting (the readiness poll saw one): each logs its start.
    wait_for(lambda: service.log_text().count(" started (environment ") >= 2, 30)
    pids: set[int] = set()
    codes = []
    with _client(service) as client:
        # A fresh connection each time, so that both workers take requests.
        for _ in range(100):
            answer = client.get("/info", headers={"Connection": "close"})
            codes.append(answer.status_code)
            if answer.status_code == 200:
                pids.add(answer.json()["runtime"]["pid"])
        refused = [client.get("/", headers={"Connection": "close"}) for _ in range(20)]
    assert codes == [200] * 100
    assert len(pids) == 2, f"one worker served all requests: {pids}"
    for answer in refused:
        _assert_refused(answer, "default", 100, 60)


def test_a_dead_redis_lets_requests_through_then_limits_again(
    aiva_service: Callable[..., AivaService], redis_server: Callable[[], RedisServer]
) -> None:
    redis = redis_server()
    service = aiva_service(
        env={
            **ENV,
            **LIMITED,
            "AIVA_SECURITY__RATE_LIMIT__REQUESTS": "5",
            "AIVA_SECURITY__RATE_LIMIT__STORAGE": redis.url,
        },
        ready_path="/livez",
    )
    with _client(service) as client:
        assert [client.get("/").status_code for _ in range(6)] == [200] * 5 + [429]
        redis.kill()
        seconds = []
        for _ in range(30):
            started = time.monotonic()
            assert client.get("/").status_code == 200  # fail open
            seconds.append(time.monotonic() - started)
        assert max(seconds) < FAIL_OPEN_BOUND_S
        redis.start()  # empty: no persistence
        time.sleep(1.2)  # the storage is left alone for a second after a failure
        codes = [client.get("/").status_code for _ in range(6)]
    assert codes == [200] * 5 + [429]
    log = service.log_text()
    assert log.count("rate-limit storage failed") == 1  # not one line a request
    assert log.count("rate-limit storage answers again") == 1
    assert _metric(service, "aiva_rate_limit_storage_errors_total") >= 1
    assert _metric(service, "aiva_rate_limit_unchecked_total") >= 30


def test_a_silent_redis_costs_a_request_the_timeout_at_most(
    aiva_service: Callable[..., AivaService],
    redis_server: Callable[[], RedisServer],
    tcp_proxy: Callable[..., TcpProxy],
) -> None:
    redis = redis_server()
    proxy = tcp_proxy(redis.host, redis.port)
    service = aiva_service(
        env={
            **ENV,
            **LIMITED,
            "AIVA_SECURITY__RATE_LIMIT__STORAGE": f"redis://{proxy.address}/0",
        },
        ready_path="/livez",
    )
    with _client(service) as client:
        assert client.get("/").status_code == 200
        proxy.set_mode("blackhole")
        proxy.cut_connections()  # the pooled connection too: every byte now vanishes
        seconds = []
        for _ in range(20):
            started = time.monotonic()
            assert client.get("/").status_code == 200
            seconds.append(time.monotonic() - started)
            time.sleep(0.1)
    assert max(seconds) < FAIL_OPEN_BOUND_S
    assert "rate-limit storage failed (no answer within 100 ms)" in service.log_text()


def test_wrong_keys_get_bounded_lines_and_429_after_ten(
    aiva_service: Callable[..., AivaService],
) -> None:
    service = aiva_service(
        env={**ENV, "AIVA_SECURITY__API_KEY": "k3y", "AIVA_TELEMETRY__LOGS__LEVEL": "WARNING"}
    )
    attempts = 2000
    with _client(service) as client:
        codes = [
            client.get("/metrics", headers={"X-API-Key": f"guess-{n}"}).status_code
            for n in range(attempts)
        ]
        last = client.get("/metrics", headers={"X-API-Key": "guess"})
        right_key_here = client.get("/metrics", headers={"X-API-Key": "k3y"}).status_code
        probe_here = client.get("/livez", headers={"X-API-Key": "k3y"}).status_code
    with _client(service, OTHER_CLIENT) as other:
        right_key_elsewhere = other.get("/metrics", headers={"X-API-Key": "k3y"}).status_code
    assert codes == [401] * 10 + [429] * (attempts - 10)
    _assert_refused(last, "api-key", 10, 60)
    assert (right_key_here, probe_here, right_key_elsewhere) == (429, 200, 200)
    lines = [line for line in service.log_text().splitlines() if "wrong API key" in line]
    # The first attempt's line; the next would come a minute later with the count.
    assert len(lines) == 1, lines
    assert json.loads(lines[0])["logger"] == "aiva.security"
    assert "guess" not in lines[0]  # the key presented is never logged
    assert _metric(service, "aiva_security_api_key_failures_total", key="k3y") == 10


@pytest.mark.parametrize(
    ("key", "value"),
    [("KEY", "ip"), ("STORAGE", "memcached://127.0.0.1:11211")],
)
def test_an_unknown_form_is_a_settings_error(
    aiva_service: Callable[..., AivaService], key: str, value: str
) -> None:
    service = aiva_service(env={**ENV, f"AIVA_SECURITY__RATE_LIMIT__{key}": value}, start=False)
    service.spawn()
    assert service.wait(timeout=30) == 2
    lines = service.log_text().strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"settings error: security.rate_limit.{key.lower()}: must be ")
