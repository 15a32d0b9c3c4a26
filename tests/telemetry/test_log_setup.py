"""Where logging is configured: by aiva only when nothing else has, the service's own
setup kept (levels included), and uvicorn's records reaching OTLP either way."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from aiva.settings import load_settings
from aiva.telemetry.log_setup import claim_logging, set_level
from aiva.telemetry.logs import OtlpLogs
from tests.telemetry.test_logs import _in_memory_pipeline

LOGS = load_settings({}, config_dir="/nonexistent").settings.telemetry.logs


@contextmanager
def service_logging(propagate_uvicorn: bool) -> Iterator[logging.Logger]:
    """The root logger as a service that configured logging itself leaves it (a handler
    of its own, DEBUG), and uvicorn's logger as uvicorn's default config does."""
    root, uvicorn = logging.getLogger(), logging.getLogger("uvicorn")
    saved = (list(root.handlers), root.level, uvicorn.propagate, list(uvicorn.handlers))
    own = logging.StreamHandler()
    root.handlers[:] = [own]
    root.setLevel(logging.DEBUG)
    uvicorn.propagate = propagate_uvicorn
    try:
        yield root
    finally:
        root.handlers[:], uvicorn.handlers[:] = saved[0], saved[3]
        root.setLevel(saved[1])
        uvicorn.propagate = saved[2]


def test_the_services_own_logging_and_levels_are_kept() -> None:
    _, provider, processor = _in_memory_pipeline()
    with service_logging(propagate_uvicorn=True) as root:
        own = list(root.handlers)
        release = claim_logging(LOGS, OtlpLogs(provider, processor))
        assert root.handlers[: len(own)] == own  # kept; aiva's OTLP handler added
        set_level("WARNING")  # a reload: the service's levels are the service's
        assert root.level == logging.DEBUG
        assert logging.getLogger("aiva").level == logging.WARNING
        release()
        assert root.handlers == own
    logging.getLogger("aiva").setLevel(logging.NOTSET)


def test_uvicorns_error_line_reaches_otlp_when_it_does_not_propagate() -> None:
    exporter, provider, processor = _in_memory_pipeline()
    with service_logging(propagate_uvicorn=False):
        uvicorn = logging.getLogger("uvicorn")
        before = list(uvicorn.handlers)
        uvicorn.handlers.clear()  # uvicorn's own console handler would print the line
        try:
            release = claim_logging(LOGS, OtlpLogs(provider, processor))
            logging.getLogger("uvicorn.error").error("Exception in ASGI application")
            release()
            assert not uvicorn.handlers  # taken off again
        finally:
            uvicorn.handlers[:] = before
    provider.force_flush()
    bodies = [r.log_record.body for r in exporter.get_finished_logs()]
    assert bodies == ["Exception in ASGI application"]


def test_opentelemetrys_own_handler_does_not_count_as_configured() -> None:
    # `opentelemetry-instrument` puts its handler on the root logger before the app
    # starts: aiva must still set up the console, and take that handler out.
    from opentelemetry.instrumentation.logging.handler import LoggingHandler

    _, provider, processor = _in_memory_pipeline()
    root = logging.getLogger()
    saved = list(root.handlers)
    theirs = LoggingHandler()
    root.handlers[:] = [theirs]
    try:
        release = claim_logging(LOGS, OtlpLogs(provider, processor))
        kinds = [type(h).__name__ for h in root.handlers]
        assert "QueuedOutput" in kinds and "LoggingHandler" not in kinds  # aiva's console
        release()
        assert root.handlers == [theirs]
    finally:
        root.handlers[:] = saved
