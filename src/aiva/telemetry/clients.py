"""Client spans and W3C propagation through the contrib instrumentors (httpx, asyncpg, redis)."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Span, SpanProcessor
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider

from aiva.fast import FastLayer, probe
from aiva.fast.semconv import stable_conventions
from aiva.settings.masking import mask_text
from aiva.settings.model import ClientLibrary
from aiva.telemetry.histogram import ProducedHistogram

logger = logging.getLogger(__name__)


class Instrumentor(Protocol):
    """What aiva uses of a contrib BaseInstrumentor (its module hides its types from mypy)."""

    @property
    def is_instrumented_by_opentelemetry(self) -> bool: ...

    def instrument(
        self,
        *,
        tracer_provider: trace.TracerProvider,
        meter_provider: metrics.MeterProvider,
        **options: Any,
    ) -> Any: ...

    def uninstrument(self, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class Library:
    """One instrumentable client library: what to probe, how to instrument, what it emits."""

    module: str  # importable when the library is installed (what `auto` looks for)
    instrumentor: Callable[[], Instrumentor]  # the contrib one (a per-process singleton)
    scope: str  # the instrumentation scope its spans carry
    emits_metrics: bool  # client metrics at this release (worth instrumenting without traces)
    masked: tuple[str, ...] = ()  # span attributes that can carry a credential
    # Takes aiva's own http.client.request.duration (a ProducedHistogram) when there is one.
    takes_client_duration: bool = False


def _httpx() -> Instrumentor:
    # aiva's own: the contrib instrumentor cost 3.6x aiva's server span (httpx_client.py).
    from aiva.telemetry.httpx_client import HttpxInstrumentation

    return HttpxInstrumentation()


def _asyncpg() -> Instrumentor:
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    return AsyncPGInstrumentor()  # type: ignore[no-untyped-call]


def _redis() -> Instrumentor:
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    return RedisInstrumentor()


# At opentelemetry-instrumentation 0.66b1. httpx is aiva's own wrapper (it redacts a
# URL's user and password and masks its query as it makes the span). asyncpg
# puts the statement text as written (bound parameters are not captured), so a literal
# password in it would be exported. redis replaces every argument by `?` (`AUTH ?`).
CLIENT_LIBRARIES: Mapping[ClientLibrary, Library] = {
    "httpx": Library(
        "httpx",
        _httpx,
        "aiva.httpx",
        emits_metrics=True,  # http.client.request.duration
        takes_client_duration=True,
        # url.full is masked as the span is made (aiva.telemetry.httpx_client).
    ),
    "asyncpg": Library(
        "asyncpg",
        _asyncpg,
        "opentelemetry.instrumentation.asyncpg",
        emits_metrics=False,
        masked=("db.query.text", "db.statement"),
    ),
    "redis": Library("redis", _redis, "opentelemetry.instrumentation.redis", emits_metrics=False),
}


def client_libraries(
    setting: Literal["auto"] | Sequence[ClientLibrary],
) -> tuple[ClientLibrary, ...]:
    """The names `telemetry.instrumentations` asks for: `auto` is every installed one."""
    if setting == "auto":
        return tuple(name for name, lib in CLIENT_LIBRARIES.items() if _installed(lib.module))
    return tuple(dict.fromkeys(setting))


@dataclass
class ClientInstrumentation:
    """What one app switched on; `uninstrument` switches exactly that off, once."""

    names: tuple[ClientLibrary, ...] = ()
    _instrumentors: list[Instrumentor] = field(default_factory=list, repr=False)

    def uninstrument(self) -> list[Exception]:
        """Remove this app's patches; errors gathered, not raised (for Telemetry.shutdown)."""
        errors: list[Exception] = []
        while self._instrumentors:
            instrumentor = self._instrumentors.pop()
            try:
                if instrumentor.is_instrumented_by_opentelemetry:
                    instrumentor.uninstrument()
            except Exception as error:  # noqa: BLE001 - gathered and logged by the caller
                errors.append(error)
        return errors


def instrument_clients(
    names: Sequence[ClientLibrary],
    tracer_provider: trace.TracerProvider,
    meter_provider: metrics.MeterProvider,
    client_duration: ProducedHistogram | None = None,
    fast: FastLayer | None = None,
) -> ClientInstrumentation:
    """Switch on the contrib instrumentors for `names`, with aiva's providers passed explicitly.

    They patch the libraries' classes for the whole process. One that is already on
    (another aiva app in this process, `opentelemetry-instrument`) is left as it is, with
    the providers it was given, and is not switched off by this app's `uninstrument`.
    """
    tracing = not isinstance(tracer_provider, trace.NoOpTracerProvider)
    metering = not isinstance(meter_provider, metrics.NoOpMeterProvider)
    done = ClientInstrumentation()
    wanted = [n for n in names if tracing or (metering and CLIENT_LIBRARIES[n].emits_metrics)]
    if not wanted:
        return done
    with stable_conventions(probe() if fast is None else fast):
        for name in wanted:
            instrumentor = _start(name, tracer_provider, meter_provider, client_duration)
            if instrumentor is not None:
                done.names += (name,)
                done._instrumentors.append(instrumentor)
    if done.names:
        logger.info("client libraries instrumented: %s", ", ".join(done.names))
        masked = any(CLIENT_LIBRARIES[n].masked for n in done.names)
        # Only when needed: a span processor is called for every span, server ones too.
        if masked and isinstance(tracer_provider, SdkTracerProvider):
            # The processor stays with the provider, which is shut down with the app.
            tracer_provider.add_span_processor(_CredentialMasker(done.names))
    return done


def _start(
    name: ClientLibrary,
    tracer_provider: trace.TracerProvider,
    meter_provider: metrics.MeterProvider,
    client_duration: ProducedHistogram | None,
) -> Instrumentor | None:
    library = CLIENT_LIBRARIES[name]
    if not _installed(library.module):
        logger.warning("telemetry.instrumentations: %s is not installed; not instrumented", name)
        return None
    instrumentor = library.instrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        logger.info(
            "%s is already instrumented in this process (another app or opentelemetry-instrument):"
            " left as it is, its client spans keep that instrumentation's providers",
            name,
        )
        return None
    options = {"client_duration": client_duration} if library.takes_client_duration else {}
    instrumentor.instrument(
        tracer_provider=tracer_provider, meter_provider=meter_provider, **options
    )
    # instrument() logs and returns without patching on a dependency conflict.
    return instrumentor if instrumentor.is_instrumented_by_opentelemetry else None


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


class _CredentialMasker(SpanProcessor):
    """Masks credentials in the URLs and query texts of client spans as they start.

    The instrumentors set these attributes when they start the span, so `on_start` sees
    them while the span can still be changed (`on_end` gets a read-only span).
    """

    def __init__(self, names: Sequence[ClientLibrary]) -> None:
        self._masked = {
            CLIENT_LIBRARIES[n].scope: CLIENT_LIBRARIES[n].masked
            for n in names
            if CLIENT_LIBRARIES[n].masked
        }

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        scope = span.instrumentation_scope
        keys = self._masked.get(scope.name) if scope is not None else None
        if not keys:
            return
        attributes = span.attributes or {}
        for key in keys:
            value = attributes.get(key)
            if isinstance(value, str) and (masked := mask_text(value)) != value:
                span.set_attribute(key, masked)
