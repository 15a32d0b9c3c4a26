"""Running the app under uvicorn, with a clean exit after a graceful shutdown."""

from __future__ import annotations

import logging
import os
import signal
import socket
import tempfile
from types import FrameType
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from aiva.errors import AppLoadError
from aiva.fast import INHERITED_LAYER_VARIABLE, FastLayer, fast_layer
from aiva.fast.uvicorn_protocol import HeadLimits, http_protocol
from aiva.fast.uvicorn_server import lifespan_state
from aiva.heap import freeze_long_lived
from aiva.settings import LoadedSettings
from aiva.telemetry.log_setup import configure_logging

logger = logging.getLogger(__name__)

# Workers build their own app from the environment: the settings travel as AIVA_*
# variables, the app to serve as these two (outside AIVA_*, which is settings only).
WORKER_FACTORY = "aiva.server:worker_app"
APP_VARIABLE = "_AIVA_SERVE_APP"
FACTORY_VARIABLE = "_AIVA_SERVE_APP_FACTORY"
# With several workers: a directory (mode 0700) the parent makes before the first worker
# starts and removes after the last one ended; the workers share their metrics through it.
METRICS_DIR_VARIABLE = "_AIVA_WORKER_METRICS_DIR"
# The parent's telemetry.fast_path, for the workers' servers (aiva.fast).
FAST_PATH_VARIABLE = "_AIVA_FAST_PATH"


def load_app(loaded: LoadedSettings, target: str | None = None, factory: bool = False) -> Any:
    """The app `aiva serve [TARGET]` serves: the reference app, or the user's own
    (`module:attribute`, called first when `factory`), instrumented unless it is already.

    Raises AppLoadError when TARGET cannot be imported or is no Starlette or FastAPI app.
    """
    if target is None:
        from aiva.web.app import create_reference_app

        return create_reference_app(loaded)
    from uvicorn.importer import ImportFromStringError, import_from_string

    from aiva.web.instrument import INSTRUMENTED_ATTR, instrument

    try:
        found = import_from_string(target)
    except ImportFromStringError as error:
        raise AppLoadError(f"cannot load {target}: {error}") from error
    app = found() if factory else found
    if getattr(app, INSTRUMENTED_ATTR, False):
        return app
    try:
        return instrument(app, loaded)
    except TypeError as error:
        raise AppLoadError(f"{target}: {error}") from error


def worker_app() -> Any:
    """A worker process's app, from the variables `run` passed on."""
    from aiva.settings import load_settings

    target = os.environ.get(APP_VARIABLE) or None
    return load_app(load_settings(os.environ), target, os.environ.get(FACTORY_VARIABLE) == "1")


def run(
    loaded: LoadedSettings,
    app: ASGIApp | None = None,
    target: str | None = None,
    factory: bool = False,
) -> None:
    """Serve until SIGTERM/SIGINT, finishing in-flight requests within the graceful timeout.

    The app served is `app`, else the one `target` names (see load_app), else the
    reference app (with the demo API); with several workers, each worker builds its own.
    """
    server_settings = loaded.settings.server
    # Logging is set up once, here, before anything is served: uvicorn's own start-up
    # lines already come out in aiva's format, and the app's lifespan leaves it alone.
    configure_logging(loaded.settings.telemetry.logs)
    limits = server_settings.limits
    fast = fast_layer(loaded.settings.telemetry.fast_path)  # its one WARNING, before serving
    common: dict[str, Any] = {
        "host": server_settings.host,
        "port": server_settings.port,
        "timeout_graceful_shutdown": server_settings.graceful_timeout_s,
        "log_config": None,  # aiva configures logging itself, in one place
        "access_log": False,  # replaced by aiva's structured access log
        "lifespan": "on",
        "server_header": False,
        # httptools with aiva's request-head limits (aiva.fast.uvicorn_protocol says why);
        # in every worker too: the Config, this protocol with it, goes to each.
        "http": http_protocol(
            HeadLimits(limits.max_header_bytes, limits.max_headers, limits.header_timeout_s),
            fast,
        ),
        # The same head limit for uvicorn's h11 protocol, should aiva fall back to it.
        "h11_max_incomplete_event_size": limits.max_header_bytes,
        "timeout_keep_alive": limits.keepalive_timeout_s,
    }
    if server_settings.workers > 1:
        os.environ[APP_VARIABLE] = target or ""
        os.environ[FAST_PATH_VARIABLE] = loaded.settings.telemetry.fast_path
        os.environ[FACTORY_VARIABLE] = "1" if factory else ""
        # It builds on this module's server.
        from aiva.fast.uvicorn_workers import serve_plain_workers, serve_workers

        # The workers use the hooks the parent's self-tests passed (no second WARNING).
        os.environ[INHERITED_LAYER_VARIABLE] = ",".join(sorted(fast.usable))

        config = uvicorn.Config(
            WORKER_FACTORY, factory=True, workers=server_settings.workers, **common
        )
        with tempfile.TemporaryDirectory(prefix="aiva-metrics-") as shared:
            os.environ[METRICS_DIR_VARIABLE] = shared
            if "uvicorn_supervisor" in fast:
                serve_workers(config)
            else:
                serve_plain_workers(config)
        return
    if app is None:
        app = load_app(loaded, target, factory)
    config = uvicorn.Config(app, **common)
    with _exit_cleanly_after_shutdown():
        _Server(config, fast).run()


class _Server(uvicorn.Server):
    """uvicorn's server, telling the app the moment shutdown starts, and keeping what
    start-up built out of the garbage collector's way (aiva.heap).

    uvicorn ends the lifespan only after in-flight requests finish; readiness must
    turn 503 before that, as soon as the signal arrives. With several workers, each
    worker runs this class too (aiva.fast.uvicorn_workers).
    """

    def __init__(self, config: uvicorn.Config, fast: FastLayer | None = None) -> None:
        super().__init__(config)
        # A worker's server (aiva.fast.uvicorn_workers) takes the parent's fast_path.
        mode = os.environ.get(FAST_PATH_VARIABLE, "auto")
        self.fast = fast if fast is not None else fast_layer(mode)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        freeze_long_lived()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Without the fast layer's hook, readiness turns 503 when the lifespan's shutdown
        # starts (aiva.web.lifespan), after the requests in flight.
        state = lifespan_state(self) if "uvicorn_lifespan_state" in self.fast else None
        aiva_state = state.get("aiva") if state is not None else None
        if aiva_state is not None:
            aiva_state.health.draining = True
        super().handle_exit(sig, frame)


class _exit_cleanly_after_shutdown:
    """Make the signal uvicorn re-raises after its graceful shutdown end the process with 0.

    uvicorn restores the handlers it found and raises the captured signal again once it
    has shut down; with the default handlers that kills the process (exit -15) after the
    work is done. The handlers installed here are the ones it finds and restores.
    """

    def __enter__(self) -> None:
        self._previous = {
            sig: signal.signal(sig, self._after_shutdown) for sig in (signal.SIGTERM, signal.SIGINT)
        }

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    @staticmethod
    def _after_shutdown(signum: int, frame: FrameType | None) -> None:
        logger.info("shut down after %s", signal.Signals(signum).name)
