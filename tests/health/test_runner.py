"""The runner: timeouts, errors, concurrency, cancellation, status-change logs, staleness."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from opentelemetry import context
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracerProvider, StatusCode

from aiva.health.model import Outcome, Status
from aiva.health.report import ietf_report
from aiva.health.runner import HealthRunner, as_async
from aiva.health.types import AsyncCheckFunction, CheckSpec
from aiva.settings import load_settings

HEALTH = load_settings({}, config_dir="/nonexistent").settings.health


def spec(
    name: str, run: AsyncCheckFunction, timeout: float = 1.0, critical: bool = True
) -> CheckSpec:
    return CheckSpec(name, run, critical, ("ready",), timeout)


def runner(*specs: CheckSpec) -> HealthRunner:
    return HealthRunner(specs, HEALTH, NoOpTracerProvider().get_tracer("t"))


async def sleeper(seconds: float) -> Outcome:
    await asyncio.sleep(seconds)
    return Outcome.healthy()


def test_timeout_is_unhealthy_with_its_message() -> None:
    async def hang() -> Outcome:
        return await sleeper(10)

    r = runner(spec("slow", hang, timeout=0.2))
    started = time.monotonic()
    [result] = asyncio.run(r.evaluate())
    assert time.monotonic() - started < 1
    assert (result.status, result.message) == (Status.UNHEALTHY, "timed out after 0.2s")


def test_exception_is_unhealthy_and_bool_results_count() -> None:
    async def broken() -> Outcome:
        raise OSError("disk on fire")

    async def yes() -> bool:
        return True

    async def no() -> bool:
        return False

    r = runner(spec("broken", broken), spec("yes", yes), spec("no", no))
    results = {x.name: x for x in asyncio.run(r.evaluate())}
    assert (results["broken"].status, results["broken"].message) == (
        Status.UNHEALTHY,
        "disk on fire",
    )
    assert results["yes"].status is Status.HEALTHY
    assert results["no"].status is Status.UNHEALTHY


def test_checks_run_concurrently() -> None:
    r = runner(*(spec(f"c{i}", lambda: sleeper(0.3)) for i in range(5)))
    started = time.monotonic()
    asyncio.run(r.evaluate())
    assert time.monotonic() - started < 0.9  # five 0.3 s checks at once, not 1.5 s


def test_cancellation_is_not_swallowed() -> None:
    async def run() -> None:
        r = runner(spec("slow", lambda: sleeper(10), timeout=20))
        task = asyncio.create_task(r.evaluate())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())


def test_before_the_first_round_everything_is_unknown() -> None:
    r = runner(spec("a", lambda: sleeper(0)))
    assert not r.started
    assert r.status() is Status.UNKNOWN
    asyncio.run(r.evaluate())
    assert r.started and r.status() is Status.HEALTHY


def test_status_changes_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    state = {"ok": True}

    async def flaky() -> bool:
        return state["ok"]

    r = runner(spec("flaky", flaky))
    caplog.set_level(logging.INFO, logger="aiva.health.runner")
    asyncio.run(r.evaluate())
    assert caplog.records == []  # healthy at first: no news
    state["ok"] = False
    asyncio.run(r.evaluate())
    asyncio.run(r.evaluate())  # no change, no line
    state["ok"] = True
    asyncio.run(r.evaluate())
    assert [(x.levelname, x.getMessage()) for x in caplog.records] == [
        ("ERROR", "health check flaky is unhealthy (was healthy): failed"),
        ("WARNING", "health check flaky is healthy (was unhealthy): ok"),
    ]


def test_probe_membership_and_exclusion() -> None:
    live = CheckSpec("loop", lambda: sleeper(0), False, ("live",), 1)
    ready = CheckSpec("db", lambda: sleeper(0), True, ("ready", "startup"), 1)
    r = runner(live, ready)
    asyncio.run(r.evaluate())
    assert [x.name for x in r.results("live")] == ["loop"]
    assert [x.name for x in r.results("ready")] == ["db"]
    assert [x.name for x in r.results("startup")] == ["db"]
    assert [x.name for x in r.results(exclude=["db"])] == ["loop"]


def traced_runner(*specs: CheckSpec) -> tuple[HealthRunner, InMemorySpanExporter]:
    """A runner on a private SDK tracer provider whose spans land in memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return HealthRunner(specs, HEALTH, provider.get_tracer("t")), exporter


def check_span(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    [span] = [s for s in exporter.get_finished_spans() if s.name == f"health.check {name}"]
    return span


def test_a_failing_check_span_records_the_exception_masked() -> None:
    async def leaky() -> Outcome:
        try:
            raise OSError("password=CANARY123 rejected")
        except OSError as cause:
            raise RuntimeError("cannot reach postgresql://app:CANARY123@db/x\nretrying") from cause

    r, exporter = traced_runner(spec("db", leaky))
    [result] = asyncio.run(r.evaluate())
    assert result.message == "cannot reach postgresql://app:****@db/x"
    span = check_span(exporter, "db")
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "cannot reach postgresql://app:****@db/x"
    [event] = span.events
    assert event.name == "exception"
    attributes = dict(event.attributes or {})
    assert attributes["exception.type"] == "RuntimeError"
    assert attributes["exception.message"] == "cannot reach postgresql://app:****@db/x\nretrying"
    assert "Traceback" in str(attributes.get("exception.stacktrace", ""))
    assert "CANARY123" not in span.to_json()
    assert all("CANARY123" not in s.to_json() for s in exporter.get_finished_spans())


def test_an_outcome_message_is_masked_too() -> None:
    async def chatty() -> Outcome:
        return Outcome.unhealthy(
            "no route to redis://:CANARY123@cache:6379/0", url="x://u:CANARY123@h"
        )

    r, exporter = traced_runner(spec("cache", chatty))
    [result] = asyncio.run(r.evaluate())
    assert result.message == "no route to redis://:****@cache:6379/0"
    assert result.details == {"url": "x://u:****@h"}
    assert "CANARY123" not in check_span(exporter, "cache").to_json()


def test_a_timeout_is_an_error_on_the_span() -> None:
    r, exporter = traced_runner(spec("slow", lambda: sleeper(10), timeout=0.1))
    asyncio.run(r.evaluate())
    span = check_span(exporter, "slow")
    assert (span.status.status_code, span.status.description) == (
        StatusCode.ERROR,
        "timed out after 0.1s",
    )
    [event] = span.events
    assert event.name == "exception"
    assert dict(event.attributes or {})["exception.type"] == "TimeoutError"
    assert dict(event.attributes or {})["exception.message"] == "timed out after 0.1s"


def test_a_check_removed_mid_round_does_not_end_the_loop() -> None:
    entered = asyncio.Event()

    async def slow() -> Outcome:
        entered.set()
        await asyncio.sleep(0.2)
        return Outcome.healthy()

    async def quick() -> bool:
        return True

    fast = dataclasses.replace(HEALTH, interval_s=0.05)
    keep = spec("quick", quick)
    r = HealthRunner([spec("slow", slow), keep], fast, NoOpTracerProvider().get_tracer("t"))

    async def scenario() -> None:
        loop = asyncio.create_task(r.run())
        await entered.wait()
        r.configure(fast, [keep])  # a hot reload drops `slow` while its round runs
        deadline = time.monotonic() + 3
        while r.rounds < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert not loop.done(), loop.exception() if loop.done() else None
        loop.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loop

    asyncio.run(scenario())
    assert r.rounds >= 3
    assert [(x.name, x.status) for x in r.results()] == [("quick", Status.HEALTHY)]


def test_a_failing_round_is_logged_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    class BrokenHistogram:
        def record(self, value: float, attributes: object) -> None:
            raise RuntimeError("exporter exploded")

    async def quick() -> bool:
        return True

    fast = dataclasses.replace(HEALTH, interval_s=0.05)
    r = HealthRunner(
        [spec("quick", quick)], fast, NoOpTracerProvider().get_tracer("t"), BrokenHistogram()
    )
    caplog.set_level(logging.ERROR, logger="aiva.health.runner")

    async def scenario() -> None:
        loop = asyncio.create_task(r.run())
        await asyncio.sleep(0.3)
        assert not loop.done(), loop.exception() if loop.done() else None
        loop.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loop

    asyncio.run(scenario())
    failures = [x for x in caplog.records if x.getMessage().startswith("health round failed")]
    assert len(failures) >= 3  # every round failed, and every round was tried
    assert failures[0].exc_info is not None


def test_rounds_start_every_interval_from_the_previous_start() -> None:
    starts: list[float] = []

    async def slowish() -> Outcome:
        starts.append(time.monotonic())
        await asyncio.sleep(0.3)
        return Outcome.healthy()

    every = dataclasses.replace(HEALTH, interval_s=0.5)
    r = HealthRunner([spec("s", slowish)], every, NoOpTracerProvider().get_tracer("t"))

    async def scenario() -> None:
        loop = asyncio.create_task(r.run())
        await asyncio.sleep(1.75)
        loop.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loop

    asyncio.run(scenario())
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # A full interval of sleep after each 0.3 s round would make the gaps 0.8 s.
    assert len(starts) >= 3, starts
    assert all(0.4 < gap < 0.7 for gap in gaps), gaps


def test_a_stale_result_keeps_its_measurement() -> None:
    async def ping() -> Outcome:
        return Outcome(Status.HEALTHY, "ok", {"latency_ms": 1.5}, 1.5, "ms")

    brief = dataclasses.replace(HEALTH, interval_s=0.05, cache_ttl_s=0.05, timeout_s=0.05)
    redis = CheckSpec("redis", ping, True, ("ready",), 0.05, "datastore", "responseTime")
    r = HealthRunner([redis], brief, NoOpTracerProvider().get_tracer("t"))
    asyncio.run(r.evaluate())
    time.sleep(0.3)  # no round since: older than cache ttl + interval + timeout
    [stale] = r.results()
    assert stale.status is Status.UNKNOWN
    assert stale.message.startswith("stale: last evaluated")
    assert (stale.observed_value, stale.observed_unit, stale.component_type) == (
        1.5,
        "ms",
        "datastore",
    )
    body = ietf_report([stale], Status.UNKNOWN, "1", "aiva", details=True)
    [entry] = body["checks"]["redis:responseTime"]
    assert (entry["status"], entry["observedValue"], entry["componentType"]) == (
        "fail",
        1.5,
        "datastore",
    )


def test_plain_function_checks_run_in_a_thread_like_async_ones() -> None:
    loop_thread = threading.get_ident()
    threads: list[int] = []

    def yes() -> bool:
        threads.append(threading.get_ident())
        return True

    def slow_cache() -> Outcome:
        return Outcome.degraded("hit ratio low", hit_ratio=0.2)

    def broken() -> bool:
        raise OSError("disk on fire")

    class Probe:
        def __call__(self) -> bool:
            return False

    r = runner(
        spec("yes", as_async(yes)),
        spec("cache", as_async(slow_cache)),
        spec("broken", as_async(broken)),
        spec("object", as_async(Probe())),
    )
    results = {x.name: x for x in asyncio.run(r.evaluate())}
    assert (results["yes"].status, results["yes"].message) == (Status.HEALTHY, "ok")
    assert (results["cache"].status, results["cache"].message) == (Status.DEGRADED, "hit ratio low")
    assert results["cache"].details == {"hit_ratio": 0.2}
    assert (results["broken"].status, results["broken"].message) == (
        Status.UNHEALTHY,
        "disk on fire",
    )
    assert (results["object"].status, results["object"].message) == (Status.UNHEALTHY, "failed")
    assert threads and loop_thread not in threads  # never on the event loop's thread


def test_a_plain_check_that_overruns_times_out_and_is_not_piled_up() -> None:
    release = threading.Event()
    calls: list[float] = []

    def hang() -> bool:
        calls.append(time.monotonic())
        release.wait(10)  # a blocking driver call that never answers (until released)
        return True

    r, exporter = traced_runner(spec("stuck", as_async(hang), timeout=0.2))

    async def scenario() -> None:
        started = time.monotonic()
        [first] = await r.evaluate()
        assert time.monotonic() - started < 0.2 + 2  # abandoned, not awaited (it hangs 10 s)
        assert (first.status, first.message) == (Status.UNHEALTHY, "timed out after 0.2s")
        [second] = await r.evaluate()  # the abandoned call still holds its thread
        assert (second.status, second.message) == (
            Status.UNHEALTHY,
            "previous call still running after its timeout",
        )
        assert len(calls) == 1
        release.set()
        deadline = time.monotonic() + 5
        while (await r.evaluate())[0].status is not Status.HEALTHY:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)

    try:
        asyncio.run(scenario())
    finally:
        release.set()
    assert len(calls) == 2
    first_span = next(s for s in exporter.get_finished_spans() if s.name == "health.check stuck")
    assert first_span.status.description == "timed out after 0.2s"


def test_checks_run_with_client_instrumentation_suppressed() -> None:
    seen: dict[str, object] = {}

    async def in_loop() -> bool:
        seen["async"] = context.get_value(_SUPPRESS_INSTRUMENTATION_KEY)
        return True

    def in_thread() -> bool:
        seen["sync"] = context.get_value(_SUPPRESS_INSTRUMENTATION_KEY)
        return True

    async def scenario() -> None:
        await runner(spec("a", in_loop), spec("s", as_async(in_thread))).evaluate()
        seen["after"] = context.get_value(_SUPPRESS_INSTRUMENTATION_KEY)

    asyncio.run(scenario())
    assert seen["async"] and seen["sync"]
    assert not seen["after"]  # only the checks' own calls: the rest of the app is traced


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep test output quiet


def test_a_check_makes_no_client_spans_with_httpx_instrumented() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"

    async def ping_async() -> bool:
        async with httpx.AsyncClient(timeout=2) as http:
            return (await http.get(url)).status_code == 200

    def ping_sync() -> bool:
        return httpx.get(url, timeout=2).status_code == 200

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    checks = (spec("async", ping_async), spec("sync", as_async(ping_sync)))
    r = HealthRunner(checks, HEALTH, provider.get_tracer("t"))
    instrumentor = HTTPXClientInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        results = asyncio.run(r.evaluate())
        assert [x.status for x in results] == [Status.HEALTHY, Status.HEALTHY]
        names = sorted(s.name for s in exporter.get_finished_spans())
        assert names == ["health.check async", "health.check sync", "health.evaluate"]
        assert ping_sync()  # outside a check the same call is traced: the instrumentor is on
        assert [s.name for s in exporter.get_finished_spans()][-1] == "GET"
    finally:
        instrumentor.uninstrument()
        server.shutdown()
        server.server_close()


def test_a_hung_plain_check_does_not_hold_the_process_at_exit() -> None:
    # `aiva health` and a stopping server must not wait for a call that never returns.
    script = (
        "import asyncio, time\n"
        "from aiva.health.runner import as_async\n"
        "from tests.health.test_runner import runner, spec\n"
        "r = runner(spec('stuck', as_async(lambda: time.sleep(30)), timeout=0.2))\n"
        "print(asyncio.run(r.evaluate())[0].message)\n"
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=25, check=True
    )
    assert done.stdout.strip() == "timed out after 0.2s"
    assert time.monotonic() - started < 10  # not the 30 s the call would take
