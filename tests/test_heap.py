"""Freezing the long-lived heap, and thawing it when a reload replaces part of it."""

from __future__ import annotations

import gc
import sys
import weakref
from collections.abc import Iterator

import pytest

from aiva.heap import (
    DEFAULT_YOUNG_THRESHOLD,
    SERVER_YOUNG_THRESHOLD,
    freeze_long_lived,
    refreeze_if_frozen,
)


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector can free it


@pytest.fixture(autouse=True)
def _thawed() -> Iterator[None]:
    thresholds = gc.get_threshold()
    gc.unfreeze()
    yield
    gc.unfreeze()  # the test process goes on collecting as before
    gc.set_threshold(*thresholds)


def test_a_refreeze_freezes_what_the_reload_built_without_collecting() -> None:
    freeze_long_lived()
    frozen = gc.get_freeze_count()
    replaced = _Node()  # a cycle the reload built (new settings, checks)
    alive = weakref.ref(replaced)
    del replaced
    refreeze_if_frozen()
    # Not collected (no full collection on the event loop), but out of the collector's
    # way with the rest: frozen.
    assert alive() is not None
    assert gc.get_freeze_count() > frozen


def test_nothing_is_frozen_where_nothing_was() -> None:
    refreeze_if_frozen()
    assert gc.get_freeze_count() == 0


@pytest.fixture
def _default_thresholds() -> None:
    gc.set_threshold(DEFAULT_YOUNG_THRESHOLD, 10, 10)  # _thawed puts the test's own back


@pytest.mark.skipif(
    sys.version_info >= (3, 14), reason="CPython 3.14's collector: aiva leaves its threshold"
)
@pytest.mark.usefixtures("_default_thresholds")
def test_the_server_raises_the_young_generations_default_threshold() -> None:
    freeze_long_lived()
    assert gc.get_threshold() == (SERVER_YOUNG_THRESHOLD, 10, 10)


@pytest.mark.usefixtures("_default_thresholds")
@pytest.mark.parametrize("chosen", [0, 2_000, 50_000])
def test_a_threshold_the_service_chose_stays(chosen: int) -> None:
    gc.set_threshold(chosen, 10, 10)
    freeze_long_lived()
    assert gc.get_threshold() == (chosen, 10, 10)
