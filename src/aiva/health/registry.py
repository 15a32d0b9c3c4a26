"""Which checks run: the configured ones, the automatic ones, and the service's own."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiva.health.checks.http import http_check
from aiva.health.checks.postgres import postgres_check
from aiva.health.checks.redis import redis_check
from aiva.health.checks.system import cpu_check, disk_check, memory_check
from aiva.health.checks.telemetry import telemetry_check
from aiva.health.model import Probe
from aiva.health.runner import as_async
from aiva.health.types import CheckFunction, CheckSpec
from aiva.settings import Settings
from aiva.settings.model import CheckSettings
from aiva.telemetry.exporters import ExportStats
from aiva.telemetry.otlp_target import any_target

# What each type reports in the IETF format: (componentType, measurement).
_IETF = {
    "postgres": ("datastore", "responseTime"),
    "redis": ("datastore", "responseTime"),
    "http": ("component", "responseTime"),
    "disk": ("system", "utilization"),
    "memory": ("system", "utilization"),
    "cpu": ("system", "utilization"),
    "telemetry": ("component", "exportFailures"),
    "custom": ("component", "status"),
}


@dataclass(frozen=True)
class CustomCheck:
    """A service's own check, as registered through `create_app(checks=...)`."""

    name: str
    run: CheckFunction
    critical: bool = False
    probes: tuple[Probe, ...] = ("ready",)
    timeout_s: float | None = None


def check(
    name: str | None = None,
    *,
    critical: bool = False,
    probes: Sequence[Probe] = ("ready",),
    timeout_s: float | None = None,
) -> Callable[[CheckFunction], CustomCheck]:
    """Decorator: declare a function a health check, with its name and role.

    The function may be async or plain; a plain one runs in a worker thread under the
    same timeout, and is abandoned (not killed) when it overruns it.
    """

    def wrap(func: CheckFunction) -> CustomCheck:
        _require_callable(func)
        return CustomCheck(_name_of(func, name), func, critical, tuple(probes), timeout_s)

    return wrap


def as_custom(item: CustomCheck | CheckFunction) -> CustomCheck:
    """A bare function (async or plain) becomes a non-critical `ready` check named after it."""
    if isinstance(item, CustomCheck):
        return item
    _require_callable(item)
    return CustomCheck(_name_of(item), item)


def _require_callable(item: object) -> None:
    # At registration, so misuse fails when the app is built, not every round.
    if not callable(item):
        raise TypeError(
            f"health check {item!r} is not callable: pass a function of no arguments"
            " (async or plain) returning an Outcome or True/False"
        )


def _name_of(func: CheckFunction, name: str | None = None) -> str:
    return name or str(getattr(func, "__name__", type(func).__name__))


def build_checks(
    settings: Settings, stats: ExportStats, custom: Sequence[CustomCheck] = ()
) -> list[CheckSpec]:
    """Every enabled check of health.checks (the automatic redis, postgres and telemetry
    ones included, see settings), then the custom ones; settings override a custom
    check's role when they name it."""
    specs = []
    for name, config in settings.health.checks.items():
        if not config.enabled or config.type == "custom":
            continue
        component, measurement = _IETF[config.type]
        run = as_async(_function(config, settings, stats))
        timeout = config.timeout_s or settings.health.timeout_s
        specs.append(
            CheckSpec(name, run, config.critical, config.probes, timeout, component, measurement)
        )
    for item in custom:
        own = settings.health.checks.get(item.name)
        if own is not None and not own.enabled:
            continue
        specs.append(
            CheckSpec(
                item.name,
                as_async(item.run),
                own.critical if own else item.critical,
                own.probes if own else item.probes,
                (own.timeout_s if own else item.timeout_s) or settings.health.timeout_s,
            )
        )
    return specs


def _function(config: CheckSettings, settings: Settings, stats: ExportStats) -> CheckFunction:
    options: Mapping[str, Any] = config.options
    timeout = config.timeout_s or settings.health.timeout_s
    if config.type == "postgres":
        return postgres_check(settings.database, options)
    if config.type == "redis":
        return redis_check(str(options.get("url") or settings.redis.url), timeout)
    if config.type == "http":
        return http_check(options, timeout)
    if config.type == "disk":
        return disk_check(options)
    if config.type == "memory":
        return memory_check(options)
    if config.type == "cpu":
        return cpu_check(options)
    if config.type == "telemetry":
        return telemetry_check(stats, any_target(settings.telemetry.otlp))
    raise ValueError(f"no check type {config.type!r}")
