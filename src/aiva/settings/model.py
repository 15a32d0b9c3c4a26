"""The typed, frozen settings tree handed to the rest of aiva, and its rules."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
OtlpProtocol = Literal["grpc", "http/protobuf"]
LogFormat = Literal["json", "console"]
SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
Probe = Literal["live", "ready", "startup"]
Instrumentation = Literal["aiva", "stock"]
# Client libraries aiva can instrument (one row each in aiva.telemetry.clients.CLIENT_LIBRARIES).
ClientLibrary = Literal["asyncpg", "httpx", "redis"]
CheckType = Literal["postgres", "redis", "http", "disk", "memory", "cpu", "telemetry", "custom"]


def rule(**constraints: Any) -> dict[str, Any]:
    """Validation constraints for a field's metadata.

    ge, gt, le, nonempty, path (URL paths), url_schemes, in_folder (a file in an existing folder).
    """
    return constraints


@dataclass(frozen=True)
class ServerSettings:
    host: str
    port: int = field(metadata=rule(ge=1, le=65535))
    workers: int = field(metadata=rule(ge=1))
    graceful_timeout_s: float = field(metadata=rule(gt=0))


@dataclass(frozen=True)
class ServiceSettings:
    name: str = field(metadata=rule(nonempty=True))
    version: str
    environment: str


@dataclass(frozen=True)
class OtlpSettings:
    endpoint: str | None = field(metadata=rule(url_schemes=("http", "https")))
    protocol: OtlpProtocol
    headers: Mapping[str, str]
    timeout_s: float = field(metadata=rule(gt=0))


@dataclass(frozen=True)
class TracesSettings:
    enabled: bool
    sampler_ratio: float = field(metadata=rule(ge=0, le=1))
    excluded_paths: tuple[str, ...] = field(metadata=rule(path=True))


@dataclass(frozen=True)
class PrometheusSettings:
    enabled: bool
    path: str = field(metadata=rule(path=True))


@dataclass(frozen=True)
class MetricsSettings:
    enabled: bool
    export_interval_s: float = field(metadata=rule(gt=0))
    prometheus: PrometheusSettings


@dataclass(frozen=True)
class LogFileSettings:
    path: str | None = field(metadata=rule(in_folder=True))
    max_bytes: int = field(metadata=rule(ge=0))
    backup_count: int = field(metadata=rule(ge=0))


@dataclass(frozen=True)
class LogsSettings:
    level: LogLevel
    format: LogFormat
    otlp: bool
    file: LogFileSettings


@dataclass(frozen=True)
class TelemetrySettings:
    enabled: bool
    instrumentation: Instrumentation
    # `auto` (each supported library that is installed, resolved at start-up) or the names.
    instrumentations: Literal["auto"] | tuple[ClientLibrary, ...]
    resource_attributes: Mapping[str, str]
    otlp: OtlpSettings
    traces: TracesSettings
    metrics: MetricsSettings
    logs: LogsSettings


@dataclass(frozen=True)
class CheckSettings:
    """One configured health check: the common keys plus its type's own options."""

    name: str
    type: CheckType
    enabled: bool
    critical: bool
    probes: tuple[Probe, ...]
    timeout_s: float | None = field(metadata=rule(gt=0))
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HealthSettings:
    interval_s: float = field(metadata=rule(gt=0))
    timeout_s: float = field(metadata=rule(gt=0))
    cache_ttl_s: float = field(metadata=rule(gt=0))
    checks: Mapping[str, CheckSettings] = field(default_factory=dict)


@dataclass(frozen=True)
class DatabaseSettings:
    host: str | None
    port: int = field(metadata=rule(ge=1, le=65535))
    database: str
    username: str
    password: str | None
    pool_size: int = field(metadata=rule(ge=1))
    ssl_mode: SslMode


@dataclass(frozen=True)
class RedisSettings:
    url: str | None = field(metadata=rule(url_schemes=("redis", "rediss", "unix")))


@dataclass(frozen=True)
class SecuritySettings:
    api_key: str | None
    api_key_header: str = field(metadata=rule(nonempty=True))
    allowed_origins: tuple[str, ...]
    max_request_body_bytes: int = field(metadata=rule(ge=1))


@dataclass(frozen=True)
class Settings:
    """The effective settings of one aiva process."""

    server: ServerSettings
    service: ServiceSettings
    telemetry: TelemetrySettings
    health: HealthSettings
    database: DatabaseSettings
    redis: RedisSettings
    security: SecuritySettings
    app: Mapping[str, Any] = field(default_factory=dict)


# Keys whose whole value is a secret; any URL-like value also has its password masked.
SECRET_KEYS = frozenset({"database.password", "security.api_key", "telemetry.otlp.headers"})

# Keys every health check accepts; the type's own keys come from CHECK_OPTIONS.
CHECK_COMMON_KEYS = frozenset({"type", "enabled", "critical", "probes", "timeout_s"})


@dataclass(frozen=True)
class OptionRule:
    """The type and constraints of one check-type-specific key."""

    kind: type | tuple[type, ...]
    constraints: Mapping[str, Any] = field(default_factory=dict)
    required: bool = False


_PERCENT = {"ge": 0, "le": 100}
_THRESHOLDS = {
    "warn_percent": OptionRule((int, float), _PERCENT),
    "fail_percent": OptionRule((int, float), _PERCENT),
}

CHECK_OPTIONS: Mapping[str, Mapping[str, OptionRule]] = {
    "postgres": {
        "dsn": OptionRule(str, {"url_schemes": ("postgres", "postgresql")}),
        "query": OptionRule(str, {"nonempty": True}),
    },
    "redis": {"url": OptionRule(str, {"url_schemes": ("redis", "rediss", "unix")})},
    "http": {
        "url": OptionRule(str, {"url_schemes": ("http", "https")}, required=True),
        "expected_status": OptionRule(int, {"ge": 100, "le": 599}),
    },
    "disk": {"path": OptionRule(str, {"nonempty": True}), **_THRESHOLDS},
    "memory": dict(_THRESHOLDS),
    "cpu": dict(_THRESHOLDS),
    "telemetry": {},
    "custom": {},
}


def declares_string(key: str) -> bool:
    """Whether the model declares the dotted key a string (optional, or a choice of strings).

    Entries of a `Mapping[str, str]` table count; keys the model does not know do not.
    """
    parts = key.split(".")
    kind: Any = Settings
    while parts:
        part = parts.pop(0)
        if kind is HealthSettings and part == "checks":
            return len(parts) == 2 and _check_key_is_string(parts[1])
        if dataclasses.is_dataclass(kind):
            hints = typing.get_type_hints(kind)
            if part not in hints:
                return False
            kind = hints[part]
        elif typing.get_origin(kind) is Mapping and typing.get_args(kind) == (str, str):
            return not parts
        else:
            return False
    return _is_string(kind)


def _check_key_is_string(name: str) -> bool:
    if name in CHECK_COMMON_KEYS:
        return _is_string(typing.get_type_hints(CheckSettings)[name])
    kinds = [options[name].kind for options in CHECK_OPTIONS.values() if name in options]
    return bool(kinds) and all(kind is str for kind in kinds)


def _is_string(kind: Any) -> bool:
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (types.UnionType, typing.Union):
        return all(_is_string(a) for a in args if a is not type(None))
    if typing.get_origin(kind) is Literal:
        return all(isinstance(a, str) for a in args)
    return kind is str
