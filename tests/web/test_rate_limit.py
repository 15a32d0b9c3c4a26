"""Rate limiting's pure parts: the header fields, who a client is, the sliding window,
sampled lines, fail-open storage, the settings' forms; and the limits in-process."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from limits import RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter
from starlette.testclient import TestClient

import aiva
from aiva.errors import SettingsError
from aiva.settings import load_settings
from aiva.settings.model import RateLimitSettings
from aiva.web._rate_windows import (
    SKIP_AFTER_FAILURE_S,
    STORAGE_TIMEOUT_S,
    FailOpen,
    MemoryWindows,
    Outcome,
    Policy,
    RedisWindows,
    StorageCounts,
)
from aiva.web._sampled_log import SampledLog
from aiva.web.rate_limit import KEY_FAILURE_POLICY, Quota, RateLimits
from infra.redis import RedisServer

QUIET = {
    "AIVA_HEALTH__CHECKS__DISK__ENABLED": "false",
    "AIVA_HEALTH__CHECKS__MEMORY__ENABLED": "false",
    "AIVA_HEALTH__CHECKS__CPU__ENABLED": "false",
    "AIVA_TELEMETRY__LOGS__LEVEL": "WARNING",
}


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _settings(**rate_limit: Any) -> RateLimitSettings:
    values: dict[str, Any] = {
        "enabled": True,
        "requests": 100,
        "window_s": 60,
        "key": "client",
        "storage": "memory",
        "groups": {},
    }
    return RateLimitSettings(**{**values, **rate_limit})


def _scope(client: tuple[str, int] | None = ("10.0.0.7", 5000), *headers: tuple[bytes, bytes]):  # type: ignore[no-untyped-def]
    return {"type": "http", "path": "/x", "headers": [(b"host", b"h"), *headers], "client": client}


# --- the header fields ----------------------------------------------------------


def test_fields_are_the_drafts_structured_lists() -> None:
    quota = Quota.of(Policy("default", 100, 60))
    assert quota.policy_field == b'"default";q=100;w=60'
    assert quota.limit_field(Outcome(True, 42, 17)) == b'"default";r=42;t=17'
    assert quota.headers(Outcome(True, 3, 9)) == [
        (b"ratelimit-policy", b'"default";q=100;w=60'),
        (b"ratelimit", b'"default";r=3;t=9'),
    ]
    # Refused: Retry-After too, the same moment as `t`.
    assert quota.headers(Outcome(False, 0, 17))[-1] == (b"retry-after", b"17")


def test_a_refusal_is_a_problem_document() -> None:
    quota = Quota.of(Policy("/api/login", 5, 60))
    response = quota.refusal(Outcome(False, 0, 30))
    assert response.status_code == 429
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "30"
    assert response.headers["ratelimit-policy"] == '"/api/login";q=5;w=60'
    assert response.headers["ratelimit"] == '"/api/login";r=0;t=30'
    assert json.loads(response.body) == {
        "type": "https://iana.org/assignments/http-problem-types#quota-exceeded",
        "title": "Too Many Requests",
        "status": 429,
        "violated-policies": ["/api/login"],
    }


# --- who a client is, which quota, what is exempt --------------------------------


def test_a_client_is_its_peer_address_by_default() -> None:
    limits = RateLimits.from_settings(_settings(), [])
    assert limits.client_of(_scope()) == "10.0.0.7"
    assert limits.client_of(_scope(None)) == "unknown"  # a server that gives no peer


def test_a_client_is_the_named_header_behind_a_proxy() -> None:
    limits = RateLimits.from_settings(_settings(key="header:X-Real-IP"), [])
    assert limits.client_of(_scope(("10.0.0.1", 1), (b"x-real-ip", b"203.0.113.9"))) == (
        "203.0.113.9"
    )
    # Without the header (or with an empty one): the peer address.
    assert limits.client_of(_scope(("10.0.0.1", 1))) == "10.0.0.1"
    assert limits.client_of(_scope(("10.0.0.1", 1), (b"x-real-ip", b""))) == "10.0.0.1"
    # A long value is cut: it becomes part of a storage key.
    long = limits.client_of(_scope(("10.0.0.1", 1), (b"x-real-ip", b"a" * 5000)))
    assert long == "a" * 128


def test_the_longest_matching_group_prefix_decides_the_quota() -> None:
    groups = {"/api/": "1000/hour", "/api/login": "5/minute", "/files": "10 per 30 seconds"}
    limits = RateLimits.from_settings(_settings(groups=groups), [])
    assert limits.quota_for("/api/login").policy == Policy("/api/login", 5, 60)
    assert limits.quota_for("/api/items").policy == Policy("/api/", 1000, 3600)
    assert limits.quota_for("/files/a").policy == Policy("/files", 10, 30)
    assert limits.quota_for("/other").policy == Policy("default", 100, 60)


def test_probe_paths_are_exempt_with_their_parameters() -> None:
    limits = RateLimits.from_settings(_settings(), ["/livez", "/livez/{name}", "/metrics"])
    assert limits.exempt("/livez")
    assert limits.exempt("/livez/redis")
    assert limits.exempt("/metrics")
    assert not limits.exempt("/livezz")
    assert not limits.exempt("/api/demo/work")


# --- the sliding window ----------------------------------------------------------


def test_exactly_the_quota_passes_then_a_unit_frees_as_each_request_ages() -> None:
    clock = Clock()
    windows = MemoryWindows(clock=clock)
    policy = Policy("default", 3, 60)
    first = windows.hit_now(policy, "a")
    assert first == Outcome(True, 2, 60)
    clock.now += 10
    assert windows.hit_now(policy, "a") == Outcome(True, 1, 50)
    clock.now += 10
    assert windows.hit_now(policy, "a") == Outcome(True, 0, 40)
    assert windows.hit_now(policy, "a") == Outcome(False, 0, 40)
    clock.now += 39.5
    assert windows.hit_now(policy, "a") == Outcome(False, 0, 1)  # rounded up, never 0
    clock.now += 0.5  # the first request is 60 s old: its unit is back
    assert windows.hit_now(policy, "a") == Outcome(True, 0, 10)
    assert windows.hit_now(policy, "b") == Outcome(True, 2, 60)  # another client


def test_a_peek_counts_nothing() -> None:
    clock = Clock()
    windows = MemoryWindows(clock=clock)
    policy = Policy("p", 2, 10)
    assert asyncio.run(windows.peek(policy, "a")) == Outcome(True, 2, 0)
    windows.hit_now(policy, "a")
    windows.hit_now(policy, "a")
    assert asyncio.run(windows.peek(policy, "a")) == Outcome(False, 0, 10)
    assert asyncio.run(windows.peek(policy, "a")) == Outcome(False, 0, 10)


def test_the_pairs_tracked_are_bounded() -> None:
    windows = MemoryWindows(max_tracked=100)
    policy = Policy("p", 1, 60)
    for n in range(1000):
        windows.hit_now(policy, f"client-{n}")
    assert windows.tracked() == 100
    # The pair tracked longest went first: that client starts afresh.
    assert windows.hit_now(policy, "client-0").allowed
    assert not windows.hit_now(policy, "client-999").allowed


def test_the_same_rule_as_the_limits_librarys_moving_window() -> None:
    # Redis goes through limits' moving window; the in-process count must agree with it.
    async def both() -> tuple[list[bool], list[bool]]:
        ours = MemoryWindows()
        theirs = MovingWindowRateLimiter(MemoryStorage())
        item = RateLimitItemPerSecond(7, 60)
        policy = Policy("p", 7, 60)
        mine = [(await ours.hit(policy, "c")).allowed for _ in range(12)]
        reference = [await theirs.hit(item, "p", "c") for _ in range(12)]
        return mine, reference

    mine, reference = asyncio.run(both())
    assert mine == reference == [True] * 7 + [False] * 5


def test_redis_windows_follow_the_same_rule(redis_server: Callable[[], RedisServer]) -> None:
    redis = redis_server()

    async def run() -> tuple[list[Outcome | None], Outcome | None, Outcome | None]:
        windows = RedisWindows(redis.url)
        try:
            policy = Policy("p", 5, 60)
            hits = [await windows.hit(policy, "c") for _ in range(7)]
            return hits, await windows.peek(policy, "c"), await windows.peek(policy, "other")
        finally:
            await windows.close()

    hits, peeked, fresh = asyncio.run(run())
    # Allowed: one round trip, the remaining quota not asked.
    assert hits[:5] == [Outcome(True, None, 0)] * 5
    for refused in hits[5:]:
        assert refused is not None
        assert (refused.allowed, refused.remaining) == (False, 0)
        assert 59 <= refused.reset_s <= 60
    assert peeked is not None and (peeked.allowed, peeked.remaining) == (False, 0)
    assert fresh == Outcome(True, 5, 0)


# --- sampled lines ---------------------------------------------------------------


def test_sampled_lines_carry_the_count_since_the_last() -> None:
    clock = Clock()
    log = SampledLog(every_s=60, spacing_s=1, clock=clock)
    assert log.note("a") == (1, 0)  # the first: at once
    due = [log.note("a", flagged=n >= 5) for n in range(10_000)]
    assert due == [None] * 10_000
    clock.now += 60
    assert log.note("a") == (10_001, 9_995)


def test_sampled_lines_are_spaced_whatever_the_number_of_clients() -> None:
    clock = Clock()
    log = SampledLog(every_s=60, spacing_s=1, clock=clock)
    lines = 0
    for second in range(10):
        clock.now += 1
        for client in range(1000):
            lines += log.note(f"c{second}-{client}") is not None
    assert lines == 10  # one a second, not one per client


# --- a storage that fails --------------------------------------------------------


class Broken:
    def __init__(self, hang: bool = False) -> None:
        self.calls = 0
        self.hang = hang

    async def hit(self, policy: Policy, client: str) -> Outcome:
        self.calls += 1
        if self.hang:
            await asyncio.sleep(3600)
        raise ConnectionError("connection refused")

    async def peek(self, policy: Policy, client: str) -> Outcome:
        return await self.hit(policy, client)

    async def close(self) -> None:
        return None


def test_a_failing_storage_lets_requests_pass_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    broken = Broken()
    counts = StorageCounts()
    storage = FailOpen(broken, counts, clock)
    policy = Policy("p", 1, 60)

    async def run() -> list[Outcome | None]:
        outcomes = [await storage.hit(policy, "c") for _ in range(100)]
        clock.now += SKIP_AFTER_FAILURE_S
        outcomes.append(await storage.hit(policy, "c"))
        return outcomes

    with caplog.at_level(logging.ERROR, "aiva.rate_limit"):
        outcomes = asyncio.run(run())
    assert outcomes == [None] * 101
    # Asked once, then left alone for a second; asked again after it.
    assert broken.calls == 2
    assert (counts.errors, counts.unchecked) == (2, 101)
    assert len(caplog.records) == 1
    assert "ConnectionError: connection refused" in caplog.records[0].getMessage()


def test_a_hanging_storage_costs_a_request_the_timeout_at_most() -> None:
    counts = StorageCounts()
    storage = FailOpen(Broken(hang=True), counts)

    async def timed() -> tuple[Outcome | None, float]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        outcome = await storage.hit(Policy("p", 1, 60), "c")
        return outcome, loop.time() - started

    outcome, took = asyncio.run(timed())
    assert outcome is None
    assert STORAGE_TIMEOUT_S * 0.9 <= took < STORAGE_TIMEOUT_S + 0.5
    assert counts.errors == 1


# --- settings --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "rule"),
    [
        ("KEY", "ip", "must be client or header:NAME"),
        ("KEY", "header:", "must be client or header:NAME"),
        ("KEY", "header:X Real", "must be client or header:NAME"),
        ("STORAGE", "memcached://h:11211", "must be memory or a URL (redis, rediss)"),
        ("STORAGE", "redis://", "must be memory or a URL (redis, rediss)"),
        ("WINDOW_S", "0", "must be at least 1"),
        ("WINDOW_S", "1.5", "must be a whole number"),
        ("REQUESTS", "0", "must be at least 1"),
        ("GROUPS", '{"/api" = "five a minute"}', "must be a table of path prefix: limit"),
        ("GROUPS", '{"api" = "5/minute"}', "must be a table of path prefix: limit"),
        ("GROUPS", '{"/a\\"b" = "5/minute"}', "must be a table of path prefix: limit"),
        ("GROUPS", '{"/api" = "0/minute"}', "must be a table of path prefix: limit"),
    ],
)
def test_bad_forms_are_settings_errors(key: str, value: str, rule: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({f"AIVA_SECURITY__RATE_LIMIT__{key}": value}, config_dir="/nonexistent")
    assert any(
        p.key == f"security.rate_limit.{key.lower()}" and rule in p.rule
        for p in raised.value.problems
    )


def test_good_forms_load() -> None:
    environ = {
        "AIVA_SECURITY__RATE_LIMIT__KEY": "header:X-Real-IP",
        "AIVA_SECURITY__RATE_LIMIT__STORAGE": "rediss://:pw@redis.example:6380/2",
        "AIVA_SECURITY__RATE_LIMIT__GROUPS": '{"/api/login" = "5/minute"}',
    }
    limit = load_settings(environ, config_dir="/nonexistent").settings.security.rate_limit
    assert (limit.enabled, limit.requests, limit.window_s) == (False, 100, 60)
    assert limit.key == "header:X-Real-IP"
    assert dict(limit.groups) == {"/api/login": "5/minute"}


# --- in-process ------------------------------------------------------------------


def sample(exposition: str, name: str, **labels: str) -> float | None:
    """The value of the series `name` whose labels include `labels`, if exposed."""
    wanted = {f'{k}="{v}"' for k, v in labels.items()}
    for line in exposition.splitlines():
        series, _, value = line.rpartition(" ")
        if series.startswith(name + "{") and wanted <= set(series[len(name) + 1 : -1].split(",")):
            return float(value)
    return None


@contextmanager
def _client(**environ: str) -> Iterator[TestClient]:
    settings = load_settings({**QUIET, **environ}, config_dir="/nonexistent").settings
    with TestClient(aiva.create_app(settings)) as client:
        yield client


def test_in_process_the_quota_then_429_probes_exempt() -> None:
    with _client(
        AIVA_SECURITY__RATE_LIMIT__ENABLED="true", AIVA_SECURITY__RATE_LIMIT__REQUESTS="4"
    ) as client:
        answers = [client.get("/") for _ in range(5)]
        assert [a.status_code for a in answers] == [200, 200, 200, 200, 429]
        # No fields while half the quota or more is left, then on each response.
        assert [a.headers.get("ratelimit") for a in answers[:2]] == [None, None]
        assert answers[2].headers["ratelimit"] == '"default";r=1;t=60'
        assert answers[3].headers["ratelimit"] == '"default";r=0;t=60'
        refused = answers[4]
        assert refused.headers["ratelimit-policy"] == '"default";q=4;w=60'
        assert refused.headers["retry-after"] in {"59", "60"}
        assert refused.headers["ratelimit"] == f'"default";r=0;t={refused.headers["retry-after"]}'
        assert "x-request-id" in refused.headers
        for path in ("/livez", "/readyz", "/health", "/health/live", "/metrics"):
            assert client.get(path).status_code == 200, path
        metrics = client.get("/metrics").text
        assert (
            sample(metrics, "aiva_http_rate_limited_total", http_route="/", policy="default") == 1
        )
        # Each policy's series is there from start-up (no route), at 0 when unused.
        assert sample(metrics, "aiva_http_rate_limited_total", http_route="", policy="api-key") == 0


def test_off_by_default_with_no_middleware_but_the_counters_at_0() -> None:
    with _client() as client:
        answers = [client.get("/") for _ in range(150)]
        assert {a.status_code for a in answers} == {200}
        assert "ratelimit" not in answers[-1].headers
        metrics = client.get("/metrics").text
        # Dashboards and alerts naming them find a series whether limiting is on or not.
        assert sample(metrics, "aiva_http_rate_limited_total", policy="api-key") == 0
        assert sample(metrics, "aiva_security_api_key_failures_total") == 0
        stack = client.app.middleware_stack  # type: ignore[attr-defined]
        names = []
        while stack is not None:
            names.append(type(stack).__name__)
            stack = getattr(stack, "app", None)
        assert "RateLimitMiddleware" not in names


def test_in_process_wrong_keys_are_throttled_and_logged_sampled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    allowed = KEY_FAILURE_POLICY.requests
    with (
        _client(AIVA_SECURITY__API_KEY="k3y") as client,
        caplog.at_level(logging.WARNING, "aiva.security"),
    ):
        codes = [
            client.get("/metrics", headers={"X-API-Key": f"guess-{n}"}).status_code
            for n in range(allowed + 20)
        ]
        assert codes == [401] * allowed + [429] * 20
        # Throttled: even the right key is not compared; the probes never answer 429.
        assert client.get("/metrics", headers={"X-API-Key": "k3y"}).status_code == 429
        assert client.get("/health", headers={"X-API-Key": "k3y"}).status_code == 429
        assert client.get("/readyz?verbose", headers={"X-API-Key": "k3y"}).status_code == 200
        assert client.get("/health/ready", headers={"X-API-Key": "k3y"}).json() == {
            "status": "healthy"
        }
        # No key at all is no attempt: the bare status as ever.
        assert client.get("/health").status_code == 200
    lines = [r for r in caplog.records if r.name == "aiva.security"]
    assert len(lines) == 1
    assert "wrong API key from client testclient on /metrics" in lines[0].getMessage()
