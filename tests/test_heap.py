"""Freezing the long-lived heap, and thawing it when a reload replaces part of it."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from aiva.heap import freeze_long_lived, refreeze_if_frozen


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector can free it


@pytest.fixture(autouse=True)
def _thawed() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the test process goes on collecting as before


def test_a_replaced_cycle_is_collected_after_a_refreeze() -> None:
    node = _Node()
    alive = weakref.ref(node)
    freeze_long_lived()
    assert gc.get_freeze_count() > 0
    del node  # as a reload drops the settings it replaced
    gc.collect()
    assert alive() is not None  # frozen: full collections no longer see it
    refreeze_if_frozen()
    assert alive() is None
    assert gc.get_freeze_count() > 0  # and the rest is frozen again


def test_nothing_is_frozen_where_nothing_was() -> None:
    refreeze_if_frozen()
    assert gc.get_freeze_count() == 0
