"""The contrib instrumentors' semantic conventions: the stable ones, asked for aiva's own
instrumentors only.

At 0.66b1 the contrib instrumentors emit the old conventions (`http.url`,
`http.client.duration` in ms, `db.statement`, `net.peer.name`) unless the process sets
OTEL_SEMCONV_STABILITY_OPT_IN, read once into a private class of
opentelemetry-instrumentation (`_semconv._OpenTelemetrySemanticConventionStability`);
each instrumentor copies the mode when it is instrumented. aiva's contract is the stable
conventions without any opt-in variable: with the fast layer's `semconv_mode` hook the
mode is set to stable for aiva's calls only and put back after, so other
instrumentations in the process keep theirs, nothing leaks into os.environ or child
processes, and a mode the user chose (`http/dup`, `database/dup`) is kept.

The plain path uses the public switch instead: OTEL_SEMCONV_STABILITY_OPT_IN, set to
`http,database` in this process's environment when the user has not set it (so child
processes inherit it), which takes effect if nothing in the process read the variable
before aiva's instrumentors.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aiva.fast import FastLayer

OPT_IN_VARIABLE = "OTEL_SEMCONV_STABILITY_OPT_IN"


@contextmanager
def stable_conventions(fast: FastLayer) -> Iterator[None]:
    """The stable HTTP and database conventions for the instrumentors set up in the block."""
    if "semconv_mode" not in fast:
        os.environ.setdefault(OPT_IN_VARIABLE, "http,database")
        yield
        return
    hook = _stability_hook()
    if hook is None:
        yield
        return
    stability, saved = hook
    try:
        yield
    finally:
        stability._OTEL_SEMCONV_STABILITY_SIGNAL_MAPPING = saved


def _stability_hook() -> tuple[Any, dict[Any, Any]] | None:
    """Switch the stability mapping to stable; (its class, the saved mapping), or None
    where it cannot be (the self-test, semconv_mode_works, names why: the layer does not
    use the hook then)."""
    try:
        from opentelemetry.instrumentation import _semconv

        stability: Any = _semconv._OpenTelemetrySemanticConventionStability
        signal, mode = _semconv._OpenTelemetryStabilitySignalType, _semconv._StabilityMode
        stability._initialize()
        saved = stability._OTEL_SEMCONV_STABILITY_SIGNAL_MAPPING
        stable = {signal.HTTP: mode.HTTP, signal.DATABASE: mode.DATABASE}
        chosen = {s: m for s, m in stable.items() if saved.get(s, mode.DEFAULT) is mode.DEFAULT}
        read = stability._get_opentelemetry_stability_opt_in_mode
    except (ImportError, AttributeError, TypeError):
        return None
    stability._OTEL_SEMCONV_STABILITY_SIGNAL_MAPPING = {**saved, **chosen}
    if not all(read(s) is m for s, m in chosen.items()):
        stability._OTEL_SEMCONV_STABILITY_SIGNAL_MAPPING = saved
        return None
    return stability, saved


def semconv_mode_works() -> str | None:
    """Inside the block the instrumentors read the stable modes; after it, the process's
    own modes again."""
    from opentelemetry.instrumentation import _semconv

    if not hasattr(_semconv, "_OpenTelemetrySemanticConventionStability"):
        return "opentelemetry-instrumentation has no _OpenTelemetrySemanticConventionStability"
    signals = (_semconv._OpenTelemetryStabilitySignalType.HTTP,)
    before = _semconv._get_semconv_opt_in_modes(signals)
    stability = _semconv._OpenTelemetrySemanticConventionStability
    with stable_conventions(FastLayer(frozenset({"semconv_mode"}))):
        mode = stability._get_opentelemetry_stability_opt_in_mode(signals[0])
    if mode not in (_semconv._StabilityMode.HTTP, _semconv._StabilityMode.HTTP_DUP):
        return f"the stable HTTP mode did not take ({mode})"
    if _semconv._get_semconv_opt_in_modes(signals) != before:
        return "the process's own mode was not put back"
    return None
