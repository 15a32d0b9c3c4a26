"""Each signal's OTLP target from the general settings and its own (the specification's rules)."""

from __future__ import annotations

import pytest

from aiva.settings import SettingsError, load_settings
from aiva.telemetry.otlp_target import any_target, otlp_target


def _otlp(**environ: str):  # type: ignore[no-untyped-def]
    return load_settings(environ, config_dir="/nonexistent").settings.telemetry.otlp


def test_no_endpoint_no_target() -> None:
    otlp = _otlp()
    assert [otlp_target(otlp, s) for s in ("traces", "metrics", "logs")] == [None, None, None]
    assert not any_target(otlp)


@pytest.mark.parametrize(
    ("protocol", "expected"),
    [
        ("http/protobuf", "http://collector:4318/v1/logs"),
        ("grpc", "http://collector:4318/"),
    ],
)
def test_the_general_endpoint_is_a_base_url_over_http(protocol: str, expected: str) -> None:
    otlp = _otlp(
        OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4318/", OTEL_EXPORTER_OTLP_PROTOCOL=protocol
    )
    target = otlp_target(otlp, "logs")
    assert target is not None and target.endpoint == expected


def test_a_signals_own_endpoint_is_used_as_given_and_its_values_win() -> None:
    otlp = _otlp(
        OTEL_EXPORTER_OTLP_ENDPOINT="https://general:4317",
        OTEL_EXPORTER_OTLP_HEADERS="a=1",
        OTEL_EXPORTER_OTLP_TIMEOUT="5000",
        OTEL_EXPORTER_OTLP_METRICS_ENDPOINT="http://metrics:4318/custom/path",
        OTEL_EXPORTER_OTLP_METRICS_PROTOCOL="http/protobuf",
        OTEL_EXPORTER_OTLP_METRICS_HEADERS="b=2",
        OTEL_EXPORTER_OTLP_METRICS_TIMEOUT="1500",
        OTEL_EXPORTER_OTLP_METRICS_COMPRESSION="gzip",
    )
    metrics, traces = otlp_target(otlp, "metrics"), otlp_target(otlp, "traces")
    assert metrics is not None and traces is not None
    assert (metrics.endpoint, metrics.protocol) == (
        "http://metrics:4318/custom/path",
        "http/protobuf",
    )
    assert (dict(metrics.headers), metrics.timeout_s, metrics.compression) == (
        {"b": "2"},
        1.5,
        "gzip",
    )
    assert (traces.endpoint, traces.protocol) == ("https://general:4317", "grpc")
    assert (dict(traces.headers), traces.timeout_s, traces.compression) == ({"a": "1"}, 5.0, "none")


@pytest.mark.parametrize(
    ("endpoint", "insecure", "expected"),
    [
        ("http://c:4317", None, True),
        ("https://c:4317", None, False),
        ("https://c:4317", "true", False),  # a scheme decides by itself
        ("http://c:4317", "false", True),
        ("c:4317", None, False),  # host:port: TLS unless insecure
        ("c:4317", "true", True),
    ],
)
def test_the_scheme_decides_tls_and_insecure_the_rest(
    endpoint: str, insecure: str | None, expected: bool
) -> None:
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}
    if insecure is not None:
        environ["OTEL_EXPORTER_OTLP_TRACES_INSECURE"] = insecure
    target = otlp_target(_otlp(**environ), "traces")
    assert target is not None and target.insecure is expected


def test_host_port_is_refused_for_http_protobuf() -> None:
    with pytest.raises(SettingsError, match=r"telemetry.otlp.logs.endpoint: must be a URL"):
        _otlp(
            OTEL_EXPORTER_OTLP_LOGS_ENDPOINT="c:4318", OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf"
        )


def test_an_aiva_variable_beats_the_standard_one() -> None:
    otlp = _otlp(
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="http://otel:4318/v1/traces",
        AIVA_TELEMETRY__OTLP__TRACES__ENDPOINT="http://aiva:4318/v1/traces",
    )
    target = otlp_target(otlp, "traces")
    assert target is not None and target.endpoint == "http://aiva:4318/v1/traces"
