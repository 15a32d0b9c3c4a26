"""aiva: the OpenTelemetry-native core of a Python service."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["__version__", "create_app"]

if TYPE_CHECKING:
    from aiva.web.app import create_app


def __getattr__(name: str) -> Any:
    # Lazy: `import aiva` stays cheap and side-effect free; the app stack loads on first use.
    if name == "create_app":
        from aiva.web.app import create_app

        return create_app
    raise AttributeError(f"module 'aiva' has no attribute {name!r}")
