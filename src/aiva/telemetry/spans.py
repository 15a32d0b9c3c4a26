"""Lean spans: aiva's own implementation of the OpenTelemetry span API, for the tracers of
aiva's tracer provider that aiva hands out (`aiva.tracer()`, `aiva.operation`, the server
and httpx client spans).

Written by hand because the SDK's span costs 14.6 CPU µs to start, give two more
attributes and end as aiva's server span does (`benchmarks/spans_inprocess.py`, an idle
core), and the work route makes four a request: most of it goes to a `BoundedAttributes`
(a lock, a cleaning pass and a copy) built for attributes that are already plain strings
and numbers, to a second parent lookup in the sampler, and to the SDK tracer's own
bookkeeping. A lean span keeps plain attributes in a plain dict and is itself the
ReadableSpan the processors receive: 5.8 µs. On the work route, aiva_full's settings,
the server's CPU a request fell from 615 to 538 µs (interleaved A/B, 6 rounds).

It keeps the SDK's meaning exactly, through public API only (the tests compare the
exported spans byte for byte at the OTLP level):

- the provider's sampler, id generator, resource, span limits and span processors (the
  SDK tracer's public `span_processor`, so processors added later are called too);
- attributes kept as the SDK span's `BoundedAttributes` keeps them, in a plain dict: a
  plain value (bool, int, float, a str within the length limit) under a non-empty str
  key is stored as it is; anything else is cleaned as the API cleans it
  (`aiva.telemetry.attributes.clean_value`, with the span's length limit), with the same
  warnings, count limit (a full span drops its oldest attribute) and dropped count;
- events and links in the SDK's `BoundedList`, their attributes in `BoundedAttributes`;
- the SDK's rules and warnings for ended spans, status changes, exceptions (as events,
  and on `__exit__`) and a span's lock.

What takes the SDK's own path instead: a span started with links (rare; the SDK checks
and bounds them), and every span while `OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED` is on
(the SDK then counts its spans in `otel.sdk.span.*`). Not called for lean spans: a
processor's `_on_ending`, the SDK's private, in-development hook (no processor aiva
installs has one).
"""

from __future__ import annotations

import abc
import functools
import inspect
import logging
import os
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from time import time_ns
from types import MappingProxyType, TracebackType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace.sampling import Sampler, SamplingResult
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationInfo, InstrumentationScope
from opentelemetry.trace import (
    Link,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)
from opentelemetry.util import types

from aiva.telemetry.attributes import clean_value

logger = logging.getLogger(__name__)

INTERNAL_METRICS = "OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED"
_PLAIN_VALUES = (bool, int, float)
_UNSET = Status(StatusCode.UNSET)
_INVALID = trace.INVALID_SPAN_CONTEXT
_NO_LIMIT = sys.maxsize
# The four trace flags a new span can have: sampled or not, random trace id or not.
_FLAGS = {
    (sampled, random): TraceFlags(
        (TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
        | (TraceFlags.RANDOM_TRACE_ID if random else 0)
    )
    for sampled in (False, True)
    for random in (False, True)
}


class ParentDecidingSampler(Sampler):
    """A sampler that can decide from a parent's span context already looked up (the lean
    tracer has it; `should_sample` looks it up again from the context: 0.5 µs)."""

    def should_sample(
        self,
        parent_context: otel_context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        return self.decide(parent, trace_id, attributes)

    @abc.abstractmethod
    def decide(
        self, parent: SpanContext, trace_id: int, attributes: types.Attributes
    ) -> SamplingResult:
        """should_sample's answer for the parent's span context (invalid: no parent)."""


class LeanTracerProvider(TracerProvider):
    """The SDK's TracerProvider, which also hands aiva lean tracers (`tracer_of`). Its own
    `get_tracer` stays the SDK's: instrumentations keep the SDK's spans."""

    def __init__(self, *, span_limits: SpanLimits, **kwargs: Any) -> None:
        super().__init__(span_limits=span_limits, **kwargs)
        self.lean_limits = span_limits


def tracer_of(
    provider: trace.TracerProvider,
    name: str,
    version: str | None = None,
    schema_url: str | None = None,
    attributes: types.Attributes = None,
) -> trace.Tracer:
    """A lean tracer of aiva's provider, else what the provider's `get_tracer` gives."""
    sdk_tracer = provider.get_tracer(name, version, schema_url, attributes)
    if (
        not isinstance(provider, LeanTracerProvider)
        or not isinstance(sdk_tracer, SdkTracer)  # the SDK disabled: a no-op tracer
        or not name
        or os.environ.get(INTERNAL_METRICS, "").strip().lower() == "true"
    ):
        return sdk_tracer
    # As the SDK's get_tracer names it (no version: "").
    scope = InstrumentationScope(name, version or "", schema_url, attributes)
    return LeanTracer(sdk_tracer, scope, provider.lean_limits)


class LeanTracer(trace.Tracer):
    """Starts lean spans with the SDK tracer's sampler, ids, resource and processors."""

    def __init__(self, sdk: SdkTracer, scope: InstrumentationScope, limits: SpanLimits) -> None:
        self._sdk = sdk
        self._shared = _Shared(sdk, scope, limits)

    def start_span(
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        if links:
            return self._sdk.start_span(
                name, context, kind, attributes, links, start_time,
                record_exception, set_status_on_exception,
            )  # fmt: skip
        shared = self._shared
        parent: SpanContext | None = trace.get_current_span(context).get_span_context()
        if parent is not None and not isinstance(parent, SpanContext):
            raise TypeError("parent_span_context must be a SpanContext or None.")
        if parent is None or not parent.is_valid:
            parent = None
            trace_id = shared.ids.generate_trace_id()
            random = shared.ids.is_trace_id_random()
        else:
            trace_id = parent.trace_id
            random = parent.trace_flags.random_trace_id
        if shared.decide is not None:
            sampling = shared.decide(parent or _INVALID, trace_id, attributes)
        else:
            sampling = shared.sampler.should_sample(context, trace_id, name, kind, attributes, ())
        span_context = SpanContext(
            trace_id,
            shared.ids.generate_span_id(),
            is_remote=False,
            trace_flags=_FLAGS[sampling.decision.is_sampled(), random],  # type: ignore[no-untyped-call]
            trace_state=sampling.trace_state,
        )
        if not sampling.decision.is_recording():  # type: ignore[no-untyped-call]
            return trace.NonRecordingSpan(span_context)
        span = LeanSpan(
            shared, name, span_context, parent, kind, sampling.attributes,
            record_exception, set_status_on_exception,
            start_time if start_time is not None else time_ns(),
        )  # fmt: skip
        # What the SDK's processors read of the span they are given is ReadableSpan's.
        shared.processor.on_start(span, parent_context=context)  # type: ignore[arg-type]
        return span

    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> _AsCurrentSpan:
        def start() -> trace.Span:
            return self.start_span(
                name, context, kind, attributes, links, start_time,
                record_exception, set_status_on_exception,
            )  # fmt: skip

        return _AsCurrentSpan(start, end_on_exit, record_exception, set_status_on_exception)


class _Shared:
    """What every span of one lean tracer shares."""

    __slots__ = (
        "decide", "ids", "info", "limits", "max_count", "max_length", "processor", "sampler",
        "scope", "sdk",
    )  # fmt: skip

    def __init__(self, sdk: SdkTracer, scope: InstrumentationScope, limits: SpanLimits) -> None:
        self.sampler = sdk.sampler
        # A subclass that overrides should_sample is asked through it.
        self.decide = (
            sdk.sampler.decide
            if isinstance(sdk.sampler, ParentDecidingSampler)
            and type(sdk.sampler).should_sample is ParentDecidingSampler.should_sample
            else None
        )
        self.ids = sdk.id_generator
        self.sdk = sdk
        self.processor: SpanProcessor = sdk.span_processor
        self.info: InstrumentationInfo = sdk.instrumentation_info
        self.scope = scope
        self.limits = limits
        self.max_count = limits.max_span_attributes
        self.max_length = _NO_LIMIT if (n := limits.max_span_attribute_length) is None else n


class LeanSpan(trace.Span, ReadableSpan):
    """A recording span: the API's Span, readable as the SDK's ReadableSpan (what
    processors receive in `on_start` and, once it has ended, in `on_end`)."""

    def __init__(
        self,
        shared: _Shared,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: Mapping[str, types.AnyValue] | None,
        record_exception: bool,
        set_status_on_exception: bool,
        start_time: int,
    ) -> None:
        # ReadableSpan.__init__ is not called: every property it backs is overridden.
        self._shared = shared
        self._lean_name = name
        self._lean_context = context
        self._lean_parent = parent
        self._lean_kind = kind
        self._record_exception = record_exception
        self._set_status_on_exception = set_status_on_exception
        self._lean_start = start_time
        self._lean_end: int | None = None
        self._lean_status = _UNSET
        self._lock = threading.Lock()
        self._lean_resource = shared.sdk.resource  # the SDK tracer's: a fork updates it
        self._values: dict[str, Any] = {}
        self._dropped = 0
        if attributes:
            if (shared.max_count is None or len(attributes) <= shared.max_count) and _all_plain(
                attributes, shared.max_length
            ):
                self._values.update(attributes)
            else:
                self._set_all_locked(attributes)
        self._lean_events: BoundedList[Event] | None = None
        self._lean_links: BoundedList[Link] | None = None

    def __repr__(self) -> str:
        return f'{type(self).__name__}(name="{self._lean_name}", context={self._lean_context})'

    # The API's Span.

    def get_span_context(self) -> SpanContext:
        return self._lean_context

    def is_recording(self) -> bool:
        return self._lean_end is None

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        with self._lock:
            if self._lean_end is not None:
                logger.warning("Setting attribute on ended span.")
                return
            self._set_locked(key, value)

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        with self._lock:
            if self._lean_end is not None:
                logger.warning("Setting attribute on ended span.")
                return
            self._set_all_locked(attributes)

    def add_event(
        self, name: str, attributes: types.Attributes = None, timestamp: int | None = None
    ) -> None:
        limits = self._shared.limits
        event = Event(
            name,
            BoundedAttributes(
                limits.max_event_attributes,
                attributes,
                immutable=True,
                max_value_len=limits.max_attribute_length,
            ),
            timestamp,
        )
        self._unless_ended("_add_event", self._append_event, event)

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        if not _valid_link(context, attributes):
            return
        limits = self._shared.limits
        link = Link(
            context,
            BoundedAttributes(
                limits.max_link_attributes,
                attributes,
                immutable=True,
                max_value_len=limits.max_attribute_length,
            ),
        )
        self._unless_ended("_add_link", self._append_link, link)

    def update_name(self, name: str) -> None:
        self._unless_ended("update_name", self._rename, name)

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        self._unless_ended("set_status", self._change_status, status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        kind = type(exception)
        module, qualname = kind.__module__, kind.__qualname__
        recorded: dict[str, types.AnyValue] = {
            "exception.type": f"{module}.{qualname}"
            if module and module != "builtins"
            else qualname,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        if attributes:
            recorded.update(attributes)
        self.add_event("exception", recorded, timestamp)

    def end(self, end_time: int | None = None) -> None:
        with self._lock:
            if self._lean_end is not None:
                logger.warning("Calling end() on an ended span.")
                return
            self._lean_end = end_time if end_time is not None else time_ns()
        # The span itself, read-only from now on: every ReadableSpan member is overridden
        # above, and nothing can change an ended span (the SDK builds a ReadableSpan here,
        # 0.7 µs a span more).
        self._shared.processor.on_end(self)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        if exc_val is not None and self.is_recording():
            if self._record_exception:
                self.record_exception(exception=exc_val, escaped=True)
            if self._set_status_on_exception:
                self.set_status(Status(StatusCode.ERROR, f"{type(exc_val).__name__}: {exc_val}"))
        super().__exit__(exc_type, exc_val, exc_tb)

    # The SDK's ReadableSpan, read live (a processor's on_start sees the span so far).

    @property
    def name(self) -> str:
        return self._lean_name

    @property
    def context(self) -> SpanContext:
        return self._lean_context

    @property
    def kind(self) -> SpanKind:
        return self._lean_kind

    @property
    def parent(self) -> SpanContext | None:
        return self._lean_parent

    @property
    def start_time(self) -> int | None:
        return self._lean_start

    @property
    def end_time(self) -> int | None:
        return self._lean_end

    @property
    def status(self) -> Status:
        return self._lean_status

    @property
    def attributes(self) -> types.Attributes:
        return MappingProxyType(self._values)  # live, as the SDK span's (read-only)

    @property
    def events(self) -> Sequence[Event]:
        return tuple(self._lean_events) if self._lean_events else ()

    @property
    def links(self) -> Sequence[Link]:
        return tuple(self._lean_links) if self._lean_links else ()

    @property
    def dropped_attributes(self) -> int:
        return self._dropped

    @property
    def dropped_events(self) -> int:
        return self._lean_events.dropped if self._lean_events is not None else 0

    @property
    def dropped_links(self) -> int:
        return self._lean_links.dropped if self._lean_links is not None else 0

    @property
    def resource(self) -> Resource:
        return self._lean_resource

    @property
    def instrumentation_info(self) -> InstrumentationInfo | None:
        return self._shared.info

    @property
    def instrumentation_scope(self) -> InstrumentationScope | None:
        return self._shared.scope

    def to_json(self, indent: int | None = 4) -> str:
        return str(self._readable().to_json(indent))

    # Inside.

    # The attributes, as the SDK span's BoundedAttributes keeps them (its __setitem__ and
    # _set_items): the same cleaning (aiva.telemetry.attributes.clean_value, with the
    # span's length limit), warnings, count limit (the oldest dropped) and dropped count;
    # plain values skip the cleaning, which would keep them as they are.

    def _set_locked(self, key: str, value: types.AnyValue) -> None:
        shared = self._shared
        if shared.max_count == 0:
            self._dropped += 1
            return
        if type(key) is not str or not key:
            logger.warning(
                "invalid key `%s`. must be non-empty string. Dropping key from attributes.", key
            )
            self._dropped += 1
            return
        kind = type(value)
        if not (kind in _PLAIN_VALUES or (kind is str and len(value) <= shared.max_length)):  # type: ignore[arg-type]
            value = clean_value(value, shared.limits.max_span_attribute_length)
        self._insert(key, value)

    def _set_all_locked(self, attributes: Mapping[str, types.AnyValue]) -> None:
        shared = self._shared
        if shared.max_count == 0:
            self._dropped += len(attributes)
            return
        if _all_plain(attributes, shared.max_length):
            cleaned = attributes
        else:  # cleaned as one mapping: a key that is not a str is kept as its str
            cleaned = clean_value(attributes, shared.limits.max_span_attribute_length)
            self._dropped += len(attributes) - len(cleaned)
        for key, value in cleaned.items():
            self._insert(key, value)

    def _insert(self, key: str, value: types.AnyValue) -> None:
        values = self._values
        if key in values:
            del values[key]  # re-set: moved to the end
        elif self._shared.max_count is not None and len(values) >= self._shared.max_count:
            logger.warning(
                "Attributes dict is full. Dropping the oldest key-value pair from attributes "
                "to make space for the new key-value pair."
            )
            del values[next(iter(values))]
            self._dropped += 1
        values[key] = value

    def _readable(self) -> ReadableSpan:
        """A ReadableSpan of the SDK's own class, as `Span._readable_span()` builds it."""
        shared = self._shared
        return ReadableSpan(
            self._lean_name, self._lean_context, self._lean_parent, self._lean_resource,
            self._values, self._lean_events if self._lean_events is not None else (),
            self._lean_links if self._lean_links is not None else (),
            self._lean_kind, shared.info, self._lean_status, self._lean_start,
            self._lean_end, shared.scope,
        )  # fmt: skip

    def _unless_ended(self, what: str, change: Callable[..., None], *args: Any) -> bool:
        with self._lock:
            ended = self._lean_end is not None
            if not ended:
                change(*args)
        if ended:
            logger.warning("Tried calling %s on an ended span.", what)
        return not ended

    def _append_event(self, event: Event) -> None:
        if self._lean_events is None:
            self._lean_events = BoundedList(self._shared.limits.max_events)
        self._lean_events.append(event)

    def _append_link(self, link: Link) -> None:
        if self._lean_links is None:
            self._lean_links = BoundedList(self._shared.limits.max_links)
        self._lean_links.append(link)

    def _rename(self, name: str) -> None:
        self._lean_name = name

    def _change_status(self, status: Status | StatusCode, description: str | None) -> None:
        # As the SDK: a status of OK is final, and UNSET is never set.
        if self._lean_status.status_code is StatusCode.OK:
            return
        if isinstance(status, Status):
            if status.status_code is StatusCode.UNSET:
                return
            if description is not None:
                logger.warning(
                    "Description %s ignored. Use either `Status` or `(StatusCode, Description)`",
                    description,
                )
            self._lean_status = status
        elif isinstance(status, StatusCode) and status is not StatusCode.UNSET:
            self._lean_status = Status(status, description)


def _all_plain(attributes: Mapping[str, types.AnyValue], max_length: int) -> bool:
    """Whether BoundedAttributes would keep every attribute as it is (the count aside):
    non-empty str keys, bool, int and float values, str values within the length limit."""
    for key, value in attributes.items():
        kind = type(value)
        if type(key) is not str or not key:
            return False
        if kind is str:
            if len(value) > max_length:  # type: ignore[arg-type]
                return False
        elif kind not in _PLAIN_VALUES:
            return False
    return True


def _valid_link(context: SpanContext, attributes: types.Attributes) -> bool:
    """The SDK's rule: a link is kept when its context is valid, or it carries attributes
    or a trace state."""
    return bool(context and (context.is_valid or (attributes or context.trace_state)))


class _AsCurrentSpan:
    """`start_as_current_span`'s result, as the SDK's: a context manager (a fresh span
    each time it is entered) and a decorator for plain and async functions."""

    def __init__(
        self,
        start: Callable[[], trace.Span],
        end_on_exit: bool,
        record_exception: bool,
        set_status_on_exception: bool,
    ) -> None:
        self._start = start
        self._options = (end_on_exit, record_exception, set_status_on_exception)
        self._entered: Any = None

    def __enter__(self) -> trace.Span:
        # Once, as the SDK's (a generator's) context manager: each `with` calls
        # start_as_current_span afresh.
        if self._entered is not None:
            raise RuntimeError("start_as_current_span's result was already entered")
        self._entered = self._current()
        span: trace.Span = self._entered.__enter__()
        return span

    def __exit__(self, *exc_info: Any) -> bool | None:
        suppressed: bool | None = self._entered.__exit__(*exc_info)
        return suppressed

    def __call__(self, func: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                with self._current():
                    return await func(*args, **kwargs)

            return run_async

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            with self._current():
                return func(*args, **kwargs)

        return run

    @contextmanager
    def _current(self) -> Iterator[trace.Span]:
        end_on_exit, record_exception, set_status = self._options
        with trace.use_span(
            self._start(),
            end_on_exit=end_on_exit,
            record_exception=record_exception,
            set_status_on_exception=set_status,
        ) as span:
            yield span
