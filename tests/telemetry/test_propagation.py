"""FormatsPropagator.inject_span writes what the API's generic inject writes, byte for byte.

The direct W3C path (traceparent and tracestate formatted by aiva) is compared with the
propagators' own `inject` for generated span contexts, trace states and baggage, and for
every combination of formats; the httpx tests check the header end to end.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from aiva.telemetry.propagation import FormatsPropagator, build_propagator

FORMATS = [
    ("tracecontext", "baggage"),
    ("baggage", "tracecontext"),
    ("tracecontext",),
    ("baggage",),
    (),
]
_KEY = st.from_regex(r"[a-z][a-z0-9_\-*/]{0,20}", fullmatch=True)
_VALUE = st.from_regex(r"[!-+\--<>-~]{1,30}", fullmatch=True)  # no ',' nor '='
trace_states = st.lists(st.tuples(_KEY, _VALUE), max_size=5, unique_by=lambda kv: kv[0]).map(
    TraceState
)
span_contexts = st.builds(
    SpanContext,
    trace_id=st.integers(0, 2**128 - 1),
    span_id=st.integers(0, 2**64 - 1),
    is_remote=st.booleans(),
    trace_flags=st.integers(0, 255).map(TraceFlags),
    trace_state=trace_states,
)
baggages = st.dictionaries(
    st.from_regex(r"[a-zA-Z][a-zA-Z0-9]{0,10}", fullmatch=True),
    st.from_regex(r"[a-zA-Z0-9 %,;=]{0,20}", fullmatch=True),
    max_size=3,
)


def generic(propagator: FormatsPropagator, span: trace.Span, parent: otel_context.Context) -> dict:
    carrier: dict[str, str] = {}
    propagator.inject(carrier, context=trace.set_span_in_context(span, parent))
    return carrier


def with_baggage(entries: dict[str, str]) -> otel_context.Context:
    context = otel_context.Context()
    for name, value in entries.items():
        context = baggage.set_baggage(name, value, context)
    return context


@pytest.mark.parametrize("names", FORMATS, ids="+".join)
@given(span_context=span_contexts, entries=baggages)
def test_inject_span_writes_what_inject_writes(
    names: tuple[str, ...], span_context: SpanContext, entries: dict[str, str]
) -> None:
    propagator = build_propagator(names)
    span = NonRecordingSpan(span_context)
    parent = with_baggage(entries)
    carrier: dict[str, str] = {}
    propagator.inject_span(span, carrier, parent)
    assert carrier == generic(propagator, span, parent)
    assert list(carrier) == list(generic(propagator, span, parent))  # the same order


@given(span_context=span_contexts, entries=baggages)
def test_the_current_context_is_the_default_parent(
    span_context: SpanContext, entries: dict[str, str]
) -> None:
    propagator = build_propagator(("tracecontext", "baggage"))
    span = NonRecordingSpan(span_context)
    token = otel_context.attach(with_baggage(entries))
    try:
        carrier: dict[str, str] = {}
        propagator.inject_span(span, carrier)
        assert carrier == generic(propagator, span, otel_context.get_current())
    finally:
        otel_context.detach(token)


def test_the_direct_path_formats_a_known_traceparent() -> None:
    """A fixed example, so that a wrong format in both paths cannot pass unseen."""
    context = SpanContext(
        0x4BF92F3577B34DA6A3CE929D0E0E4736,
        0x00F067AA0BA902B7,
        is_remote=False,
        trace_flags=TraceFlags(1),
        trace_state=TraceState([("congo", "t61rcWkgMzE")]),
    )
    headers = httpx.Headers()
    build_propagator(("tracecontext", "baggage")).inject_span(NonRecordingSpan(context), headers)
    assert headers["traceparent"] == "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert headers["tracestate"] == "congo=t61rcWkgMzE"
    assert "baggage" not in headers


def test_an_invalid_span_writes_nothing() -> None:
    carrier: dict[str, str] = {}
    build_propagator(("tracecontext",)).inject_span(trace.INVALID_SPAN, carrier)
    assert carrier == {}


class _Refusing(Exception):
    """Raised by a propagator's inject that the direct path must not call."""


def _refuse(*args: object, **kwargs: object) -> None:
    raise _Refusing


@pytest.mark.parametrize("names", [("tracecontext",), ("tracecontext", "baggage")], ids="+".join)
def test_w3c_formats_without_baggage_take_the_direct_path(
    names: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The saving is real only if the generic inject is not called: refused here."""
    propagator = build_propagator(names)
    monkeypatch.setattr(propagator, "inject", _refuse)
    carrier: dict[str, str] = {}
    context = SpanContext(1, 2, is_remote=False, trace_flags=TraceFlags(1))
    propagator.inject_span(NonRecordingSpan(context), carrier, otel_context.Context())
    assert carrier == {"traceparent": f"00-{1:032x}-{2:016x}-01"}


@pytest.mark.parametrize(
    ("names", "entries"),
    [
        (("tracecontext", "baggage"), {"tenant": "t-7"}),  # baggage to write
        (("baggage",), {}),  # no trace context format
        ((), {}),
    ],
    ids=["baggage-present", "baggage-only", "none"],
)
def test_every_other_case_asks_the_propagators(
    names: tuple[str, ...], entries: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    propagator = build_propagator(names)
    monkeypatch.setattr(propagator, "inject", _refuse)
    context = SpanContext(1, 2, is_remote=False, trace_flags=TraceFlags(1))
    with pytest.raises(_Refusing):
        propagator.inject_span(NonRecordingSpan(context), {}, with_baggage(entries))


def test_a_propagator_not_of_the_w3c_classes_keeps_its_own_inject() -> None:
    """Decided from the propagators, not their names: a subclass is asked as it is."""

    class Tagged(TraceContextTextMapPropagator):
        def inject(self, carrier: Any, context: Any = None, setter: Any = None) -> None:
            carrier["traceparent"] = "tagged"

    carrier: dict[str, str] = {}
    context = SpanContext(1, 2, is_remote=False, trace_flags=TraceFlags(1))
    FormatsPropagator([Tagged()]).inject_span(NonRecordingSpan(context), carrier)
    assert carrier == {"traceparent": "tagged"}
