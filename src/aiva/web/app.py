"""`create_app`: the instrumented Starlette application, built from its arguments."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.applications import Starlette
from starlette.routing import BaseRoute

from aiva.health.registry import CustomCheck
from aiva.health.types import CheckFunction
from aiva.settings import LoadedSettings, Settings
from aiva.web.instrument import instrument
from aiva.web.routes import demo, info


def create_app(
    settings: Settings | LoadedSettings | None = None,
    routes: Sequence[BaseRoute] = (),
    checks: Sequence[CustomCheck | CheckFunction] = (),
) -> Starlette:
    """The service's Starlette app: aiva's endpoints, `GET /`, then `routes`, instrumented.

    A thin builder on `instrument`: with no `settings`, they are loaded from the process
    environment and the settings files (raising SettingsError when invalid). Settings
    loaded from files (None, or a LoadedSettings) are reloaded when the files change or
    on SIGHUP; a plain Settings object stays as given.
    """
    return instrument(Starlette(routes=[info.ROOT, *routes]), settings, checks)


def create_reference_app(settings: Settings | LoadedSettings | None = None) -> Starlette:
    """What `aiva serve` runs: the app with the demo API."""
    return create_app(settings, routes=demo.ROUTES)
