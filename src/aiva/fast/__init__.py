"""The fast layer: every use aiva makes of a private attribute or module of a third-party
package, in this package and nowhere else.

aiva's cheap paths reach into the OpenTelemetry SDK, its Prometheus exporter and uvicorn
where those offer no public way (the reasons, with the figures, are in each module).
Exact version pins were the only guard: after an upgrade, drop counts could silently stay
0 or every log record fail to export. Here each hook has a self-test that runs once a
process, at start-up, on a private object of the third-party package (no provider or
server of the service's): it checks that the hook exists *and* behaves. A hook that
fails is not used; the plain pipeline, public APIs only, takes its place, and one
WARNING names every hook missing and what the plain pipeline does instead.

`telemetry.fast_path: off` turns the whole layer off (no self-test, no warning): the
plain pipeline is complete and correct on its own (the test suite runs both ways).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

logger = logging.getLogger(__name__)

FAST_PATH_MODES = ("auto", "off")
# Set by `aiva serve --workers N` in the parent (aiva.server): the hooks its self-tests
# passed, comma-separated; a worker takes them as they are (same packages, one WARNING).
INHERITED_LAYER_VARIABLE = "_AIVA_FAST_LAYER"


@dataclass(frozen=True)
class Hook:
    """One private place used: where its code and self-test live, and what the plain
    pipeline does without it."""

    name: str
    module: str  # in aiva.fast
    check: str  # the module's self-test: None when the hook works, else what is wrong
    without: str


HOOKS: tuple[Hook, ...] = (
    Hook(
        "otlp_grpc_encoder",
        "otlp_encoding",
        "encoder_works",
        "the SDK's own OTLP/gRPC encoder for spans and log records",
    ),
    Hook(
        "batch_queue",
        "batch",
        "batch_queue_works",
        "log records go through the SDK Logger's emit",
    ),
    Hook(
        "batch_drop_counts",
        "batch",
        "drop_counts_work",
        "spans and log records dropped by a full batch queue are not counted",
    ),
    Hook(
        "export_outcomes",
        "export_outcomes",
        "outcomes_work",
        "a batch the collector refuses as too large is lost whole, not sent in halves",
    ),
    Hook(
        "metric_producers",
        "producers",
        "producers_work",
        "every metric goes through the SDK's instruments",
    ),
    Hook(
        "prometheus_translation",
        "prometheus",
        "translation_works",
        "/metrics is the SDK Prometheus reader's own, without exemplars and, with "
        "several workers, the answering worker's series only",
    ),
    Hook(
        "semconv_mode",
        "semconv",
        "semconv_mode_works",
        "client spans take the stable conventions through OTEL_SEMCONV_STABILITY_OPT_IN, "
        "set to http,database in the process's environment when unset",
    ),
    Hook(
        "fastapi_route_state",
        "fastapi",
        "route_state_works",
        "a FastAPI route of a router included with a prefix is labelled by the template "
        "Starlette's scope gives it, without the prefix",
    ),
    Hook(
        "fastapi_telemetry_config",
        "fastapi",
        "telemetry_config_works",
        "FastAPI's own telemetry is left as configured: pass FastAPI(telemetry="
        "{'tracing': False, 'metrics': False, 'logs': False}) to an instrumented FastAPI "
        "app (and to one with aiva apps mounted below), or its requests get FastAPI's "
        "server span besides aiva's",
    ),
    Hook(
        "uvicorn_protocol",
        "uvicorn_protocol",
        "protocol_works",
        "uvicorn's h11 protocol: request heads limited in size only (400, not 431)",
    ),
    Hook(
        "uvicorn_supervisor",
        "uvicorn_workers",
        "supervisor_works",
        "with --workers, uvicorn's own supervisor and server in each worker: readiness "
        "503 only when its lifespan ends, no frozen start-up heap, exit code -15",
    ),
    Hook(
        "uvicorn_lifespan_state",
        "uvicorn_server",
        "lifespan_state_works",
        "readiness turns 503 when uvicorn starts the lifespan's shutdown, after the "
        "requests in flight, not at the signal",
    ),
)
HOOK_NAMES = tuple(hook.name for hook in HOOKS)


@dataclass(frozen=True)
class FastLayer:
    """The hooks this process uses: each passed its self-test."""

    usable: frozenset[str] = frozenset()

    def __contains__(self, hook: object) -> bool:
        return hook in self.usable


PLAIN = FastLayer()


def fast_layer(mode: str) -> FastLayer:
    """The hooks to use under `telemetry.fast_path` (`auto`: each one that works here)."""
    if mode == "off":
        return PLAIN
    return probe()


@functools.cache
def probe() -> FastLayer:
    """Every hook's self-test, once a process (the installed packages do not change while
    it runs), with one WARNING naming those that failed; in a worker of `aiva serve
    --workers N`, the parent's result."""
    inherited = os.environ.get(INHERITED_LAYER_VARIABLE)
    if inherited is not None:
        known = {hook.name for hook in HOOKS}
        return FastLayer(frozenset(name for name in inherited.split(",") if name in known))
    with _sdk_defaults():
        failed = {hook.name: reason for hook, reason in _checked(HOOKS) if reason is not None}
    if failed:
        logger.warning(
            "fast layer: %s not as aiva expects with the installed packages; "
            "the plain pipeline instead: %s",
            ", ".join(f"{name} ({reason})" for name, reason in failed.items()),
            "; ".join(hook.without for hook in HOOKS if hook.name in failed),
        )
    return FastLayer(frozenset(hook.name for hook in HOOKS if hook.name not in failed))


@contextlib.contextmanager
def _sdk_defaults() -> Iterator[None]:
    """The self-tests' private providers, processors and exporters as the SDK builds them
    by default: the OTEL_* variables a service sets for its own pipeline (aiva's settings
    hold them already) would change them (OTEL_SDK_DISABLED disables them, OTEL_BSP_*
    makes a queue smaller than a batch, OTEL_TRACES_SAMPLER drops their spans). Taken out
    of the environment while they run, once, at start-up, and put back whatever happens.
    OTEL_SEMCONV_STABILITY_OPT_IN stays: opentelemetry-instrumentation reads it once a
    process, and the semconv self-test may be what reads it first."""
    saved = {
        key: value
        for key, value in os.environ.items()
        if key.startswith("OTEL_") and not key.startswith("OTEL_SEMCONV_")
    }
    for key in saved:
        del os.environ[key]
    try:
        yield
    finally:
        os.environ.update(saved)


def _checked(hooks: Iterable[Hook]) -> Iterable[tuple[Hook, str | None]]:
    for hook in hooks:
        try:
            module = importlib.import_module(f"{__name__}.{hook.module}")
            reason = getattr(module, hook.check)()
        except Exception as error:  # noqa: BLE001 - a hook that breaks is a missing hook, named
            reason = f"{type(error).__name__}: {error}"[:200]
        yield hook, reason
