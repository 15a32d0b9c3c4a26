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
# auto: the fast layer's hooks that pass their start-up self-test (aiva.fast); off: none.
FastPath = Literal["auto", "off"]
# Client libraries aiva can instrument (one row each in aiva.telemetry.clients.CLIENT_LIBRARIES).
ClientLibrary = Literal["asyncpg", "httpx", "redis"]
CheckType = Literal["postgres", "redis", "http", "disk", "memory", "cpu", "telemetry", "custom"]
# The OpenTelemetry SDK's standard names (OTEL_TRACES_SAMPLER, OTEL_*_EXPORTER, ...).
SamplerName = Literal[
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
]
PushExporter = Literal["otlp", "console"]
OtlpCompression = Literal["none", "gzip"]
ExemplarFilter = Literal["trace_based", "always_on", "always_off"]
Temporality = Literal["cumulative", "delta", "lowmemory"]
HistogramAggregation = Literal["explicit_bucket_histogram", "base2_exponential_bucket_histogram"]


def rule(**constraints: Any) -> dict[str, Any]:
    """Validation constraints for a field's metadata.

    ge, gt, le, nonempty, path (URL paths), url_schemes, in_folder (a file in an existing folder),
    regex (regular expressions),
    boundaries (a table of instrument name: histogram bucket boundaries),
    rate_limit_key, rate_limit_storage, rate_limit_groups (security.rate_limit's forms).
    """
    return constraints


@dataclass(frozen=True)
class ServerLimitsSettings:
    """Connection and request limits (aiva.fast.uvicorn_protocol, aiva.web.shedding)."""

    # A request head (request line and header lines) larger than this: 431.
    max_header_bytes: int = field(metadata=rule(ge=1024))
    # More header lines than this: 431.
    max_headers: int = field(metadata=rule(ge=1))
    # A connection without a complete request head this long after it opened (or after
    # the head's first byte, on a kept-alive connection) is closed.
    header_timeout_s: float = field(metadata=rule(gt=0))
    # An idle kept-alive connection is closed after this long.
    keepalive_timeout_s: float = field(metadata=rule(gt=0))
    # Requests in flight in one process beyond this: 503 with Retry-After (probes
    # exempt); None: no limit.
    max_concurrency: int | None = field(metadata=rule(ge=1))


@dataclass(frozen=True)
class ServerSettings:
    host: str
    port: int = field(metadata=rule(ge=1, le=65535))
    workers: int = field(metadata=rule(ge=1))
    graceful_timeout_s: float = field(metadata=rule(gt=0))
    limits: ServerLimitsSettings


@dataclass(frozen=True)
class ServiceSettings:
    name: str = field(metadata=rule(nonempty=True))
    version: str
    environment: str


@dataclass(frozen=True)
class OtlpSignalSettings:
    """One signal's own OTLP settings (OTEL_EXPORTER_OTLP_<SIGNAL>_*); None: the general one.

    A signal's endpoint is used as given; the general endpoint gets `/v1/<signal>`
    appended over HTTP (aiva.telemetry.otlp_target).
    """

    endpoint: str | None = field(metadata=rule(otlp_endpoint=True))
    protocol: OtlpProtocol | None
    headers: Mapping[str, str] | None
    timeout_s: float | None = field(metadata=rule(gt=0))
    compression: OtlpCompression | None
    certificate: str | None = field(metadata=rule(readable_file=True))
    client_certificate: str | None = field(metadata=rule(readable_file=True))
    client_key: str | None = field(metadata=rule(readable_file=True))
    insecure: bool | None


@dataclass(frozen=True)
class OtlpSettings:
    # A URL; for gRPC also host:port, whose transport security `insecure` decides.
    endpoint: str | None = field(metadata=rule(otlp_endpoint=True))
    protocol: OtlpProtocol
    headers: Mapping[str, str]
    timeout_s: float = field(metadata=rule(gt=0))
    compression: OtlpCompression
    # PEM files: the collector's CA, and the client's certificate and key for mTLS.
    certificate: str | None = field(metadata=rule(readable_file=True))
    client_certificate: str | None = field(metadata=rule(readable_file=True))
    client_key: str | None = field(metadata=rule(readable_file=True))
    # gRPC to a host:port endpoint without TLS (the specification: a scheme decides
    # otherwise, http:// plain and https:// TLS). None: TLS.
    insecure: bool | None
    traces: OtlpSignalSettings
    metrics: OtlpSignalSettings
    logs: OtlpSignalSettings


@dataclass(frozen=True)
class BatchSettings:
    """A batch processor's queue (OTEL_BSP_* for spans, OTEL_BLRP_* for log records)."""

    schedule_delay_s: float = field(metadata=rule(gt=0))
    export_timeout_s: float = field(metadata=rule(gt=0))
    max_queue_size: int = field(metadata=rule(ge=1))
    max_export_batch_size: int = field(metadata=rule(ge=1))


@dataclass(frozen=True)
class TracesSettings:
    enabled: bool
    sampler: SamplerName
    # The *traceidratio samplers' ratio (OTEL_TRACES_SAMPLER_ARG); the others ignore it.
    sampler_ratio: float = field(metadata=rule(ge=0, le=1))
    excluded_paths: tuple[str, ...] = field(metadata=rule(path=True))
    # Regular expressions searched in each request's full URL (OTEL_PYTHON_EXCLUDED_URLS).
    excluded_urls: tuple[str, ...] = field(metadata=rule(regex=True))
    exporters: tuple[PushExporter, ...] = field(metadata=rule(unique=True))
    batch: BatchSettings


@dataclass(frozen=True)
class PrometheusSettings:
    enabled: bool
    path: str = field(metadata=rule(path=True))


@dataclass(frozen=True)
class MetricsSettings:
    enabled: bool
    export_interval_s: float = field(metadata=rule(gt=0))
    # None: the OTLP timeout of the metrics signal.
    export_timeout_s: float | None = field(metadata=rule(gt=0))
    # Push exporters; Prometheus (pull) is switched by prometheus.enabled.
    exporters: tuple[PushExporter, ...] = field(metadata=rule(unique=True))
    exemplar_filter: ExemplarFilter
    temporality: Temporality
    histogram_aggregation: HistogramAggregation
    prometheus: PrometheusSettings
    # Explicit bucket boundaries per histogram instrument name (both readers).
    buckets: Mapping[str, tuple[float, ...]] = field(metadata=rule(boundaries=True))


@dataclass(frozen=True)
class LogFileSettings:
    path: str | None = field(metadata=rule(in_folder=True))
    max_bytes: int = field(metadata=rule(ge=0))
    backup_count: int = field(metadata=rule(ge=0))


@dataclass(frozen=True)
class ScrubSettings:
    # Regular expressions masked in log records on top of the built-in list
    # (aiva.settings.masking); the whole match becomes ****.
    patterns: tuple[str, ...] = field(metadata=rule(regex=True))


@dataclass(frozen=True)
class LogsSettings:
    level: LogLevel
    format: LogFormat
    otlp: bool
    file: LogFileSettings
    batch: BatchSettings
    scrub: ScrubSettings


@dataclass(frozen=True)
class SpanLimitsSettings:
    """The SDK's span limits; None: the general limit (or the SDK's default)."""

    attribute_value_length: int | None = field(metadata=rule(ge=0))
    attribute_count: int | None = field(metadata=rule(ge=0))
    event_count: int | None = field(metadata=rule(ge=0))
    link_count: int | None = field(metadata=rule(ge=0))
    event_attribute_count: int | None = field(metadata=rule(ge=0))
    link_attribute_count: int | None = field(metadata=rule(ge=0))


@dataclass(frozen=True)
class LogLimitsSettings:
    attribute_value_length: int | None = field(metadata=rule(ge=0))
    attribute_count: int | None = field(metadata=rule(ge=0))


@dataclass(frozen=True)
class LimitsSettings:
    """Attribute limits (OTEL_ATTRIBUTE_*, OTEL_SPAN_*, OTEL_LOGRECORD_*); None: no limit
    on value length, the SDK's 128 attributes."""

    attribute_value_length: int | None = field(metadata=rule(ge=0))
    attribute_count: int | None = field(metadata=rule(ge=0))
    spans: SpanLimitsSettings
    logs: LogLimitsSettings


@dataclass(frozen=True)
class TelemetrySettings:
    enabled: bool
    instrumentation: Instrumentation
    # `auto` (each supported library that is installed, resolved at start-up) or the names.
    instrumentations: Literal["auto"] | tuple[ClientLibrary, ...]
    fast_path: FastPath
    resource_attributes: Mapping[str, str]
    # Context propagation formats, in order (OTEL_PROPAGATORS); () propagates nothing.
    propagators: tuple[str, ...] = field(metadata=rule(propagators=True, unique=True))
    limits: LimitsSettings
    otlp: OtlpSettings
    traces: TracesSettings
    metrics: MetricsSettings
    logs: LogsSettings
    http: HttpSettings


@dataclass(frozen=True)
class HttpSettings:
    """The HTTP server conventions' choices (aiva.telemetry.http)."""

    # Methods reported as themselves, any other as `_OTHER`
    # (OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS).
    known_methods: tuple[str, ...] = field(metadata=rule(http_tokens=True))
    # server.address/port and url.scheme from Forwarded / X-Forwarded-Host / -Proto.
    trust_proxy_headers: bool
    # http.server.request.body.size and http.server.response.body.size.
    body_size_metrics: bool


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
class RateLimitSettings:
    """Requests a client may make in a sliding window (aiva.web.rate_limit)."""

    enabled: bool
    requests: int = field(metadata=rule(ge=1))
    # Whole seconds: RateLimit-Policy's `w` has no fractions.
    window_s: int = field(metadata=rule(ge=1))
    # `client` (the peer address) or `header:NAME` (a client id a proxy sets).
    key: str = field(metadata=rule(rate_limit_key=True))
    # `memory` (each process its own) or a redis:// URL (shared by workers and pods).
    storage: str = field(metadata=rule(rate_limit_storage=True))
    # Path prefix: a limit of its own in the limits library's notation ("5/minute").
    groups: Mapping[str, str] = field(metadata=rule(rate_limit_groups=True))


@dataclass(frozen=True)
class SecuritySettings:
    # None: no key asked for; an empty one is an error (it would turn the check off).
    api_key: str | None = field(metadata=rule(nonempty=True))
    api_key_header: str = field(metadata=rule(nonempty=True))
    allowed_origins: tuple[str, ...]
    max_request_body_bytes: int = field(metadata=rule(ge=1))
    rate_limit: RateLimitSettings


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
SECRET_KEYS = frozenset(
    {
        "database.password",
        "security.api_key",
        "telemetry.otlp.headers",
        "telemetry.otlp.traces.headers",
        "telemetry.otlp.metrics.headers",
        "telemetry.otlp.logs.headers",
    }
)

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
