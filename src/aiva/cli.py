"""The `aiva` command line: serve, config show, config validate."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Mapping
from typing import Any, NoReturn

import click
import yaml

from aiva.errors import AivaError, SettingsError
from aiva.health.model import Status, http_status
from aiva.health.report import report
from aiva.settings import LoadedSettings, Settings, load_settings, mask_value, to_dict
from aiva.settings.layers import leaves, source_of
from aiva.settings.reload import problem_line

EXIT_OK = 0
EXIT_UNHEALTHY = 1
EXIT_SETTINGS = 2

ENV_OPTION = click.option(
    "--env",
    "env",
    default=None,
    help="Environment section to use (overrides AIVA_ENV; default: development).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="aiva")
def cli() -> None:
    """aiva: the OpenTelemetry-native core of a Python service."""


@cli.command()
@click.argument("app", required=False, default=None, metavar="[MODULE:APP]")
@click.option(
    "--factory",
    is_flag=True,
    help="MODULE:APP is a function returning the app (as uvicorn --factory).",
)
@click.option("--host", default=None, help="Interface to bind (overrides server.host).")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=None, help="Port (overrides server.port)."
)
@ENV_OPTION
@click.option(
    "--workers",
    type=click.IntRange(1),
    default=None,
    help="Worker processes (overrides server.workers).",
)
def serve(
    app: str | None,
    factory: bool,
    host: str | None,
    port: int | None,
    env: str | None,
    workers: int | None,
) -> None:
    """Run the service under uvicorn until SIGTERM or SIGINT; exit 0 after a clean shutdown.

    With MODULE:APP, serve that Starlette or FastAPI app (instrumented by aiva unless it
    is already) instead of the reference service.
    """
    overrides = {
        "AIVA_ENV": env,
        "AIVA_SERVER__HOST": host,
        "AIVA_SERVER__PORT": None if port is None else str(port),
        "AIVA_SERVER__WORKERS": None if workers is None else str(workers),
    }
    # The command line is the top layer: passed on as variables, so that worker
    # processes (which build their app from the environment) see the same settings.
    os.environ.update({k: v for k, v in overrides.items() if v is not None})
    loaded = _load(os.environ, None)
    from aiva.server import run

    try:
        run(loaded, target=app, factory=factory)
    except SettingsError as error:  # a module that loads its own settings at import
        _fail(error)
    except AivaError as error:
        click.echo(f"serve: {error}", err=True)
        sys.exit(EXIT_SETTINGS)


@cli.command()
@click.option(
    "--probe",
    type=click.Choice(["live", "ready", "startup"]),
    default=None,
    help="Only the checks of this probe (default: every check).",
)
@click.option(
    "--url",
    default=None,
    help="Ask the service running at URL (e.g. http://127.0.0.1:8000) instead of "
    "running the checks in this process.",
)
@ENV_OPTION
def health(probe: str | None, url: str | None, env: str | None) -> None:
    """Run the health checks once and print the report as JSON.

    Exit 0 when healthy or degraded, 1 when unhealthy or unknown (or unreachable),
    2 on a settings error. In-process runs cover the configured checks; a service's
    own (code) checks run only inside the service: use --url for those.
    """
    if url is not None:
        code, body = _ask(url, probe)
        click.echo(body)
        sys.exit(EXIT_OK if code == 200 else EXIT_UNHEALTHY)
    loaded = _load(os.environ, env)
    status, report = _evaluate_here(loaded.settings, probe)
    click.echo(json.dumps(report, indent=2))
    sys.exit(EXIT_OK if http_status(status) == 200 else EXIT_UNHEALTHY)


def _evaluate_here(settings: Settings, probe: str | None) -> tuple[Status, dict[str, Any]]:
    from opentelemetry.trace import NoOpTracerProvider

    from aiva.health.registry import build_checks
    from aiva.health.runner import HealthRunner, evaluate_once
    from aiva.telemetry.exporters import ExportStats

    started = time.monotonic()
    checks = build_checks(settings, ExportStats())
    runner = HealthRunner(checks, settings.health, NoOpTracerProvider().get_tracer("aiva"))
    status, results = asyncio.run(evaluate_once(runner, probe))  # type: ignore[arg-type]
    uptime = time.monotonic() - started
    return status, report(results, status, settings.service.version, uptime, details=True)


def _ask(url: str, probe: str | None) -> tuple[int, str]:
    import httpx

    path = f"/health/{probe}" if probe else "/health"
    try:
        response = httpx.get(url.rstrip("/") + path, timeout=10)
    except httpx.HTTPError as error:
        click.echo(f"health: cannot reach {url}: {error}", err=True)
        return 0, json.dumps({"status": Status.UNKNOWN.value, "error": str(error)}, indent=2)
    try:  # printed as the in-process report is; a body that is no JSON as it came
        return response.status_code, json.dumps(response.json(), indent=2)
    except ValueError:
        return response.status_code, response.text


@cli.group()
def config() -> None:
    """Inspect and validate the layered settings."""


@config.command("show")
@click.option("--sources", is_flag=True, help="Name the layer each value came from.")
@ENV_OPTION
def config_show(sources: bool, env: str | None) -> None:
    """Print the effective settings (secrets masked)."""
    _quiet_on_closed_pipe()
    loaded = _load(os.environ, env)
    effective = {k: mask_value(k, v) for k, v in to_dict(loaded.settings).items()}
    if not sources:
        click.echo(yaml.safe_dump(effective, sort_keys=False), nl=False)
        return
    click.echo(f"# environment: {loaded.env}; settings folder: {loaded.config_dir.resolve()}")
    for key, value in leaves(effective):
        shown = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
        shown = shown.removesuffix("\n...").removesuffix("...").strip()
        click.echo(f"{key} = {shown}    # {source_of(key, loaded.sources)}")


@config.command("validate")
@ENV_OPTION
def config_validate(env: str | None) -> None:
    """Validate every settings layer; print each problem with its key and source."""
    loaded = _load(os.environ, env)
    files = sorted({s for s in loaded.sources.values() if s.startswith("/")})
    click.echo(f"settings valid (environment {loaded.env}; files: {', '.join(files) or 'none'})")


def _load(environ: Mapping[str, str], env: str | None) -> LoadedSettings:
    try:
        return load_settings(environ, env=env)
    except SettingsError as error:
        _fail(error)


def _fail(error: SettingsError) -> NoReturn:
    for problem in error.problems:  # every one, each cut to a line of bounded length
        click.echo(f"settings error: {problem_line(problem)}", err=True)
    sys.exit(EXIT_SETTINGS)


def _quiet_on_closed_pipe() -> None:
    # `aiva config show | head` ends quietly instead of with a traceback. Printing
    # commands only: in `serve`, a client closing its socket must never kill the server.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)


def main(argv: list[str] | None = None) -> Any:
    """Console-script entry point."""
    return cli.main(args=argv, prog_name="aiva")
