"""The OpenTelemetry SDK's standard variables: the settings key each one sets (layer 5),
and the ones aiva deliberately does not support (named in one WARNING at start-up).

Every variable of the SDK's `environment_variables` modules is in one of the two tables
(tests/conformance/test_environment_variables.py holds aiva to that). Units follow the
specification: durations are milliseconds (OTEL_EXPORTER_OTLP_TIMEOUT included, which the
Python SDK's own exporters read as seconds) and become the `_s` keys' seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from typing import Any
from urllib.parse import unquote

# text -> {dotted key: value}; raises VariableError when the text is not a valid value.
Parse = Callable[[str], dict[str, Any]]


class VariableError(ValueError):
    """A standard variable's value that cannot mean anything: `message` says why."""

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        # For k=v lists: which entry (secret values are not shown, only where they are).
        self.position = position


@dataclass(frozen=True)
class Variable:
    """One honoured variable: the keys it sets (for `config show --sources` and the README)."""

    keys: tuple[str, ...]
    parse: Parse


def _text(key: str) -> Variable:
    return Variable((key,), lambda text: {key: text.strip()})


def _lower(key: str) -> Variable:
    # The specification's enumerations are case-insensitive.
    return Variable((key,), lambda text: {key: text.strip().lower()})


def _millis(key: str) -> Variable:
    def parse(text: str) -> dict[str, Any]:
        try:
            millis = float(text.strip())
        except ValueError:
            raise VariableError("must be a number of milliseconds") from None
        return {key: millis / 1000}

    return Variable((key,), parse)


def _whole(key: str) -> Variable:
    def parse(text: str) -> dict[str, Any]:
        try:
            return {key: int(text.strip())}
        except ValueError:
            raise VariableError("must be a whole number") from None

    return Variable((key,), parse)


def _boolean(key: str) -> Variable:
    def parse(text: str) -> dict[str, Any]:
        value = text.strip().lower()
        if value not in ("true", "false"):
            raise VariableError("must be true or false")
        return {key: value == "true"}

    return Variable((key,), parse)


def _pairs(key: str) -> Variable:
    return Variable((key,), lambda text: {key: parse_pairs(text)})


def _names(text: str) -> list[str]:
    """A comma-separated list of names, lower case; `none` alone means the empty list."""
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    if "none" in names and len(names) > 1:
        raise VariableError("none cannot be combined with other names")
    return [] if names == ["none"] else names


def _list(key: str) -> Variable:
    return Variable((key,), lambda text: {key: _names(text)})


def _patterns(key: str) -> Variable:
    # The contrib instrumentations' form: comma-separated regular expressions.
    return Variable((key,), lambda text: {key: [p.strip() for p in text.split(",") if p.strip()]})


def _methods(key: str) -> Variable:
    # Case-sensitive HTTP method names, comma-separated; an empty value is unset (as the
    # specification has every empty variable), not "no method is known".
    def parse(text: str) -> dict[str, Any]:
        methods = [m.strip() for m in text.split(",") if m.strip()]
        return {key: methods} if methods else {}

    return Variable((key,), parse)


def _metrics_exporters(text: str) -> dict[str, Any]:
    names = _names(text)
    return {
        "telemetry.metrics.exporters": [n for n in names if n != "prometheus"],
        "telemetry.metrics.prometheus.enabled": "prometheus" in names,
    }


def _logs_exporters(text: str) -> dict[str, Any]:
    # aiva's console line is its logging output (telemetry.logs.format), there with or
    # without `console`; what this variable switches is the OTLP export.
    names = _names(text)
    unknown = sorted(set(names) - {"otlp", "console"})
    if unknown:
        raise VariableError(f"names unknown exporters {', '.join(unknown)} (otlp, console, none)")
    return {"telemetry.logs.otlp": "otlp" in names}


def _sdk_disabled(text: str) -> dict[str, Any]:
    # The specification: only a case-insensitive "true" disables the SDK.
    return {"telemetry.enabled": text.strip().lower() != "true"}


def _sampler_arg(text: str) -> dict[str, Any]:
    try:
        return {"telemetry.traces.sampler_ratio": float(text.strip())}
    except ValueError:
        raise VariableError("must be a number between 0 and 1") from None


def parse_pairs(text: str) -> dict[str, str]:
    """The `k1=v1,k2=v2` form of OTEL_RESOURCE_ATTRIBUTES and OTEL_EXPORTER_OTLP_HEADERS."""
    pairs: dict[str, str] = {}
    for position, part in enumerate(text.split(","), start=1):
        item = part.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise VariableError(f"malformed entry {item!r}, want k=v,...", position)
        pairs[unquote(name.strip())] = unquote(value.strip())
    return pairs


def _otlp_variables() -> dict[str, Variable]:
    """OTEL_EXPORTER_OTLP_* and each signal's OTEL_EXPORTER_OTLP_<SIGNAL>_*."""
    variables: dict[str, Variable] = {}
    for signal in ("", "traces", "metrics", "logs"):
        name = f"OTEL_EXPORTER_OTLP_{signal.upper()}_" if signal else "OTEL_EXPORTER_OTLP_"
        table = f"telemetry.otlp.{signal}." if signal else "telemetry.otlp."
        variables |= {
            f"{name}ENDPOINT": _text(f"{table}endpoint"),
            f"{name}PROTOCOL": _lower(f"{table}protocol"),
            f"{name}HEADERS": _pairs(f"{table}headers"),
            f"{name}TIMEOUT": _millis(f"{table}timeout_s"),
            f"{name}COMPRESSION": _lower(f"{table}compression"),
            f"{name}CERTIFICATE": _text(f"{table}certificate"),
            f"{name}CLIENT_CERTIFICATE": _text(f"{table}client_certificate"),
            f"{name}CLIENT_KEY": _text(f"{table}client_key"),
            f"{name}INSECURE": _boolean(f"{table}insecure"),
        }
    return variables


def _batch_variables(prefix: str, table: str) -> dict[str, Variable]:
    return {
        f"{prefix}_SCHEDULE_DELAY": _millis(f"{table}.schedule_delay_s"),
        f"{prefix}_EXPORT_TIMEOUT": _millis(f"{table}.export_timeout_s"),
        f"{prefix}_MAX_QUEUE_SIZE": _whole(f"{table}.max_queue_size"),
        f"{prefix}_MAX_EXPORT_BATCH_SIZE": _whole(f"{table}.max_export_batch_size"),
    }


# Later entries win where two set the same key (an instrumentation's own excluded URLs
# over the general ones, as the contrib instrumentations read them).
OTEL_VARIABLES: Mapping[str, Variable] = {
    "OTEL_SDK_DISABLED": Variable(("telemetry.enabled",), _sdk_disabled),
    "OTEL_SERVICE_NAME": _text("service.name"),
    "OTEL_RESOURCE_ATTRIBUTES": _pairs("telemetry.resource_attributes"),
    "OTEL_TRACES_SAMPLER": _lower("telemetry.traces.sampler"),
    "OTEL_TRACES_SAMPLER_ARG": Variable(("telemetry.traces.sampler_ratio",), _sampler_arg),
    "OTEL_PROPAGATORS": _list("telemetry.propagators"),
    "OTEL_TRACES_EXPORTER": _list("telemetry.traces.exporters"),
    "OTEL_METRICS_EXPORTER": Variable(
        ("telemetry.metrics.exporters", "telemetry.metrics.prometheus.enabled"),
        _metrics_exporters,
    ),
    "OTEL_LOGS_EXPORTER": Variable(("telemetry.logs.otlp",), _logs_exporters),
    **_otlp_variables(),
    "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": _lower("telemetry.metrics.temporality"),
    "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION": _lower(
        "telemetry.metrics.histogram_aggregation"
    ),
    "OTEL_METRIC_EXPORT_INTERVAL": _millis("telemetry.metrics.export_interval_s"),
    "OTEL_METRIC_EXPORT_TIMEOUT": _millis("telemetry.metrics.export_timeout_s"),
    "OTEL_METRICS_EXEMPLAR_FILTER": _lower("telemetry.metrics.exemplar_filter"),
    **_batch_variables("OTEL_BSP", "telemetry.traces.batch"),
    **_batch_variables("OTEL_BLRP", "telemetry.logs.batch"),
    "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": _whole("telemetry.limits.attribute_value_length"),
    "OTEL_ATTRIBUTE_COUNT_LIMIT": _whole("telemetry.limits.attribute_count"),
    "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT": _whole(
        "telemetry.limits.spans.attribute_value_length"
    ),
    "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": _whole("telemetry.limits.spans.attribute_count"),
    "OTEL_SPAN_EVENT_COUNT_LIMIT": _whole("telemetry.limits.spans.event_count"),
    "OTEL_SPAN_LINK_COUNT_LIMIT": _whole("telemetry.limits.spans.link_count"),
    "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT": _whole("telemetry.limits.spans.event_attribute_count"),
    "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT": _whole("telemetry.limits.spans.link_attribute_count"),
    "OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT": _whole(
        "telemetry.limits.logs.attribute_value_length"
    ),
    "OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT": _whole("telemetry.limits.logs.attribute_count"),
    "OTEL_PYTHON_EXCLUDED_URLS": _patterns("telemetry.traces.excluded_urls"),
    "OTEL_PYTHON_STARLETTE_EXCLUDED_URLS": _patterns("telemetry.traces.excluded_urls"),
    "OTEL_PYTHON_FASTAPI_EXCLUDED_URLS": _patterns("telemetry.traces.excluded_urls"),
    "OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS": _methods("telemetry.http.known_methods"),
}


# Standard variables aiva does not honour, each named in one start-up WARNING rather
# than ignored, with the reason the README gives. The value's second item: the part of
# a comma-separated value that makes the variable unsupported, or None for any value.
UNSUPPORTED_OTEL_VARIABLES: Mapping[str, tuple[str, str | None]] = {
    "OTEL_CONFIG_FILE": ("declarative configuration: aiva's settings files are its form", None),
    "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": (
        "aiva detects host, process and instance itself; add attributes with "
        "OTEL_RESOURCE_ATTRIBUTES",
        None,
    ),
    "OTEL_EXPORTER_PROMETHEUS_HOST": ("/metrics is served on the service's own port", None),
    "OTEL_EXPORTER_PROMETHEUS_PORT": ("/metrics is served on the service's own port", None),
    "OTEL_EXPORTER_ZIPKIN_ENDPOINT": ("no Zipkin exporter: OTLP, console or none", None),
    "OTEL_EXPORTER_ZIPKIN_TIMEOUT": ("no Zipkin exporter: OTLP, console or none", None),
    "OTEL_LOG_LEVEL": ("the SDK's own log level: set telemetry.logs.level", None),
    "OTEL_PYTHON_CONTEXT": ("aiva runs on the default contextvars context", None),
    "OTEL_PYTHON_ID_GENERATOR": ("aiva uses the SDK's random id generator", None),
    "OTEL_PYTHON_TRACER_PROVIDER": ("aiva builds its own providers", None),
    "OTEL_PYTHON_LOGGER_PROVIDER": ("aiva builds its own providers", None),
    "OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED": ("aiva sets up logging itself", None),
    # Read by the SDK's OTLP exporters themselves, behind aiva's settings: in force, but
    # no settings key shows them.
    **{
        f"OTEL_PYTHON_EXPORTER_OTLP_{transport}{signal}_CREDENTIAL_PROVIDER": (
            "read by the SDK's exporter itself (an entry point giving credentials); the "
            "certificate settings win over it",
            None,
        )
        for transport in ("GRPC", "HTTP")
        for signal in ("", "_TRACES", "_METRICS", "_LOGS")
    },
    "OTEL_PYTHON_EXPORTER_OTLP_GRPC_RETRYABLE_ERROR_CODES": (
        "read by the SDK's gRPC exporters themselves; not a settings key",
        None,
    ),
    "OTEL_PYTHON_METER_PROVIDER": ("aiva builds its own providers", None),
    "OTEL_PYTHON_TRACER_CONFIGURATOR": ("aiva builds its own providers", None),
    "OTEL_PYTHON_METER_CONFIGURATOR": ("aiva builds its own providers", None),
    "OTEL_PYTHON_LOGGER_CONFIGURATOR": ("aiva builds its own providers", None),
    "OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED": (
        "read by the SDK itself, whose own metrics then come on top of aiva.telemetry.*; "
        "not a settings key",
        None,
    ),
    # The contrib httpx instrumentor's, which aiva's own httpx client spans replace
    # (aiva.telemetry.httpx_client).
    "OTEL_PYTHON_HTTPX_EXCLUDED_URLS": ("aiva's httpx client spans have no exclusion list", None),
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST": (
        "aiva's httpx client spans capture no headers",
        None,
    ),
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_RESPONSE": (
        "aiva's httpx client spans capture no headers",
        None,
    ),
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS": (
        "aiva's httpx client spans capture no headers",
        None,
    ),
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST": (
        "aiva's server spans capture no headers",
        None,
    ),
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE": (
        "aiva's server spans capture no headers",
        None,
    ),
    "OTEL_PYTHON_INSTRUMENTATION_HTTP_CAPTURE_ALL_METHODS": (
        "aiva reports unknown methods as _OTHER, as the conventions say; list yours in "
        "OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS",
        None,
    ),
    # opentelemetry-instrument's own: aiva builds the pipeline itself under it too.
    "OTEL_PYTHON_DISTRO": ("aiva builds its own providers", None),
    "OTEL_PYTHON_CONFIGURATOR": ("aiva builds its own providers", None),
    "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": (
        "read by opentelemetry-instrument alone; aiva's client spans are chosen by "
        "telemetry.instrumentations",
        None,
    ),
    "OTEL_PYTHON_AUTO_INSTRUMENTATION_EXPERIMENTAL_GEVENT_PATCH": (
        "aiva runs on asyncio, not gevent",
        None,
    ),
    # The contrib logging instrumentation's: aiva's log records always carry the trace
    # context, in its own format (telemetry.logs.*).
    "OTEL_PYTHON_LOG_AUTO_INSTRUMENTATION": ("aiva sets up logging itself", None),
    "OTEL_PYTHON_LOG_CODE_ATTRIBUTES": ("aiva sets up logging itself", None),
    "OTEL_PYTHON_LOG_CORRELATION": ("aiva's log records always carry the trace context", None),
    "OTEL_PYTHON_LOG_FORMAT": ("set telemetry.logs.format", None),
    "OTEL_PYTHON_LOG_HANDLER_LEVEL": ("set telemetry.logs.level", None),
    "OTEL_PYTHON_LOG_LEVEL": ("set telemetry.logs.level", None),
    "OTEL_PYTHON_SYSTEM_METRICS_EXCLUDED_METRICS": (
        "aiva chooses the process and system metrics on the current conventions",
        None,
    ),
    "OTEL_SEMCONV_STABILITY_OPT_IN": (
        "aiva's HTTP spans follow the stable conventions only (database/dup is honoured)",
        "http/dup",
    ),
}


def unsupported_variables(environ: Mapping[str, str]) -> tuple[str, ...]:
    """The standard variables set in `environ` that aiva does not honour."""
    found = []
    for variable, (_, part) in UNSUPPORTED_OTEL_VARIABLES.items():
        value = environ.get(variable, "").strip()
        if value and (part is None or part in {p.strip() for p in value.split(",")}):
            found.append(variable)
    return tuple(found)


@cache
def installed_propagators() -> frozenset[str]:
    """The propagator names OTEL_PROPAGATORS may use: the `opentelemetry_propagator` entry
    points of installed packages (how the API itself resolves them)."""
    return frozenset(e.name for e in entry_points(group="opentelemetry_propagator"))


def propagators_problem(environ: Mapping[str, str]) -> str | None:
    """What is wrong with OTEL_PROPAGATORS, as a settings error line, or None.

    Checked before anything imports `opentelemetry.propagate`: the API reads this
    variable when that module is imported and raises a bare ValueError, with a
    traceback, for a name no installed package provides.
    """
    text = environ.get("OTEL_PROPAGATORS", "")
    if not text.strip():
        return None  # unset, or empty (which the API takes as unset too)
    try:
        names = _names(text)
    except VariableError as error:
        return (
            f"telemetry.propagators: {error.message} (from environment variable OTEL_PROPAGATORS)"
        )
    known = installed_propagators()
    unknown = [name for name in names if name not in known]
    if not unknown:
        return None
    return (
        f"telemetry.propagators: must name installed propagators ({', '.join(sorted(known))}), "
        f"got {', '.join(unknown)} (from environment variable OTEL_PROPAGATORS)"
    )


def unsupported_notice(environ: Mapping[str, str]) -> str | None:
    """The one start-up line naming the standard variables set that aiva does not take
    as settings, each with the reason (None when there are none)."""
    found = unsupported_variables(environ)
    if not found:
        return None
    named = "; ".join(f"{v} ({UNSUPPORTED_OTEL_VARIABLES[v][0]})" for v in found)
    return f"standard variables not supported by aiva as settings: {named}"


# Durations the specification gives in milliseconds; a value this small was most likely
# meant as seconds (as the Python SDK's own exporters read OTEL_EXPORTER_OTLP_TIMEOUT).
_SMALL_MILLIS = 100


def unit_notices(environ: Mapping[str, str]) -> tuple[str, ...]:
    """A line for each millisecond variable set below 100 ms (honoured as given)."""
    lines = []
    for variable, spec in OTEL_VARIABLES.items():
        if not spec.keys[0].endswith("_s"):
            continue
        try:
            millis = float(environ.get(variable, "").strip())
        except ValueError:
            continue
        if 0 < millis < _SMALL_MILLIS:
            lines.append(
                f"{variable}={environ[variable].strip()} is {millis:g} ms: the specification's "
                "unit is milliseconds (the Python SDK's exporters read seconds)"
            )
    return tuple(lines)
