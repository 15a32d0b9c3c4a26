"""The runner: timeouts, errors, concurrency, cancellation, status-change logs, staleness."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from opentelemetry.trace import NoOpTracerProvider

from aiva.health.model import Outcome, Status
from aiva.health.runner import HealthRunner
from aiva.health.types import CheckFunction, CheckSpec
from aiva.settings import load_settings

HEALTH = load_settings({}, config_dir="/nonexistent").settings.health


def spec(name: str, run: CheckFunction, timeout: float = 1.0, critical: bool = True) -> CheckSpec:
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
