"""The library API a service writes against: operation, log_context, meter, tracer."""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from types import TracebackType
from typing import Any, NamedTuple, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import Status, StatusCode

from aiva import __version__
from aiva.context import log_fields_var
from aiva.settings.masking import MASK, is_secret_name, mask_text, masked_exception
from aiva.telemetry.http import error_type

OPERATION_SCOPE = "aiva.operation"  # the spans' and the duration histogram's scope
logger = logging.getLogger(OPERATION_SCOPE)
F = TypeVar("F", bound=Callable[..., Any])

# Span attributes must be primitives; other bound log fields stay on the logs only.
_PRIMITIVES = (str, bool, int, float)


def tracer(name: str = "aiva.app") -> trace.Tracer:
    """A tracer from the configured (global) tracer provider. With aiva's provider
    installed, its spans are aiva's lean spans, as aiva's server span is
    (aiva.telemetry.spans: the SDK's spans, sampler, processors and export, at about two
    fifths of the SDK span's cost).

    Looked up once per provider and name (see `_tracer_of`), so a handler may call
    `aiva.tracer()` on every request at no cost; before a provider is installed, the
    API's proxy tracer, which follows the provider installed later."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider):
        return provider.get_tracer(name, __version__)
    return _tracer_of(provider, name)


def meter(name: str = "aiva.app") -> metrics.Meter:
    """A meter from the configured (global) meter provider, for the service's own instruments.

    With aiva's provider installed, its Counter, UpDownCounter and Histogram are aiva's
    lean ones (aiva.telemetry.instruments: the SDK's points at a tenth of the cost)."""
    from aiva.telemetry.instruments import meter_of

    return meter_of(metrics.get_meter_provider(), name, __version__)


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Bind fields to every log record (and the current span) within the block.

    Bound through a contextvar, so concurrent tasks never see each other's fields.
    Secrets are masked on the span as on the log records (aiva.telemetry.scrub).
    """
    token = log_fields_var.set({**(log_fields_var.get() or {}), **fields})
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes(
            {k: _masked(k, v) for k, v in fields.items() if isinstance(v, _PRIMITIVES)}
        )
    try:
        yield
    finally:
        log_fields_var.reset(token)


def _masked(name: str, value: Any) -> Any:
    if is_secret_name(name):
        return MASK
    return mask_text(value) if isinstance(value, str) else value


class _Entry(NamedTuple):
    """One entry into an `operation`: what its exit needs."""

    owner: operation
    span: trace.Span
    token: object  # the context with the span current, to detach on exit
    started: float


# The open entries of this task or thread, innermost last. Kept per context, not on the
# operation object: one object shared by concurrent tasks, threads or recursive calls
# would otherwise end another task's span with the wrong duration. A tuple, replaced and
# never mutated, because a task started inside an entry copies the context and must not
# see the entries its parent opens or closes afterwards.
_entries: ContextVar[tuple[_Entry, ...]] = ContextVar("aiva_operation_entries", default=())


class operation:
    """A unit of work: a span, a duration histogram point, start/end logs, errors recorded.

    Usable as a (sync or async) context manager and as a decorator of sync or async
    functions. An exception is logged at ERROR, recorded on the span (status ERROR)
    and propagates. One object may be entered by concurrent tasks, threads or recursive
    calls at once: each entry has its own span and duration.
    """

    def __init__(self, name: str, **attributes: Any) -> None:
        self.name = name
        self.attributes = attributes

    def __enter__(self) -> operation:
        # What start_as_current_span(record_exception=False, set_status_on_exception=False)
        # does, without its two generator-based context managers (use_span and the
        # decorator around it): about 3 µs of the operation's ~28 (benchmarks/
        # operation_inprocess.py). The exception is recorded by __exit__ itself.
        span = _operation_tracer().start_span(self.name, attributes=self.attributes)
        token = otel_context.attach(trace.set_span_in_context(span))
        _log(logging.DEBUG, "operation %s started", (self.name,), {"operation": self.name})
        _entries.set((*_entries.get(), _Entry(self, span, token, time.perf_counter())))
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _, span, token, started = self._pop()
        seconds = time.perf_counter() - started
        extra = {"operation": self.name, "duration_ms": round(seconds * 1000, 3)}
        attributes: dict[str, Any] = {"operation": self.name}
        if isinstance(error, Exception):
            span.record_exception(error, attributes=masked_exception(error))
            span.set_status(Status(StatusCode.ERROR, mask_text(str(error))))
            attributes["error.type"] = error_type(error, 0)  # as the HTTP spans name it
            _log(logging.ERROR, "operation %s failed: %s", (self.name, error), extra, error)
        else:
            _log(logging.INFO, "operation %s finished", (self.name,), extra)
        _duration_histogram().record(seconds, attributes)
        # As use_span leaves it: the context restored, then the span ended.
        otel_context.detach(token)  # type: ignore[arg-type]
        span.end()

    def _pop(self) -> _Entry:
        """This object's innermost entry in the current context, removed."""
        entries = _entries.get()
        for index in range(len(entries) - 1, -1, -1):
            if entries[index].owner is self:
                _entries.set(entries[:index] + entries[index + 1 :])
                return entries[index]
        # Entered in another task or thread (or never): its span belongs to that context.
        raise RuntimeError(f"operation {self.name!r} exited without being entered in this context")

    async def __aenter__(self) -> operation:
        return self.__enter__()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(kind, error, tb)

    def __call__(self, func: F) -> F:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                with self:  # state is per entry, so concurrent and recursive calls are safe
                    return await func(*args, **kwargs)

            return run_async  # type: ignore[return-value]

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            with self:
                return func(*args, **kwargs)

        return run  # type: ignore[return-value]


def _log(
    level: int,
    message: str,
    args: tuple[Any, ...],
    extra: dict[str, Any],
    error: BaseException | None = None,
) -> None:
    """An operation's log line, as `logger.log(level, message, *args, extra=extra,
    exc_info=error)` makes it, less the stack walk for its caller: that is always this
    module (as for aiva's access line, aiva.web.middleware)."""
    if not logger.isEnabledFor(level):
        return
    exc_info = (type(error), error, error.__traceback__) if error is not None else None
    record = logger.makeRecord(
        logger.name, level, __file__, 0, message, args, exc_info, "operation", extra
    )
    logger.handle(record)


def _operation_tracer() -> trace.Tracer:
    """What `trace.get_tracer("aiva.operation", __version__)` returns, looked up once per
    provider: the global one is read on every entry, so a provider set later is honoured."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider):
        # Nothing installed yet: the API's proxy tracer, made afresh as get_tracer does. A
        # cached one would keep the first real tracer it resolved to, also after the
        # globals are reset (tests); and no served request comes here (aiva installs its
        # providers, no-op ones when telemetry is off, before serving).
        return provider.get_tracer(OPERATION_SCOPE, __version__)
    return _tracer_of(provider)


@functools.lru_cache(maxsize=64)
def _tracer_of(provider: trace.TracerProvider, name: str = OPERATION_SCOPE) -> trace.Tracer:
    # The SDK keeps one Tracer a scope and returns that same object for the same name and
    # version, but each get_tracer call first re-adds a warnings filter (invalidating
    # every module's warning registry), builds two scope objects and takes a lock: 11 to
    # 13 of the 37 to 39 CPU µs an operation took (benchmarks/operation_inprocess.py).
    # Keyed by provider, so a new provider gets its own tracer, as for the histogram below.
    # Bounded: a service names a handful of tracers; past 64 (providers x names) the
    # oldest is looked up again, which costs time only.
    from aiva.telemetry.spans import tracer_of

    # aiva's lean spans where its provider has them (aiva.telemetry.spans).
    return tracer_of(provider, name, __version__)


def _duration_histogram() -> metrics.Histogram:
    return _histogram_of(metrics.get_meter_provider())


@functools.lru_cache(maxsize=4)
def _histogram_of(provider: metrics.MeterProvider) -> metrics.Histogram:
    # Looking the instrument up again costs ~10 µs an operation (the SDK takes locks
    # and compares descriptors); keyed by provider, so a new provider gets its own.
    from aiva.telemetry.instruments import meter_of
    from aiva.telemetry.metrics import DURATION_BUCKETS_S

    # aiva's lean histogram where its provider has them (aiva.telemetry.instruments).
    return meter_of(provider, OPERATION_SCOPE, __version__).create_histogram(
        "aiva.operation.duration",
        unit="s",
        description="Duration of aiva.operation units of work.",
        # Seconds, as the HTTP duration's: the SDK's default boundaries (0, 5, 10, ...
        # 10000) put every operation in the first bucket.
        explicit_bucket_boundaries_advisory=DURATION_BUCKETS_S,
    )
