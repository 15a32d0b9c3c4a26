"""The fast layer's start-up self-tests: each passes on the pinned packages, each fails
when its hook is taken away (as tests/apps/hookless/breaks.py takes it, undone after),
and the probe warns once, naming exactly the hooks that failed."""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Callable, Iterator
from types import ModuleType

import pytest

import aiva.fast
from aiva.fast import HOOKS, PLAIN, FastLayer, Hook, fast_layer, probe
from tests.apps.hookless import breaks

BY_NAME = {hook.name: hook for hook in HOOKS}


def _self_test(hook: Hook) -> str | None:
    module = importlib.import_module(f"aiva.fast.{hook.module}")
    result: str | None = getattr(module, hook.check)()
    return result


@pytest.fixture
def fresh_probe() -> Iterator[None]:
    probe.cache_clear()
    yield
    probe.cache_clear()


def test_every_hook_can_be_taken_away_by_the_tests() -> None:
    assert set(breaks.BREAKS) == set(BY_NAME)


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_each_self_test_passes_on_the_installed_packages(name: str) -> None:
    assert _self_test(BY_NAME[name]) is None


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_each_self_test_fails_without_its_hook(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    breaks.apply(name, monkeypatch.setattr)
    try:
        reason = _self_test(BY_NAME[name])
    except Exception as error:  # noqa: BLE001 - probe() names a self-test that raises too
        reason = f"{type(error).__name__}: {error}"
    assert reason, f"{name}'s self-test did not notice its hook was gone"


FAKE_MODULE = "aiva.fast.fake_hooks_of_the_tests"


def _hooks(monkeypatch: pytest.MonkeyPatch, *answers: Callable[[], str | None]) -> None:
    """The layer's hooks replaced by fakes whose self-tests are `answers`."""
    fake = ModuleType(FAKE_MODULE)
    for i, answer in enumerate(answers):
        setattr(fake, f"answer{i}", answer)
    monkeypatch.setitem(sys.modules, FAKE_MODULE, fake)
    hooks = tuple(
        Hook(f"hook{i}", FAKE_MODULE.rsplit(".", 1)[1], f"answer{i}", f"plain {i}")
        for i in range(len(answers))
    )
    monkeypatch.setattr(aiva.fast, "HOOKS", hooks)


def test_the_probe_warns_once_naming_the_failed_hooks(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, fresh_probe: None
) -> None:
    def broken() -> str | None:
        raise KeyError("gone")

    _hooks(monkeypatch, lambda: None, lambda: "no such method", broken)
    with caplog.at_level(logging.WARNING, logger="aiva.fast"):
        layer = fast_layer("auto")
        assert fast_layer("auto") is layer  # once a process
    assert layer == FastLayer(frozenset({"hook0"}))
    [record] = caplog.records
    message = record.getMessage()
    assert "hook1 (no such method)" in message
    assert "hook2 (KeyError: 'gone')" in message
    assert "hook0" not in message
    assert "plain 1; plain 2" in message


def test_off_runs_no_self_test(monkeypatch: pytest.MonkeyPatch, fresh_probe: None) -> None:
    def must_not_run() -> str | None:
        raise AssertionError("a self-test ran with telemetry.fast_path: off")

    _hooks(monkeypatch, must_not_run)
    assert fast_layer("off") == PLAIN
    assert "hook0" not in PLAIN


def test_the_services_otel_variables_do_not_fail_the_self_tests(
    monkeypatch: pytest.MonkeyPatch, fresh_probe: None
) -> None:
    # A service's own OTEL_* settings (aiva applies them to its pipeline) must not reach
    # the self-tests' private objects: a queue of 2 is smaller than the default batch,
    # a disabled SDK or an always_off sampler records nothing to compare.
    hostile = {
        "OTEL_SDK_DISABLED": "true",
        "OTEL_BSP_MAX_QUEUE_SIZE": "2",
        "OTEL_BLRP_MAX_QUEUE_SIZE": "2",
        "OTEL_TRACES_SAMPLER": "always_off",
        "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "0",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "1",
    }
    for name, value in hostile.items():
        monkeypatch.setenv(name, value)
    assert probe().usable == {hook.name for hook in aiva.fast.HOOKS}
    assert {name: os.environ[name] for name in hostile} == hostile  # put back
