"""Context propagation: the formats named by `telemetry.propagators` (OTEL_PROPAGATORS)."""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import entry_points

from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import TextMapPropagator


def build_propagator(names: Sequence[str]) -> TextMapPropagator:
    """The named propagators in order, found as the API finds them (the
    `opentelemetry_propagator` entry points; settings validation has checked the names)."""
    propagators = []
    for name in names:
        (entry,) = entry_points(group="opentelemetry_propagator", name=name)
        propagators.append(entry.load()())
    return CompositePropagator(propagators)


def header_names(propagator: TextMapPropagator) -> frozenset[bytes]:
    """The request headers the propagator reads, as ASGI spells them (lower-case bytes)."""
    return frozenset(field.lower().encode("latin-1") for field in propagator.fields)
