"""The protocol's hold on uvicorn's internals: checked at start-up, with a fallback."""

from __future__ import annotations

import logging
import pickle

import pytest

from aiva.web import protocol
from aiva.web.protocol import HeadLimits, LimitedHttpToolsProtocol, http_protocol, missing_hooks

LIMITS = HeadLimits(max_bytes=32768, max_headers=100, timeout_s=10)


def test_the_installed_uvicorn_has_every_internal_the_protocol_uses() -> None:
    assert missing_hooks() == ""


def test_the_limited_protocol_is_chosen_and_pickles_into_workers() -> None:
    chosen = http_protocol(LIMITS)
    assert chosen.func is LimitedHttpToolsProtocol
    assert chosen.args == (LIMITS,)
    again = pickle.loads(pickle.dumps(chosen))  # as uvicorn's spawned workers get it
    assert (again.func, again.args) == (LimitedHttpToolsProtocol, (LIMITS,))


def test_a_missing_internal_falls_back_to_h11_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(protocol._HOOKS, "on_headers_complete", ("no_such_attribute",))
    with caplog.at_level(logging.WARNING, logger="aiva.web.protocol"):
        assert http_protocol(LIMITS) == "h11"
    [record] = caplog.records
    assert "on_headers_complete() without self.no_such_attribute" in record.getMessage()
    assert "h11" in record.getMessage()
