"""The reloader in this process: reads in a thread within a time budget, the garbage
collector held while it reads, a bounded ERROR line for a rejected reload."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.metrics import NoOpMeterProvider

from aiva.settings import load_settings
from aiva.web import reloader as reloader_module
from aiva.web.reloader import LiveSettings, SettingsReloader

DEBUG = "default:\n  telemetry:\n    logs:\n      level: DEBUG\n"


def reloader_on(folder: Path) -> tuple[SettingsReloader, LiveSettings]:
    loaded = load_settings({}, config_dir=folder)
    live = LiveSettings(loaded.settings)
    counter = NoOpMeterProvider().get_meter("test").create_counter("aiva.config.reloads")
    return SettingsReloader(loaded, {}, live, lambda _: None, counter), live


def wrap_read(reloader: SettingsReloader, before: Callable[[], object]) -> None:
    """Run `before` in the reading thread ahead of each read."""
    read = reloader._read

    def wrapped(*args: Any) -> Any:
        before()
        return read(*args)

    reloader._read = wrapped  # type: ignore[method-assign]


@pytest.fixture
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]


def test_a_read_past_its_budget_is_rejected_and_the_next_waits_for_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    collector_on: None,
) -> None:
    monkeypatch.setattr(reloader_module, "RELOAD_BUDGET_S", 0.5)
    reloader, live = reloader_on(tmp_path)
    (tmp_path / "settings.yaml").write_text(DEBUG)
    go_on = threading.Event()
    wrap_read(reloader, lambda: go_on.wait(20))  # a read that takes as long as we say

    async def scenario() -> list[str]:
        started = time.monotonic()
        results = [await reloader.reload("test")]
        assert time.monotonic() - started < 5  # the budget, not the read, ended it
        assert gc.isenabled()  # given back at the budget, though the read goes on
        results.append(await reloader.reload("test"))  # the first read still going
        go_on.set()
        reading = reloader._reading
        for _ in range(200):  # bounded: the first read ends at once now
            if reading is not None and reading.done():
                break
            await asyncio.sleep(0.05)
        results.append(await reloader.reload("test"))
        return results

    with caplog.at_level(logging.ERROR, logger="aiva.web.reloader"):
        results = asyncio.run(scenario())
    assert results == ["rejected", "rejected", "applied"]
    assert live.current.telemetry.logs.level == "DEBUG"
    assert errors(caplog) == [
        "settings reload (test) rejected, old settings stay: reading the settings took longer "
        "than 0.5 s (the reading goes on in its thread; what it finds will be dropped)",
        "settings reload (test) rejected, old settings stay: the reading started by an "
        "earlier reload is still going on, past its 0.5 s budget",
    ]


def test_the_garbage_collector_waits_while_a_reload_reads(
    tmp_path: Path, collector_on: None
) -> None:
    reloader, _ = reloader_on(tmp_path)
    seen: list[bool] = []
    wrap_read(reloader, lambda: seen.append(gc.isenabled()))
    assert asyncio.run(reloader.reload("test")) == "unchanged"
    assert seen == [False]
    assert gc.isenabled()


def test_a_collector_turned_off_by_the_application_stays_off(tmp_path: Path) -> None:
    reloader, _ = reloader_on(tmp_path)
    was = gc.isenabled()
    gc.disable()
    try:
        assert asyncio.run(reloader.reload("test")) == "unchanged"
        assert not gc.isenabled()
    finally:
        if was:
            gc.enable()


def test_a_rejected_reload_is_one_bounded_error_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reloader, live = reloader_on(tmp_path)
    typos = "".join(f"    port_{i}: 1\n" for i in range(500))
    big = "x" * 100_000
    (tmp_path / "settings.yaml").write_text(
        f"default:\n  telemetry:\n    traces:\n      sampler_ratio: '{big}'\n  server:\n{typos}"
    )
    with caplog.at_level(logging.ERROR, logger="aiva.web.reloader"):
        assert asyncio.run(reloader.reload("test")) == "rejected"
    [line] = errors(caplog)
    assert line.startswith("settings reload (test) rejected, old settings stay: server.port_0: ")
    assert line.endswith(f"; ... and {501 - 10} more")
    assert len(line) < 5000
    assert live.current.telemetry.traces.sampler_ratio == 1.0
