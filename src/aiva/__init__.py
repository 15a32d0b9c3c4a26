"""aiva: the OpenTelemetry-native core of a Python service."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "create_app",
    "instrument",
    "log_context",
    "meter",
    "operation",
    "run_mounted_lifespans",
    "tracer",
]

if TYPE_CHECKING:
    from aiva.api import log_context, meter, operation, tracer
    from aiva.web.app import create_app
    from aiva.web.instrument import instrument, run_mounted_lifespans

_LAZY = {
    "create_app": "aiva.web.app",
    "instrument": "aiva.web.instrument",
    "run_mounted_lifespans": "aiva.web.instrument",
    "operation": "aiva.api",
    "log_context": "aiva.api",
    "meter": "aiva.api",
    "tracer": "aiva.api",
}


def __getattr__(name: str) -> Any:
    # Lazy: `import aiva` stays cheap and side-effect free; the stack loads on first use.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'aiva' has no attribute {name!r}")
