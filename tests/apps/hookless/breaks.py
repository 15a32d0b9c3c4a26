"""Taking one of the fast layer's private hooks away, as an upgrade of the third-party
package could: the package itself keeps working; only aiva loses the hook. Used by
sitecustomize.py here (a service started with this folder on PYTHONPATH) and in-process
by tests/fast/test_fast_layer.py (with monkeypatch's setattr, undone after the test).

Two ways, by what the hook is:
- `wrap`: a method aiva's self-test reads the code of is replaced by a wrapper calling the
  original: the package behaves the same, its code no longer names what aiva relies on;
- `hide`: an attribute (of instances of a class, or of a module) aiva's code reads or
  writes is invisible to code in aiva's modules, and still there for the package's own.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

Setter = Callable[[Any, str, Any], None]


def _from_aiva(depth: int) -> bool:
    return str(sys._getframe(depth).f_globals.get("__name__", "")).startswith("aiva.")


def wrap(module: str, owner: str, name: str, put: Setter = setattr) -> None:
    cls = getattr(importlib.import_module(module), owner)
    original = getattr(cls, name)
    if inspect.iscoroutinefunction(original):

        async def wrapper_async(self: Any, *args: Any, **kwargs: Any) -> Any:
            return await original(self, *args, **kwargs)

        put(cls, name, wrapper_async)
    else:

        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            return original(self, *args, **kwargs)

        put(cls, name, wrapper)


def hide(module: str, owner: str | None, name: str, put: Setter = setattr) -> None:
    found = importlib.import_module(module)
    if owner is None:
        _hide_in_module(found, name, put)
        return
    cls = getattr(found, owner)
    get, store = cls.__getattribute__, cls.__setattr__

    def __getattribute__(self: Any, attribute: str) -> Any:
        if attribute == name and _from_aiva(2):
            raise AttributeError(attribute)
        return get(self, attribute)

    def __setattr__(self: Any, attribute: str, value: Any) -> None:
        if attribute == name and _from_aiva(2):
            raise AttributeError(attribute)
        store(self, attribute, value)

    put(cls, "__getattribute__", __getattribute__)
    put(cls, "__setattr__", __setattr__)


def _hide_in_module(module: ModuleType, name: str, put: Setter) -> None:
    class Hiding(ModuleType):
        def __getattribute__(self, attribute: str) -> Any:
            if attribute == name and _from_aiva(2):
                raise AttributeError(attribute)
            return super().__getattribute__(attribute)

    put(module, "__class__", Hiding)


GRPC_EXPORTER = "opentelemetry.exporter.otlp.proto.grpc.exporter"
BATCH = "opentelemetry.sdk._shared_internal"
HTTP_SPANS = "opentelemetry.exporter.otlp.proto.http.trace_exporter"
BREAKS: dict[str, Callable[[Setter], None]] = {
    "otlp_grpc_encoder": lambda put: wrap(GRPC_EXPORTER, "OTLPExporterMixin", "_export", put),
    "batch_queue": lambda put: hide(BATCH, "BatchProcessor", "emit", put),
    "batch_drop_counts": lambda put: hide(BATCH, "BatchProcessor", "_metrics", put),
    "export_outcomes": lambda put: hide(HTTP_SPANS, "OTLPSpanExporter", "_metrics", put),
    "metric_producers": lambda put: hide(
        "opentelemetry.sdk.metrics.export", "MetricExporter", "_preferred_temporality", put
    ),
    "prometheus_translation": lambda put: hide(
        "opentelemetry.exporter.prometheus", None, "_CustomCollector", put
    ),
    "semconv_mode": lambda put: hide(
        "opentelemetry.instrumentation._semconv",
        None,
        "_OpenTelemetrySemanticConventionStability",
        put,
    ),
    "fastapi_route_state": lambda put: hide("fastapi.routing", None, "_FASTAPI_SCOPE_KEY", put),
    "fastapi_telemetry_config": lambda put: hide("fastapi", "FastAPI", "_telemetry", put),
    "uvicorn_protocol": lambda put: wrap(
        "uvicorn.protocols.http.httptools_impl", "HttpToolsProtocol", "on_headers_complete", put
    ),
    "uvicorn_supervisor": lambda put: wrap(
        "uvicorn.supervisors.multiprocess", "Multiprocess", "init_processes", put
    ),
    "uvicorn_lifespan_state": lambda put: wrap("uvicorn.server", "Server", "startup", put),
}


def apply(hook: str, put: Setter = setattr) -> None:
    """Take `hook` (a name in aiva.fast.HOOKS) away."""
    BREAKS[hook](put)
