"""The standard OTEL_* variables' effects on a real `aiva serve`, seen at a real collector
(rotel) or on /metrics; a variable aiva does not support is named at start-up."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from infra.capture import HeadCapture
from infra.proxy import TcpProxy
from infra.require import require_binary
from infra.rotel import Record, Rotel
from infra.service import AivaService
from infra.tls import INSTALL_HINT, TlsTerminator, make_certificates

ITEM_SPAN = "GET /api/demo/items/{item_id}"
SAMPLED_PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
QUIET = {
    "AIVA_HEALTH__CHECKS__CPU__ENABLED": "false",
    "OTEL_METRIC_EXPORT_INTERVAL": "500",
    "OTEL_EXPORTER_OTLP_TIMEOUT": "2000",
}


def _serve(aiva_service: Callable[..., AivaService], **env: str) -> AivaService:
    return aiva_service(env={**QUIET, **env})


def _serve_to(
    collector: Rotel, aiva_service: Callable[..., AivaService], **env: str
) -> AivaService:
    """A service exporting every signal to `collector` over gRPC."""
    return _serve(aiva_service, OTEL_EXPORTER_OTLP_ENDPOINT=collector.grpc_endpoint, **env)


def _request_items(service: AivaService, count: int = 3, **headers: str) -> None:
    with service.client() as client:
        for n in range(count):
            assert client.get(f"/api/demo/items/{n}", headers=headers).status_code == 200


def _item_spans(collector: Rotel) -> list[Record]:
    return [s for s in collector.spans() if s["name"] == ITEM_SPAN]


def _access_lines(collector: Rotel) -> list[Record]:
    return [r for r in collector.log_records() if r["scope"] == "aiva.access"]


def test_per_signal_endpoints_split_the_signals_between_two_collectors(
    rotel: Callable[[], Rotel], aiva_service: Callable[..., AivaService]
) -> None:
    """Each signal's own endpoint is used as given (no general endpoint at all)."""
    spans_to, rest_to = rotel(), rotel()
    service = _serve(
        aiva_service,
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"{spans_to.http_endpoint}/v1/traces",
        OTEL_EXPORTER_OTLP_METRICS_ENDPOINT=f"{rest_to.http_endpoint}/v1/metrics",
        # Another protocol for one signal: gRPC, its endpoint as given too.
        OTEL_EXPORTER_OTLP_LOGS_PROTOCOL="grpc",
        OTEL_EXPORTER_OTLP_LOGS_ENDPOINT=rest_to.grpc_endpoint,
    )
    _request_items(service)
    spans_to.wait_for_spans(lambda s: s["name"] == ITEM_SPAN, count=3)
    rest_to.wait_for_metric("http.server.request.duration")
    rest_to.wait_for_log_records(lambda r: r["scope"] == "aiva.access", count=3)
    service.stop()
    assert spans_to.metric_names() == set() and spans_to.log_records() == []
    assert _item_spans(rest_to) == []


def test_the_general_endpoint_gets_the_signal_path_over_http(
    rotel: Callable[[], Rotel], aiva_service: Callable[..., AivaService]
) -> None:
    collector = rotel()
    service = _serve(
        aiva_service,
        OTEL_EXPORTER_OTLP_ENDPOINT=collector.http_endpoint + "/",
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
    )
    _request_items(service, 1)
    collector.wait_for_spans(lambda s: s["name"] == ITEM_SPAN)
    collector.wait_for_metric("http.server.request.duration")
    collector.wait_for_log_records(lambda r: r["scope"] == "aiva.access")


@pytest.mark.parametrize(
    ("sampler", "argument", "traceparent", "exported"),
    [
        ("always_off", None, None, False),
        ("always_on", "0", None, True),  # the argument means nothing to always_on
        ("traceidratio", "0", SAMPLED_PARENT, False),  # not parent-based
        ("parentbased_traceidratio", "0", SAMPLED_PARENT, True),
        ("parentbased_traceidratio", "0", None, False),
        ("parentbased_always_off", None, SAMPLED_PARENT, True),
    ],
)
def test_the_sampler_and_its_argument_decide_what_is_exported(
    rotel: Callable[[], Rotel],
    aiva_service: Callable[..., AivaService],
    sampler: str,
    argument: str | None,
    traceparent: str | None,
    exported: bool,
) -> None:
    collector = rotel()
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.grpc_endpoint, "OTEL_TRACES_SAMPLER": sampler}
    if argument is not None:
        env["OTEL_TRACES_SAMPLER_ARG"] = argument
    service = _serve(aiva_service, **env)
    _request_items(service, 3, **({"traceparent": traceparent} if traceparent else {}))
    # The access lines travel the same way: once they are in, so are any spans.
    collector.wait_for_log_records(lambda r: r["scope"] == "aiva.access", count=3)
    service.stop()
    assert len(_item_spans(collector)) == (3 if exported else 0)


def test_traces_exporter_none_exports_no_span_but_the_rest(
    rotel: Callable[[], Rotel], aiva_service: Callable[..., AivaService]
) -> None:
    collector = rotel()
    service = _serve_to(
        collector,
        aiva_service,
        OTEL_TRACES_EXPORTER="none",
    )
    _request_items(service, 2)
    access = collector.wait_for_log_records(lambda r: r["scope"] == "aiva.access", count=2)
    collector.wait_for_metric("http.server.request.duration")
    service.stop()
    assert _item_spans(collector) == []
    # Spans still exist (sampled, recording) for the logs' correlation.
    assert all(r["trace_id"] for r in access)


def test_console_exporters_write_spans_and_metrics_to_stdout(
    aiva_service: Callable[..., AivaService],
) -> None:
    service = _serve(aiva_service, OTEL_TRACES_EXPORTER="console", OTEL_METRICS_EXPORTER="console")
    _request_items(service, 1)
    time.sleep(1.5)  # a metric export interval (500 ms) and more
    service.stop()
    out = service.log_text()
    assert f'"name": "{ITEM_SPAN}"' in out  # the SDK's ConsoleSpanExporter JSON
    assert '"name": "http.server.request.duration"' in out  # ConsoleMetricExporter's
    with pytest.raises(httpx.HTTPError):  # stopped: nothing left to ask
        httpx.get(service.base_url + "/metrics", timeout=0.5)


@pytest.mark.parametrize(
    ("exporters", "at_collector", "scraped"),
    [("otlp", True, False), ("prometheus", False, True), ("none", False, False)],
)
def test_metrics_exporter_chooses_push_and_pull(
    rotel: Callable[[], Rotel],
    aiva_service: Callable[..., AivaService],
    exporters: str,
    at_collector: bool,
    scraped: bool,
) -> None:
    collector = rotel()
    service = _serve_to(
        collector,
        aiva_service,
        OTEL_METRICS_EXPORTER=exporters,
    )
    _request_items(service, 1)
    with service.client() as client:
        metrics = client.get("/metrics")
    assert (metrics.status_code == 200) is scraped
    if scraped:
        assert "http_server_request_duration_seconds_count" in metrics.text
    collector.wait_for_log_records(lambda r: r["scope"] == "aiva.access")
    time.sleep(1.0)  # two export intervals
    service.stop()
    assert ("http.server.request.duration" in collector.metric_names()) is at_collector


def test_logs_exporter_none_keeps_log_records_off_the_collector(
    rotel: Callable[[], Rotel], aiva_service: Callable[..., AivaService]
) -> None:
    collector = rotel()
    service = _serve_to(collector, aiva_service, OTEL_LOGS_EXPORTER="none")
    _request_items(service, 2)
    collector.wait_for_spans(lambda s: s["name"] == ITEM_SPAN, count=2)
    service.stop()
    assert collector.log_records() == []
    assert '"logger":"aiva.access"' in service.log_text()  # the console line stays


def test_metric_export_interval_paces_the_pushes(
    rotel: Callable[[], Rotel], aiva_service: Callable[..., AivaService]
) -> None:
    fast, slow = rotel(), rotel()
    for collector, interval in ((fast, "300"), (slow, "60000")):
        service = _serve(
            aiva_service,
            OTEL_EXPORTER_OTLP_ENDPOINT=collector.grpc_endpoint,
            OTEL_METRIC_EXPORT_INTERVAL=interval,
        )
        time.sleep(2.5)
        service.terminate()  # the shutdown flush pushes once more
    pushes = [
        sum(1 for m in c.metrics() if m["name"] == "aiva.telemetry.exported") for c in (fast, slow)
    ]
    assert pushes[1] <= 2, pushes  # only the shutdown's flush and final collection
    assert pushes[0] >= pushes[1] + 4, pushes  # and one every 300 ms before


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "12"),
        ("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "12"),
        ("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "3"),
        ("OTEL_ATTRIBUTE_COUNT_LIMIT", "3"),
    ],
)
def test_attribute_limits_cut_values_and_counts(
    rotel: Callable[[], Rotel],
    aiva_service: Callable[..., AivaService],
    variable: str,
    value: str,
) -> None:
    collector = rotel()
    service = _serve_to(collector, aiva_service, **{variable: value})
    _request_items(service, 1)
    [span] = collector.wait_for_spans(lambda s: s["name"] == ITEM_SPAN)
    if variable.endswith("COUNT_LIMIT"):
        assert len(span["attributes"]) == 3
    else:
        assert len(span["attributes"]) > 3
        assert span["attributes"]["url.path"] == "/api/demo/it"
        assert all(len(v) <= 12 for v in span["attributes"].values() if isinstance(v, str))


def test_metrics_temporality_preference_delta(
    rotel: Callable[[], Rotel], aiva_service: Callable[..., AivaService]
) -> None:
    collector = rotel()
    service = _serve_to(
        collector,
        aiva_service,
        OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE="delta",
    )
    _request_items(service, 1)
    collector.wait_for_metric("http.server.request.duration")
    service.stop()
    text = collector.output()
    block = text[text.index("-> Name: http.server.request.duration") :][:600]
    assert "AggregationTemporality: AGGREGATION_TEMPORALITY_DELTA" in block, block


def test_an_unsupported_variable_is_named_in_one_warning(
    aiva_service: Callable[..., AivaService],
) -> None:
    service = _serve(
        aiva_service,
        OTEL_EXPORTER_ZIPKIN_ENDPOINT="http://zipkin:9411",
        OTEL_PYTHON_ID_GENERATOR="xray",
    )
    service.stop()
    warnings = [
        line for line in service.log_text().splitlines() if "OTEL_PYTHON_ID_GENERATOR" in line
    ]
    assert len(warnings) == 1
    assert "OTEL_EXPORTER_ZIPKIN_ENDPOINT" in warnings[0] and '"WARNING"' in warnings[0]


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("OTEL_TRACES_SAMPLER", "jaeger_remote", "telemetry.traces.sampler: must be one of"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "soon", "must be a number of milliseconds"),
        ("OTEL_PROPAGATORS", "tracecontext,xray", "must name installed propagators"),
        ("OTEL_EXPORTER_OTLP_INSECURE", "maybe", "must be true or false"),
        ("OTEL_TRACES_EXPORTER", "zipkin", "telemetry.traces.exporters: must be a list"),
    ],
)
def test_an_invalid_value_stops_start_up_naming_the_variable(
    aiva_service: Callable[..., AivaService], variable: str, value: str, message: str
) -> None:
    service = aiva_service(env={variable: value}, start=False)
    service.spawn()
    assert service.wait(20) == 2
    out = service.log_text()
    assert message in out and f"environment variable {variable}" in out, out


def test_compression_gzip_shrinks_what_reaches_the_collector(
    rotel: Callable[[], Rotel],
    aiva_service: Callable[..., AivaService],
    tcp_proxy: Callable[..., TcpProxy],
) -> None:
    """The same requests through a counting proxy, with and without gzip."""
    collector = rotel()
    sent: dict[str, int] = {}
    for compression in ("none", "gzip"):
        proxy = tcp_proxy(collector.host, collector.http_port)
        service = _serve(
            aiva_service,
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://{proxy.address}",
            OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
            OTEL_EXPORTER_OTLP_TRACES_COMPRESSION=compression,
            OTEL_METRICS_EXPORTER="none",
            OTEL_LOGS_EXPORTER="none",
        )
        _request_items(service, 20)
        service.stop()
        sent[compression] = proxy.stats.bytes_up
    assert len(_item_spans(collector)) == 40  # both runs arrived whole
    assert sent["gzip"] < sent["none"] / 2, sent


@pytest.mark.parametrize(
    ("variable", "timeout_ms"),
    [
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "300"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "6000"),
        ("OTEL_BSP_EXPORT_TIMEOUT", "300"),  # bounds the 6 s OTLP timeout
        ("OTEL_BLRP_EXPORT_TIMEOUT", "300"),  # the same for log records
    ],
)
def test_the_otlp_timeout_bounds_a_hanging_collector(
    aiva_service: Callable[..., AivaService],
    tcp_proxy: Callable[..., TcpProxy],
    variable: str,
    timeout_ms: str,
) -> None:
    """A black-holed collector: the shutdown flush waits for the exporter's timeout."""
    proxy = tcp_proxy("127.0.0.1", 9, mode="blackhole")  # never answers
    service = _serve(
        aiva_service,
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://{proxy.address}",
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        **{"OTEL_EXPORTER_OTLP_TIMEOUT": "6000", variable: timeout_ms},
        OTEL_METRICS_EXPORTER="none",
        # The signal the variable is about exports; the other exports nothing.
        **(
            {"OTEL_TRACES_EXPORTER": "none"}
            if variable.startswith("OTEL_BLRP")
            else {"OTEL_LOGS_EXPORTER": "none"}
        ),
        AIVA_HEALTH__CHECKS__TELEMETRY__ENABLED="false",
    )
    _request_items(service, 1)
    started = time.monotonic()
    assert service.terminate(timeout=30) is not None
    took = time.monotonic() - started
    if timeout_ms == "300":
        assert took < 4, took
    else:
        assert took >= 5.5, took


@pytest.mark.parametrize(
    ("variable", "insecure", "arrives"),
    [
        ("OTEL_EXPORTER_OTLP_INSECURE", "true", True),
        ("OTEL_EXPORTER_OTLP_INSECURE", "false", False),
        ("OTEL_EXPORTER_OTLP_TRACES_INSECURE", "true", True),
    ],
)
def test_insecure_decides_tls_for_a_grpc_host_port_endpoint(
    rotel: Callable[[], Rotel],
    aiva_service: Callable[..., AivaService],
    variable: str,
    insecure: str,
    arrives: bool,
) -> None:
    """The specification: OTEL_EXPORTER_OTLP_INSECURE applies to an endpoint without a
    scheme (a scheme decides by itself). rotel speaks plain gRPC: TLS finds no peer."""
    collector = rotel()
    service = _serve(
        aiva_service,
        OTEL_EXPORTER_OTLP_ENDPOINT=f"{collector.host}:{collector.grpc_port}",
        OTEL_METRIC_EXPORT_INTERVAL="60000",
        **{variable: insecure},
    )
    _request_items(service, 2)
    service.stop()
    assert len(_item_spans(collector)) == (2 if arrives else 0)


@pytest.mark.parametrize(
    ("protocol", "trust_ca", "client_cert", "arrives", "prefix"),
    [
        ("http/protobuf", True, False, True, "OTEL_EXPORTER_OTLP_"),
        ("http/protobuf", False, False, False, "OTEL_EXPORTER_OTLP_"),
        ("http/protobuf", True, True, True, "OTEL_EXPORTER_OTLP_"),
        ("grpc", True, True, True, "OTEL_EXPORTER_OTLP_"),
        ("grpc", False, False, False, "OTEL_EXPORTER_OTLP_"),
        ("http/protobuf", True, True, True, "OTEL_EXPORTER_OTLP_TRACES_"),  # the signal's own
        ("grpc", True, True, True, "OTEL_EXPORTER_OTLP_TRACES_"),
    ],
)
def test_certificates_secure_the_export(
    rotel: Callable[[], Rotel],
    aiva_service: Callable[..., AivaService],
    tmp_path: Path,
    protocol: str,
    trust_ca: bool,
    client_cert: bool,
    arrives: bool,
    prefix: str,
) -> None:
    """HTTPS to a TLS terminator in front of rotel: the CA file makes the server trusted
    (the system's bundle does not know it); with client certificates required, the client
    certificate and key pass."""
    require_binary("openssl", INSTALL_HINT)
    collector = rotel()
    certificates = make_certificates(tmp_path)
    port = collector.http_port if protocol == "http/protobuf" else collector.grpc_port
    tls = TlsTerminator(certificates, port, require_client_cert=client_cert)
    tls.start()
    try:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"https://127.0.0.1:{tls.port}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
        }
        if trust_ca:
            env[f"{prefix}CERTIFICATE"] = str(certificates.ca)
        if client_cert:
            env[f"{prefix}CLIENT_CERTIFICATE"] = str(certificates.client_cert)
            env[f"{prefix}CLIENT_KEY"] = str(certificates.client_key)
        service = _serve(aiva_service, **env)
        _request_items(service, 2)
        service.stop()
    finally:
        tls.stop()
    assert len(_item_spans(collector)) == (2 if arrives else 0), service.log_text()[-3000:]
    assert (tls.handshakes > 0) is arrives and (tls.failed_handshakes > 0) is not arrives


def test_headers_reach_the_collector_per_signal(aiva_service: Callable[..., AivaService]) -> None:
    capture = HeadCapture()
    capture.start()
    try:
        service = _serve(
            aiva_service,
            OTEL_EXPORTER_OTLP_ENDPOINT=capture.endpoint,
            OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
            OTEL_EXPORTER_OTLP_HEADERS="x-tenant=acme,authorization=Bearer%20t0ken",
            OTEL_EXPORTER_OTLP_LOGS_HEADERS="x-tenant=logs-only",
        )
        _request_items(service, 1)
        service.stop()
    finally:
        capture.stop()
    tenants = {path: headers.get("x-tenant") for path, headers in capture.requests}
    assert tenants == {"/v1/traces": "acme", "/v1/metrics": "acme", "/v1/logs": "logs-only"}
    traces = [h for p, h in capture.requests if p == "/v1/traces"]
    assert traces[0]["authorization"] == "Bearer t0ken"  # %20: the specification's encoding


def test_the_schedule_delays_export_until_the_flush(
    rotel: Callable[[], Rotel], aiva_service: Callable[..., AivaService]
) -> None:
    collector = rotel()
    service = _serve_to(
        collector,
        aiva_service,
        OTEL_BSP_SCHEDULE_DELAY="60000",
        OTEL_BLRP_SCHEDULE_DELAY="60000",
    )
    _request_items(service, 3)
    time.sleep(1.5)  # the default delays (5 s spans, 1 s logs) would have sent the logs
    assert _item_spans(collector) == [] and _access_lines(collector) == []
    service.stop()  # the shutdown flush
    assert len(_item_spans(collector)) == 3 and len(_access_lines(collector)) >= 3


def test_queue_sizes_bound_what_waits_for_a_hanging_collector(
    aiva_service: Callable[..., AivaService], tcp_proxy: Callable[..., TcpProxy]
) -> None:
    """Queues of 2 spans and 3 log records while the collector hangs: the rest is dropped,
    and counted on /metrics."""
    proxy = tcp_proxy("127.0.0.1", 9, mode="blackhole")
    service = _serve(
        aiva_service,
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://{proxy.address}",
        OTEL_EXPORTER_OTLP_TIMEOUT="5000",
        OTEL_BSP_MAX_QUEUE_SIZE="2",
        OTEL_BLRP_MAX_QUEUE_SIZE="3",
        OTEL_METRICS_EXPORTER="prometheus",
        AIVA_HEALTH__CHECKS__TELEMETRY__ENABLED="false",
    )
    _request_items(service, 12)
    with service.client() as client:
        text = client.get("/metrics").text
    dropped = {
        line.split('signal="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("aiva_telemetry_dropped")
    }
    # 12 requests, a span and an access line each; at most queue + one batch in flight.
    assert dropped["spans"] >= 12 - 2 - 2 and dropped["logs"] >= 12 - 3 - 3, dropped
    service.signal(9)  # no flush wanted: the collector hangs


def test_span_batch_size_splits_the_exports(
    rotel: Callable[[], Rotel], aiva_service: Callable[..., AivaService]
) -> None:
    collector = rotel()
    service = _serve_to(
        collector,
        aiva_service,
        OTEL_BSP_MAX_EXPORT_BATCH_SIZE="1",
        OTEL_BSP_SCHEDULE_DELAY="60000",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
    )
    _request_items(service, 4)
    service.stop()  # the shutdown flush: four exports of one span each
    assert len(_item_spans(collector)) == 4
    assert collector.output().count("ResourceSpans #0") >= 4


@pytest.mark.parametrize(
    ("variable", "value", "check"),
    [
        ("OTEL_SPAN_EVENT_COUNT_LIMIT", "0", lambda span: span["events"] == []),
        (
            "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT",
            "1",
            lambda span: [len(e["attributes"]) for e in span["events"]] == [1],
        ),
    ],
)
def test_event_limits_apply_to_the_exception_event(
    rotel: Callable[[], Rotel],
    aiva_service: Callable[..., AivaService],
    variable: str,
    value: str,
    check: Callable[[Record], bool],
) -> None:
    collector = rotel()
    service = _serve_to(collector, aiva_service, **{variable: value})
    with service.client() as client:
        assert client.get("/api/demo/fail").status_code == 500
    [span] = collector.wait_for_spans(lambda s: s["name"] == "GET /api/demo/fail")
    assert check(span), span["events"]


def test_exponential_histograms_when_asked(
    rotel: Callable[[], Rotel], aiva_service: Callable[..., AivaService]
) -> None:
    collector = rotel()
    service = _serve_to(
        collector,
        aiva_service,
        OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION="base2_exponential_bucket_histogram",
    )
    with service.client() as client:
        assert client.get("/api/demo/work").status_code == 200
    [operation, *_] = collector.wait_for_metric("aiva.operation.duration")
    assert operation["type"] == "ExponentialHistogram"


@pytest.mark.parametrize(
    ("exemplar_filter", "expected"), [("always_on", True), ("always_off", False)]
)
def test_the_exemplar_filter_decides_exemplars_on_sdk_histograms(
    rotel: Callable[[], Rotel],
    aiva_service: Callable[..., AivaService],
    exemplar_filter: str,
    expected: bool,
) -> None:
    collector = rotel()
    service = _serve_to(
        collector,
        aiva_service,
        OTEL_METRICS_EXEMPLAR_FILTER=exemplar_filter,
    )
    with service.client() as client:
        assert client.get("/api/demo/work").status_code == 200
    collector.wait_for_metric("aiva.operation.duration")
    service.stop()
    text = collector.output()
    block = text[text.index("-> Name: aiva.operation.duration") :].split("Metric #")[0]
    assert ("Exemplar #" in block) is expected, block[:1500]


@pytest.mark.parametrize(
    "variable",
    [
        "OTEL_PYTHON_EXCLUDED_URLS",
        "OTEL_PYTHON_STARLETTE_EXCLUDED_URLS",
        "OTEL_PYTHON_FASTAPI_EXCLUDED_URLS",
    ],
)
def test_excluded_urls_get_no_span(
    rotel: Callable[[], Rotel], aiva_service: Callable[..., AivaService], variable: str
) -> None:
    collector = rotel()
    service = _serve_to(collector, aiva_service, **{variable: "items/1$,/api/demo/work"})
    _request_items(service, 3)  # items 0, 1, 2
    with service.client() as client:
        assert client.get("/api/demo/work").status_code == 200
    collector.wait_for_log_records(lambda r: r["scope"] == "aiva.access", count=4)
    service.stop()
    paths = sorted(s["attributes"]["url.path"] for s in collector.spans() if s["kind"] == "SERVER")
    assert paths == ["/", "/api/demo/items/0", "/api/demo/items/2"]


B3_TRACE, B3_SPAN = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
W3C_PARENT = "00-11111111111111111111111111111111-2222222222222222-01"


@pytest.mark.parametrize(
    ("propagators", "headers", "parent"),
    [
        (
            "b3multi",
            {"X-B3-TraceId": B3_TRACE, "X-B3-SpanId": B3_SPAN, "X-B3-Sampled": "1"},
            (B3_TRACE, B3_SPAN),
        ),
        ("b3", {"b3": f"{B3_TRACE}-{B3_SPAN}-1"}, (B3_TRACE, B3_SPAN)),
        ("tracecontext,b3", {"b3": f"{B3_TRACE}-{B3_SPAN}-1"}, (B3_TRACE, B3_SPAN)),
        ("none", {"b3": f"{B3_TRACE}-{B3_SPAN}-1"}, None),
    ],
)
def test_the_configured_propagators_carry_the_parent(
    rotel: Callable[[], Rotel],
    aiva_service: Callable[..., AivaService],
    propagators: str,
    headers: dict[str, str],
    parent: tuple[str, str] | None,
) -> None:
    """A W3C traceparent is sent along every time: read only when tracecontext is listed;
    with both listed, the composite extracts in order and the later (b3) context wins."""
    collector = rotel()
    service = _serve_to(collector, aiva_service, OTEL_PROPAGATORS=propagators)
    _request_items(service, 1, traceparent=W3C_PARENT, **headers)
    [span] = collector.wait_for_spans(lambda s: s["name"] == ITEM_SPAN)
    got = (span["trace_id"], span["parent_id"])
    if propagators.startswith("tracecontext"):
        # The later propagator's context wins in a composite: b3's here.
        assert got == parent
    elif parent is None:
        assert span["parent_id"] == "" and span["trace_id"] not in (B3_TRACE, "1" * 32)
    else:
        assert got == parent


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT", "4"),
        ("OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT", "2"),
    ],
)
def test_log_record_limits_apply_to_exported_records(
    rotel: Callable[[], Rotel],
    aiva_service: Callable[..., AivaService],
    variable: str,
    value: str,
) -> None:
    collector = rotel()
    service = _serve_to(collector, aiva_service, **{variable: value})
    _request_items(service, 1)
    [line] = collector.wait_for_log_records(
        lambda r: r["scope"] == "aiva.access" and "items" in str(r["body"])
    )
    if variable == "OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT":
        assert len(line["attributes"]) == 2
    else:
        assert line["attributes"]["http.route"] == "/api"
        assert str(line["body"]).startswith("GET /api/demo/items/")  # the body is not cut


SIGNAL_PATHS = {"TRACES": "/v1/traces", "METRICS": "/v1/metrics", "LOGS": "/v1/logs"}


@pytest.mark.parametrize("signal", list(SIGNAL_PATHS))
def test_a_signals_own_compression_and_headers_apply_to_it_alone(
    aiva_service: Callable[..., AivaService], signal: str
) -> None:
    capture = HeadCapture()
    capture.start()
    try:
        service = _serve(
            aiva_service,
            OTEL_EXPORTER_OTLP_ENDPOINT=capture.endpoint,
            OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
            **{
                f"OTEL_EXPORTER_OTLP_{signal}_COMPRESSION": "gzip",
                f"OTEL_EXPORTER_OTLP_{signal}_HEADERS": "x-signal=own",
            },
        )
        _request_items(service, 1)
        service.stop()
    finally:
        capture.stop()
    for path, headers in capture.requests:
        own = path == SIGNAL_PATHS[signal]
        assert (headers.get("content-encoding") == "gzip") is own, (path, headers)
        assert (headers.get("x-signal") == "own") is own, (path, headers)
    assert {path for path, _ in capture.requests} == set(SIGNAL_PATHS.values())


def test_the_general_compression_applies_to_every_signal(
    aiva_service: Callable[..., AivaService],
) -> None:
    capture = HeadCapture()
    capture.start()
    try:
        service = _serve(
            aiva_service,
            OTEL_EXPORTER_OTLP_ENDPOINT=capture.endpoint,
            OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
            OTEL_EXPORTER_OTLP_COMPRESSION="gzip",
        )
        _request_items(service, 1)
        service.stop()
    finally:
        capture.stop()
    assert capture.requests
    assert all(h.get("content-encoding") == "gzip" for _, h in capture.requests)


@pytest.mark.parametrize("signal", list(SIGNAL_PATHS))
def test_a_signals_own_timeout_bounds_its_export_to_a_slow_collector(
    aiva_service: Callable[..., AivaService], signal: str
) -> None:
    """A collector that answers after 4 s; the signal's own timeout is 300 ms, the others
    export nothing: the shutdown flush gives up at once instead of waiting 4 s."""
    capture = HeadCapture(delay_s=4.0)
    capture.start()
    others = {s: "none" for s in SIGNAL_PATHS if s != signal}
    try:
        service = _serve(
            aiva_service,
            OTEL_EXPORTER_OTLP_ENDPOINT=capture.endpoint,
            OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
            OTEL_EXPORTER_OTLP_TIMEOUT="10000",
            AIVA_HEALTH__CHECKS__TELEMETRY__ENABLED="false",
            OTEL_METRIC_EXPORT_INTERVAL="60000",
            **{f"OTEL_EXPORTER_OTLP_{signal}_TIMEOUT": "300"},
            **{f"OTEL_{s}_EXPORTER": v for s, v in others.items()},
        )
        _request_items(service, 1)
        started = time.monotonic()
        assert service.terminate(timeout=30) is not None
        took = time.monotonic() - started
    finally:
        capture.stop()
    assert any(path == SIGNAL_PATHS[signal] for path, _ in capture.requests)
    assert took < 3.5, took


def test_log_batch_size_splits_the_exports(
    rotel: Callable[[], Rotel], aiva_service: Callable[..., AivaService]
) -> None:
    collector = rotel()
    service = _serve_to(
        collector,
        aiva_service,
        OTEL_BLRP_MAX_EXPORT_BATCH_SIZE="1",
        OTEL_BLRP_SCHEDULE_DELAY="60000",
        OTEL_TRACES_EXPORTER="none",
        OTEL_METRICS_EXPORTER="none",
    )
    _request_items(service, 4)
    service.stop()  # the shutdown flush: one export a log record
    records = collector.log_records()
    assert len(_access_lines(collector)) >= 4
    assert collector.output().count("ResourceLog #0") >= len(records) >= 5


def test_the_metric_export_timeout_bounds_a_slow_collector(
    aiva_service: Callable[..., AivaService],
) -> None:
    capture = HeadCapture(delay_s=4.0)
    capture.start()
    try:
        service = _serve(
            aiva_service,
            OTEL_EXPORTER_OTLP_ENDPOINT=capture.endpoint,
            OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
            OTEL_EXPORTER_OTLP_TIMEOUT="10000",
            OTEL_METRIC_EXPORT_TIMEOUT="300",
            OTEL_METRIC_EXPORT_INTERVAL="60000",
            OTEL_TRACES_EXPORTER="none",
            OTEL_LOGS_EXPORTER="none",
            AIVA_HEALTH__CHECKS__TELEMETRY__ENABLED="false",
        )
        started = time.monotonic()
        assert service.terminate(timeout=30) is not None
        took = time.monotonic() - started
    finally:
        capture.stop()
    assert any(path == "/v1/metrics" for path, _ in capture.requests)
    assert took < 3.5, took


@pytest.mark.parametrize(
    ("variable", "expected"),
    [("OTEL_SPAN_LINK_COUNT_LIMIT", (1, 3)), ("OTEL_LINK_ATTRIBUTE_COUNT_LIMIT", (3, 1))],
)
def test_link_limits_apply_to_a_services_own_spans(
    rotel: Callable[[], Rotel], variable: str, expected: tuple[int, int]
) -> None:
    """aiva's server spans have no links; a span the service starts with aiva's tracer
    provider may: three links of three attributes each, limited as configured."""
    from opentelemetry.trace import Link, SpanContext, TraceFlags

    from aiva.settings import load_settings
    from aiva.telemetry.exporters import ExportStats
    from aiva.telemetry.resource import build_resource
    from aiva.telemetry.traces import build_tracer_provider

    collector = rotel()
    settings = load_settings(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.grpc_endpoint, variable: "1"},
        config_dir="/nonexistent",
    ).settings
    provider, _ = build_tracer_provider(settings, build_resource(settings), ExportStats())
    links = [
        Link(
            SpanContext(0x1000 + n, 0x2000 + n, is_remote=True, trace_flags=TraceFlags(1)),
            {"a": 1, "b": 2, "c": 3},
        )
        for n in range(3)
    ]
    provider.get_tracer("test").start_span("linked", links=links).end()
    provider.force_flush()
    provider.shutdown()
    [span] = collector.wait_for_spans(lambda s: s["name"] == "linked")
    assert (len(span["links"]), len(span["links"][0]["attributes"])) == expected
