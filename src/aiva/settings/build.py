"""Turning validated settings data into the frozen dataclass tree, and back for display."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from aiva.settings.model import (
    CHECK_COMMON_KEYS,
    CHECK_OPTIONS,
    CheckSettings,
    HealthSettings,
    Settings,
)


def derive(data: dict[str, Any], *, env: str, version: str) -> dict[str, Any]:
    """Fill the keys whose default depends on other keys (the contract's `[= ...]`)."""
    # Each rule runs only where its tables are well formed; validation reports the rest.
    service, telemetry, health = (_table(data, name) for name in ("service", "telemetry", "health"))
    if service.get("version") is None:
        service["version"] = version
    if service.get("environment") is None:
        service["environment"] = env
    logs, otlp = _table(telemetry, "logs"), _table(telemetry, "otlp")
    if "otlp" in logs and logs["otlp"] is None:
        logs["otlp"] = _signal_value(otlp, "logs", "endpoint") is not None
    metrics = _table(telemetry, "metrics")
    if "export_timeout_s" in metrics and metrics["export_timeout_s"] is None:
        metrics["export_timeout_s"] = _signal_value(otlp, "metrics", "timeout_s")
    if "cache_ttl_s" in health and health["cache_ttl_s"] is None:
        health["cache_ttl_s"] = health.get("interval_s")
    _automatic_checks(data, health)
    return data


# Checks that switch on by themselves: (check name, the key that switches it on, the
# test on the data, its defaults). Settings under health.checks.<name> merge over these
# defaults.
AUTOMATIC_CHECKS: tuple[tuple[str, str, Callable[[Any], bool], dict[str, Any]], ...] = (
    (
        "redis",
        "redis.url",
        lambda data: bool(_table(data, "redis").get("url")),
        {"type": "redis", "critical": True, "probes": ["ready"]},
    ),
    (
        "postgres",
        "database.host",
        lambda data: bool(_table(data, "database").get("host")),
        {"type": "postgres", "critical": True, "probes": ["ready"]},
    ),
    (
        "telemetry",
        "telemetry.otlp.endpoint",
        lambda data: otlp_endpoint_set(data),
        {"type": "telemetry", "critical": False, "probes": ["ready"]},
    ),
)


def _automatic_checks(data: dict[str, Any], health: dict[str, Any]) -> None:
    checks = health.get("checks")
    if not isinstance(checks, dict):
        return
    for name, _, switched_on, defaults in AUTOMATIC_CHECKS:
        if switched_on(data):
            own = checks.get(name)
            checks[name] = {**defaults, **(own if isinstance(own, dict) else {})}
    for name, spec in checks.items():
        # A check named after a type needs no `type:` (`health.checks.disk.warn_percent`).
        if isinstance(spec, dict) and "type" not in spec and name in CHECK_OPTIONS:
            spec["type"] = name


def _signal_value(otlp: dict[str, Any], signal: str, name: str) -> Any:
    """A signal's own OTLP value, else the general one."""
    own = _table(otlp, signal).get(name)
    return own if own is not None else otlp.get(name)


def otlp_endpoint_set(data: Any) -> bool:
    """Whether any signal has an OTLP endpoint (the general one or its own)."""
    otlp = _table(_table(data, "telemetry"), "otlp")
    return any(_signal_value(otlp, s, "endpoint") for s in ("traces", "metrics", "logs"))


def _table(data: Any, name: str) -> dict[str, Any]:
    value = data.get(name) if isinstance(data, dict) else None
    return value if isinstance(value, dict) else {}


def normalise(data: dict[str, Any]) -> dict[str, Any]:
    """Forgiving spellings users expect to work, before validation: `info` for `INFO`."""
    logs = data.get("telemetry", {}).get("logs", {})
    if isinstance(logs, dict) and isinstance(logs.get("level"), str):
        logs["level"] = logs["level"].upper()
    return data


def build(data: Mapping[str, Any]) -> Settings:
    """The typed tree from validated data."""
    return typing.cast(Settings, _build(Settings, data))


def _build(cls: type, data: Mapping[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        kind, value = hints[f.name], data.get(f.name)
        if cls is HealthSettings and f.name == "checks":
            values[f.name] = _checks(value or {}, float(data["timeout_s"]))
        elif dataclasses.is_dataclass(kind):
            values[f.name] = _build(typing.cast(type, kind), value or {})
        else:
            values[f.name] = _freeze(_coerce(kind, value))
    return cls(**values)


def _checks(specs: Mapping[str, Any], default_timeout: float) -> Mapping[str, CheckSettings]:
    checks = {}
    for name, spec in specs.items():
        checks[name] = CheckSettings(
            name=name,
            type=spec["type"],
            enabled=spec.get("enabled", True),
            critical=spec.get("critical", False),
            probes=tuple(spec.get("probes", ("ready",))),
            timeout_s=float(spec.get("timeout_s") or default_timeout),
            options=MappingProxyType({k: v for k, v in spec.items() if k not in CHECK_COMMON_KEYS}),
        )
    return MappingProxyType(checks)


def _coerce(kind: Any, value: Any) -> Any:
    # YAML and environment variables give ints where a float is meant (`timeout_s: 2`).
    if kind is float or kind == (float | None):
        return float(value) if value is not None else None
    return value


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


def to_dict(settings: Any) -> Any:
    """Plain nested data (dicts, lists, scalars) from the settings tree, as files spell it."""
    if isinstance(settings, CheckSettings):
        common = {k: to_dict(getattr(settings, k)) for k in sorted(CHECK_COMMON_KEYS)}
        return common | {k: to_dict(v) for k, v in settings.options.items()}
    if dataclasses.is_dataclass(settings):
        return {f.name: to_dict(getattr(settings, f.name)) for f in dataclasses.fields(settings)}
    if isinstance(settings, Mapping):
        return {k: to_dict(v) for k, v in settings.items()}
    if isinstance(settings, tuple):
        return [to_dict(v) for v in settings]
    return settings
