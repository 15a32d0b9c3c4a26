"""Layered settings: dynaconf reads the layers once, the rest of aiva gets frozen dataclasses."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from aiva.errors import Problem, SettingsError
from aiva.settings.build import AUTOMATIC_CHECKS, build, derive, normalise, to_dict
from aiva.settings.identity import adopt_resource_identity
from aiva.settings.layers import (
    DEFAULT_CONFIG_DIR,
    DEFAULT_ENV,
    STANDARD_ENVS,
    Layer,
    Origins,
    get_path,
    merge,
    read_layers,
)
from aiva.settings.masking import mask_value
from aiva.settings.model import CheckSettings, Settings
from aiva.settings.otel_env import unit_notices, unsupported_notice, unsupported_variables
from aiva.settings.validate import validate

__all__ = [
    "CheckSettings",
    "LoadedSettings",
    "Settings",
    "SettingsError",
    "load_settings",
    "mask_value",
    "to_dict",
]


@dataclass(frozen=True)
class LoadedSettings:
    """The effective settings with where each value came from."""

    settings: Settings
    sources: Mapping[str, str]
    env: str
    config_dir: Path
    # Standard variables set that aiva does not honour (named at start-up, not ignored).
    unsupported: tuple[str, ...] = ()
    # The WARNING lines start-up gives about the standard variables set (those, units
    # that look mistaken, /metrics switched off by OTEL_METRICS_EXPORTER).
    notices: tuple[str, ...] = ()


def load_settings(
    environ: Mapping[str, str],
    *,
    env: str | None = None,
    config_dir: str | Path | None = None,
) -> LoadedSettings:
    """Read, merge and validate every layer; raise SettingsError listing every problem.

    `environ` is the process environment (injected, so tests and reloads pass their own);
    `env` and `config_dir` override `AIVA_ENV` and `AIVA_CONFIG_DIR`.
    """
    from aiva import __version__

    env_given = "--env / env argument" if env else "environment variable AIVA_ENV"
    env = env or environ.get("AIVA_ENV") or DEFAULT_ENV
    folder = Path(config_dir or environ.get("AIVA_CONFIG_DIR") or DEFAULT_CONFIG_DIR)
    layers, problems = read_layers(environ, env, folder)
    problems = _folder_problems(folder, environ, config_dir) + problems
    problems += _env_problems(env, layers, explicit=env_given)
    merged = merge(layers)
    origins = Origins(merged.origins.items())
    adopt_resource_identity(merged.data, origins)
    _note_derived(merged.data, origins, env)
    data = derive(normalise(merged.data), env=env, version=__version__)
    problems += validate(data, origins)
    if problems:
        raise SettingsError(problems)
    settings = build(data)
    return LoadedSettings(
        settings,
        origins,
        env,
        folder,
        unsupported_variables(environ),
        _notices(environ, settings, origins),
    )


def _notices(
    environ: Mapping[str, str], settings: Settings, origins: Mapping[str, str]
) -> tuple[str, ...]:
    lines = [line for line in (unsupported_notice(environ),) if line is not None]
    lines += unit_notices(environ)
    switched = origins.get("telemetry.metrics.prometheus.enabled", "")
    if not settings.telemetry.metrics.prometheus.enabled and switched.endswith(
        "OTEL_METRICS_EXPORTER"
    ):
        lines.append(
            f"OTEL_METRICS_EXPORTER={environ.get('OTEL_METRICS_EXPORTER', '').strip()} leaves "
            f"out prometheus: {settings.telemetry.metrics.prometheus.path} is off (list "
            "prometheus to keep it for scrapes)"
        )
    return tuple(lines)


def _folder_problems(
    folder: Path, environ: Mapping[str, str], config_dir: str | Path | None
) -> list[Problem]:
    """A settings folder named explicitly must be one; the default `./config` may be missing.

    A `config_dir=` argument may name a missing folder: callers (tests, tools) use that to
    mean "no settings files". A file there is a mistake either way.
    """
    if folder.is_dir():
        return []
    if config_dir:
        source = "argument config_dir"
        if not folder.exists():
            return []
    elif environ.get("AIVA_CONFIG_DIR"):
        source = "environment variable AIVA_CONFIG_DIR"
    else:
        return []
    return [Problem("AIVA_CONFIG_DIR", "must be an existing folder", source, repr(str(folder)))]


def _env_problems(env: str, layers: Sequence[Layer], explicit: str) -> list[Problem]:
    """An environment named by no settings file is most likely a typo (`prodution`) that
    would run on another environment's settings without a word: refuse it. The
    contract's three names are always known, with or without a section."""
    known = set(STANDARD_ENVS).union(*(layer.sections for layer in layers))
    if env in known:
        return []
    names = ", ".join(sorted(known))
    return [Problem("AIVA_ENV", f"names no settings section (known: {names})", explicit, repr(env))]


def _note_derived(data: Mapping[str, object], origins: MutableMapping[str, str], env: str) -> None:
    """Provenance of the keys `derive` fills from others."""
    derived = {
        "service.version": "package version",
        "service.environment": f"the active environment ({env})",
        "telemetry.logs.otlp": "derived from telemetry.otlp.endpoint",
        "telemetry.metrics.export_timeout_s": "derived from telemetry.otlp.timeout_s",
        "health.cache_ttl_s": "derived from health.interval_s",
    }
    for key, origin in derived.items():
        if get_path(data, key) is None:
            origins[key] = origin
    for name, key, switched_on, _ in AUTOMATIC_CHECKS:
        if switched_on(data):
            origins.setdefault(f"health.checks.{name}.type", f"derived from {key}")
