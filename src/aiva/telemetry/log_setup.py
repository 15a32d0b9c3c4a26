"""Where logging is configured: once by the server before it serves, or by an app's
lifespan when nothing has (a plain `uvicorn module:app`), and undone when it stops."""

from __future__ import annotations

import logging
import logging.config
from collections.abc import Callable
from typing import Any

from aiva.settings.model import LogsSettings
from aiva.telemetry.log_queue import console_output, file_output
from aiva.telemetry.logs import ConsoleFormatter, JsonFormatter, OtlpLogHandler, OtlpLogs
from aiva.telemetry.scrub import RecordScrubber

# uvicorn's loggers go through our handlers; its access log is replaced by aiva.access.
_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error")
# Marks the root logger as configured by aiva (process-wide, as the root logger is).
_CONFIGURED_ATTR = "_aiva_logging_configured"

# The loggers configure_logging sets besides the root (restored with it).
_CONFIGURED_LOGGERS = (*_UVICORN_LOGGERS, "uvicorn.access", "httpx", "httpcore", "opentelemetry")


def set_level(level: str) -> None:
    """Change the level of the loggers aiva configured (hot reload): the root and
    uvicorn's when aiva set logging up, else only aiva's own (the service's levels are
    the service's)."""
    if not getattr(logging.getLogger(), _CONFIGURED_ATTR, False):
        logging.getLogger("aiva").setLevel(level)
        return
    logging.getLogger().setLevel(level)
    for name in _UVICORN_LOGGERS:
        logging.getLogger(name).setLevel(level)


def configure_logging(settings: LogsSettings) -> None:
    """Configure the root logger and uvicorn's loggers (console and file): the one place
    logging is set up. The server calls it before it serves; an app's lifespan calls it
    through `claim_logging` when nothing of aiva's is configured yet."""
    scrubber = RecordScrubber(settings.scrub.patterns)
    # Both outputs behind bounded queues drained by their own threads: a reader that
    # stalls costs dropped (and counted) records, never the event loop (log_queue).
    handlers: dict[str, dict[str, Any]] = {
        "console": {"()": console_output, "formatter": settings.format}
    }
    if settings.file.path:
        handlers["file"] = {
            "()": file_output,
            "filename": settings.file.path,
            "max_bytes": settings.file.max_bytes,
            "backup_count": settings.file.backup_count,
            "formatter": "json",
        }
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {
                # Both scrub each record (once, whichever formats it first).
                "json": {"()": JsonFormatter, "scrubber": scrubber},
                "console": {
                    "()": ConsoleFormatter,
                    "fmt": "%(asctime)s %(levelname)-8s %(name)s: %(message)s",
                    "scrubber": scrubber,
                },
            },
            "handlers": handlers,
            "root": {"level": settings.level, "handlers": list(handlers)},
            "loggers": {
                **{
                    name: {"level": settings.level, "handlers": [], "propagate": True}
                    for name in _UVICORN_LOGGERS
                },
                "uvicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
                # httpx logs every request line at INFO, URL and credentials included:
                # the http health check would write a URL's password every round.
                "httpx": {"level": "WARNING"},
                "httpcore": {"level": "WARNING"},
                # The exporters' own complaints must not feed back into the OTLP pipeline.
                "opentelemetry": {"level": "WARNING", "handlers": ["console"], "propagate": False},
            },
        }
    )
    setattr(logging.getLogger(), _CONFIGURED_ATTR, True)  # a marker on the process's root


def claim_logging(settings: LogsSettings, otlp_logs: OtlpLogs | None) -> Callable[[], None]:
    """Logging for one app's lifespan; returns what undoes it at shutdown.

    The root logger is one per process, so two aiva apps in one process (tests, a
    service mounting two) share it rather than take it from each other:
    - console and file: configured here only when nothing has configured the root
      logger yet (a plain `uvicorn module:app`: uvicorn sets up its own loggers only),
      and then restored to what was there before when this app stops. Logging set up
      by `aiva serve`, by the service itself (basicConfig, dictConfig) or by another
      running app is left as it is;
    - OTLP: this app's handler is added unless another app's is there already, whose
      pipeline then carries every record of the process.
    """
    root = logging.getLogger()
    undo: list[Callable[[], None]] = []
    # OpenTelemetry's own handler (opentelemetry-instrument adds one) configures nothing.
    configured = [h for h in root.handlers if not _is_opentelemetry_handler(h)]
    if not configured and not getattr(root, _CONFIGURED_ATTR, False):
        restore = _snapshot((root, *map(logging.getLogger, _CONFIGURED_LOGGERS)))
        configure_logging(settings)

        def unconfigure() -> None:
            restore()
            delattr(root, _CONFIGURED_ATTR)

        undo.append(unconfigure)
    if otlp_logs is not None and not any(isinstance(h, OtlpLogHandler) for h in root.handlers):
        handler = OtlpLogHandler(otlp_logs, scrubber=RecordScrubber(settings.scrub.patterns))
        # Where the service's own configuration keeps uvicorn's records from the root
        # (uvicorn's default: propagate off), the handler goes there too: its error
        # line is the one that must reach the collector with the request's ids.
        for target in [root, *_detached(logging.getLogger("uvicorn"))]:
            target.addHandler(handler)
            undo.append(lambda target=target: target.removeHandler(handler))  # type: ignore[misc]
        undo.append(_take_out_other_otlp_handlers(root))

    def release() -> None:
        for step in reversed(undo):
            step()
        undo.clear()

    return release


def _detached(logger_: logging.Logger) -> list[logging.Logger]:
    """`logger_` when its records do not reach the root logger's handlers."""
    return [] if logger_.propagate else [logger_]


def _is_opentelemetry_handler(handler: logging.Handler) -> bool:
    """opentelemetry-instrumentation-logging's (or the SDK's) handler to the global
    logger provider."""
    from opentelemetry.sdk._logs import LoggingHandler as SdkHandler

    kinds: tuple[type[logging.Handler], ...] = (SdkHandler,)
    try:
        from opentelemetry.instrumentation.logging.handler import LoggingHandler
    except ImportError:  # opentelemetry-instrumentation-logging is not installed
        pass
    else:
        kinds += (LoggingHandler,)
    return isinstance(handler, kinds)


def _take_out_other_otlp_handlers(root: logging.Logger) -> Callable[[], None]:
    """Remove the OpenTelemetry packages' own logging handlers from the root logger;
    returns what puts them back.

    `opentelemetry-instrument` adds opentelemetry-instrumentation-logging's handler
    (and re-adds it after every dictConfig); it sends every record to the global logger
    provider, which is aiva's: each record reached the collector twice.
    """
    theirs = [h for h in root.handlers if _is_opentelemetry_handler(h)]
    for handler in theirs:
        root.removeHandler(handler)
    if theirs:
        logging.getLogger(__name__).info(
            "OpenTelemetry's own logging handler removed: aiva exports the log records"
        )

    def put_back() -> None:
        for handler in theirs:
            root.addHandler(handler)

    return put_back


def _snapshot(loggers: tuple[logging.Logger, ...]) -> Callable[[], None]:
    """What puts these loggers' handlers, levels and propagation back as they are now,
    closing the handlers added meanwhile."""
    saved = [(lg, list(lg.handlers), lg.level, lg.propagate) for lg in loggers]

    def restore() -> None:
        for logger_, handlers, level, propagate in saved:
            for handler in logger_.handlers:
                if handler not in handlers:
                    handler.close()
            logger_.handlers[:] = handlers
            logger_.setLevel(level)
            logger_.propagate = propagate

    return restore
