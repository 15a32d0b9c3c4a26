"""The protocol's hold on uvicorn's internals: checked at start-up, with a fallback."""

from __future__ import annotations

import pickle

import pytest

from aiva.fast import PLAIN, FastLayer
from aiva.fast import uvicorn_protocol as protocol
from aiva.fast.uvicorn_protocol import (
    HeadLimits,
    LimitedHttpToolsProtocol,
    http_protocol,
    missing_hooks,
)

LIMITS = HeadLimits(max_bytes=32768, max_headers=100, timeout_s=10)


def test_the_installed_uvicorn_has_every_internal_the_protocol_uses() -> None:
    assert missing_hooks() == ""


def test_the_limited_protocol_is_chosen_and_pickles_into_workers() -> None:
    chosen = http_protocol(LIMITS, FastLayer(frozenset({"uvicorn_protocol"})))
    assert chosen.func is LimitedHttpToolsProtocol
    assert chosen.args == (LIMITS,)
    again = pickle.loads(pickle.dumps(chosen))  # as uvicorn's spawned workers get it
    assert (again.func, again.args) == (LimitedHttpToolsProtocol, (LIMITS,))


def test_without_the_hook_uvicorns_h11_serves() -> None:
    assert http_protocol(LIMITS, PLAIN) == "h11"


def test_a_missing_internal_fails_the_self_test(monkeypatch: pytest.MonkeyPatch) -> None:
    assert protocol.protocol_works() is None
    monkeypatch.setitem(protocol._HOOKS, "on_headers_complete", ("no_such_attribute",))
    assert protocol.protocol_works() == "on_headers_complete() without self.no_such_attribute"
