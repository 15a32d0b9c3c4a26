"""A service whose stack knows about OpenTelemetry besides aiva.

EXTRA_INSTRUMENTATION=contrib: as `opentelemetry-instrument` would, the contrib
Starlette instrumentation patches Starlette before the app is built.
EXTRA_INSTRUMENTATION=starlette: the app also gets Starlette's own
OpenTelemetryMiddleware. Either way aiva must make exactly one server span a request.
"""

from __future__ import annotations

import os

from opentelemetry.instrumentation.starlette import StarletteInstrumentor


def main() -> None:
    extra = os.environ["EXTRA_INSTRUMENTATION"]
    if extra == "contrib":
        StarletteInstrumentor().instrument()  # before aiva imports Starlette, as auto-instrumentation

    from starlette.middleware.opentelemetry import OpenTelemetryMiddleware

    from aiva.server import run
    from aiva.settings import load_settings
    from aiva.web.app import create_reference_app

    loaded = load_settings(os.environ)
    app = create_reference_app(loaded)
    if extra == "starlette":
        app.add_middleware(OpenTelemetryMiddleware)
    run(loaded, app)


if __name__ == "__main__":
    main()
