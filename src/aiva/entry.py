"""The `aiva` command's first step, before anything imports OpenTelemetry."""

from __future__ import annotations

import os
import sys
from typing import Any

from aiva.settings.otel_env import propagators_problem


def main(argv: list[str] | None = None) -> Any:
    """Refuse an OTEL_PROPAGATORS that names no installed propagator as the settings error it
    is (one line, exit 2): the OpenTelemetry API would raise at import, with a traceback."""
    problem = propagators_problem(os.environ)
    if problem is not None:
        import click

        click.echo(problem, err=True)
        sys.exit(2)
    from aiva.cli import main as run

    return run(argv)
