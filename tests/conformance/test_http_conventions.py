"""aiva's HTTP server span and HTTP server metrics, as a real `aiva serve` exports them over
OTLP to a real collector (rotel), held against the installed
`opentelemetry-semantic-conventions`: attribute names come from the package's constants,
method values from its enums, metric names, units, descriptions and instrument kinds
from its `create_*` helpers. Nothing here is a copy of a name.

The package carries no requirement levels (the conventions' YAML model does:
model/http/common.yaml, spans.yaml and metrics.yaml, at the package's schema 1.44):
SPAN and DURATION give each attribute's level, naming it by the package's constant; a
conditionally required one comes with its condition, as a test on the request sent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from opentelemetry.metrics import Histogram, Meter, UpDownCounter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.semconv._incubating.attributes import (
    http_attributes as incubating_http_attributes,
)
from opentelemetry.semconv._incubating.attributes import user_agent_attributes as incubating_ua
from opentelemetry.semconv._incubating.metrics import http_metrics as incubating_http_metrics
from opentelemetry.semconv.attributes import (
    client_attributes,
    error_attributes,
    http_attributes,
    network_attributes,
    server_attributes,
    url_attributes,
    user_agent_attributes,
)
from opentelemetry.semconv.metrics import http_metrics

from aiva.settings import load_settings
from infra.rotel import Record, Rotel
from infra.service import AivaService

METHOD = http_attributes.HTTP_REQUEST_METHOD
METHOD_ORIGINAL = http_attributes.HTTP_REQUEST_METHOD_ORIGINAL
STATUS = http_attributes.HTTP_RESPONSE_STATUS_CODE
ROUTE = http_attributes.HTTP_ROUTE
ERROR_TYPE = error_attributes.ERROR_TYPE
SERVER_ADDRESS = server_attributes.SERVER_ADDRESS
SERVER_PORT = server_attributes.SERVER_PORT
OTHER = http_attributes.HttpRequestMethodValues.OTHER.value


@dataclass(frozen=True)
class Sent:
    """One request the test sends, and what the server knows of it."""

    method: str
    path: str
    status: int
    route: str | None = None
    query: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    raises: bool = False

    @property
    def known(self) -> bool:
        return self.method in KNOWN_METHODS

    @property
    def failed(self) -> bool:
        return self.raises or self.status >= 500


# Which attributes a request's span or point must carry: (level, condition). Levels as
# the conventions name them; the condition says when a conditionally required one applies.
Condition = Callable[[Sent, Mapping[str, Any]], bool]
ALWAYS: Condition = lambda sent, attributes: True  # noqa: E731
NEVER: Condition = lambda sent, attributes: False  # noqa: E731
REQUIRED, CONDITIONALLY_REQUIRED, RECOMMENDED, OPT_IN = (
    "required",
    "conditionally_required",
    "recommended",
    "opt_in",
)

# attributes.http.common + attributes.http.server + span.http.server.
SPAN: dict[str, tuple[str, Condition]] = {
    METHOD: (REQUIRED, ALWAYS),
    url_attributes.URL_PATH: (REQUIRED, ALWAYS),
    url_attributes.URL_SCHEME: (REQUIRED, ALWAYS),
    # "If request has ended with an error."
    ERROR_TYPE: (CONDITIONALLY_REQUIRED, lambda sent, _: sent.failed),
    # "If and only if it's different than http.request.method."
    METHOD_ORIGINAL: (CONDITIONALLY_REQUIRED, lambda sent, _: not sent.known),
    # "If and only if one was received/sent."
    STATUS: (CONDITIONALLY_REQUIRED, ALWAYS),
    # "If and only if it's available."
    ROUTE: (CONDITIONALLY_REQUIRED, lambda sent, _: sent.route is not None),
    # "If not http and network.protocol.version is set": aiva serves http only.
    network_attributes.NETWORK_PROTOCOL_NAME: (CONDITIONALLY_REQUIRED, NEVER),
    # "If available and server.address is set."
    SERVER_PORT: (CONDITIONALLY_REQUIRED, lambda _, attributes: SERVER_ADDRESS in attributes),
    # "If and only if one was received/sent."
    url_attributes.URL_QUERY: (CONDITIONALLY_REQUIRED, lambda sent, _: bool(sent.query)),
    client_attributes.CLIENT_ADDRESS: (RECOMMENDED, ALWAYS),
    network_attributes.NETWORK_PEER_ADDRESS: (RECOMMENDED, NEVER),
    network_attributes.NETWORK_PEER_PORT: (RECOMMENDED, NEVER),
    network_attributes.NETWORK_PROTOCOL_VERSION: (RECOMMENDED, ALWAYS),
    # Every request here has a Host and a User-Agent (httpx sends its own when not given).
    SERVER_ADDRESS: (RECOMMENDED, ALWAYS),
    user_agent_attributes.USER_AGENT_ORIGINAL: (RECOMMENDED, ALWAYS),
}
# The recommended ones aiva leaves out, and why (the condition above is NEVER for them).
SPAN_NOT_EMITTED = {
    # The connection's peer: client.address has it (no proxy header is read for it).
    network_attributes.NETWORK_PEER_ADDRESS,
    network_attributes.NETWORK_PEER_PORT,
}

# metric_attributes.http.server (attributes.http.server + common) for
# http.server.request.duration and the body sizes: the header-derived ones opt-in only.
DURATION: dict[str, tuple[str, Condition]] = {
    METHOD: (REQUIRED, ALWAYS),
    url_attributes.URL_SCHEME: (REQUIRED, ALWAYS),
    ERROR_TYPE: (CONDITIONALLY_REQUIRED, lambda sent, _: sent.failed),
    STATUS: (CONDITIONALLY_REQUIRED, ALWAYS),
    ROUTE: (CONDITIONALLY_REQUIRED, lambda sent, _: sent.route is not None),
    network_attributes.NETWORK_PROTOCOL_NAME: (CONDITIONALLY_REQUIRED, NEVER),
    network_attributes.NETWORK_PROTOCOL_VERSION: (RECOMMENDED, ALWAYS),
    SERVER_ADDRESS: (OPT_IN, NEVER),
    SERVER_PORT: (OPT_IN, NEVER),
    incubating_ua.USER_AGENT_SYNTHETIC_TYPE: (OPT_IN, NEVER),
}
# metric.http.server.active_requests.
ACTIVE: dict[str, tuple[str, Condition]] = {
    METHOD: (REQUIRED, ALWAYS),
    url_attributes.URL_SCHEME: (REQUIRED, ALWAYS),
    SERVER_ADDRESS: (OPT_IN, NEVER),
    SERVER_PORT: (OPT_IN, NEVER),
}

# The default known methods: RFC 9110's, PATCH and QUERY (the stable enum lags the
# stable attribute's note by QUERY, which the incubating enum has).
KNOWN_METHODS = {m.value for m in incubating_http_attributes.HttpRequestMethodValues} - {OTHER}

SENT = (
    Sent(
        "GET",
        "/api/demo/items/1",
        200,
        "/api/demo/items/{item_id}",
        query="q=1",
        headers={"Host": "api.example:8443", "User-Agent": "conformance/1.0"},
    ),
    Sent(
        "GET",
        "/api/demo/items/2",
        200,
        "/api/demo/items/{item_id}",
        headers={"Host": "api.example"},
    ),
    Sent("PROPFIND", "/api/demo/items/3", 405, "/api/demo/items/{item_id}"),
    Sent("GET", "/api/demo/fail", 500, "/api/demo/fail", raises=True),
    Sent("GET", "/no/such/path", 404),
)

# The metrics' units, descriptions and kinds, from the package's create_* helpers.
CREATORS: dict[str, Callable[[Meter], Any]] = {
    http_metrics.HTTP_SERVER_REQUEST_DURATION: (
        incubating_http_metrics.create_http_server_request_duration
    ),
    incubating_http_metrics.HTTP_SERVER_ACTIVE_REQUESTS: (
        incubating_http_metrics.create_http_server_active_requests
    ),
    incubating_http_metrics.HTTP_SERVER_REQUEST_BODY_SIZE: (
        incubating_http_metrics.create_http_server_request_body_size
    ),
    incubating_http_metrics.HTTP_SERVER_RESPONSE_BODY_SIZE: (
        incubating_http_metrics.create_http_server_response_body_size
    ),
}


def _kind(instrument: Any) -> tuple[str, bool | None]:
    """The OTLP data type (and monotonicity) an instrument of the package's kind exports as."""
    if isinstance(instrument, Histogram):
        return "Histogram", None
    if isinstance(instrument, UpDownCounter):
        return "Sum", False
    raise AssertionError(f"no OTLP kind known for {instrument!r}")


def _send(service: AivaService) -> None:
    for sent in SENT:
        url = service.base_url + sent.path + (f"?{sent.query}" if sent.query else "")
        # A connection each: uvicorn closes the one a raising route answered on.
        response = httpx.request(sent.method, url, headers=dict(sent.headers), timeout=5)
        assert response.status_code == sent.status, sent


@pytest.fixture
def exported(
    rotel: Callable[[], Rotel], aiva_service: Callable[..., AivaService]
) -> tuple[list[Record], list[Record]]:
    """(server spans, metrics) at the collector after SENT, body sizes switched on."""
    collector = rotel()
    service = aiva_service(
        env={
            "AIVA_TELEMETRY__OTLP__ENDPOINT": collector.grpc_endpoint,
            "AIVA_TELEMETRY__OTLP__TIMEOUT_S": "2",
            "AIVA_TELEMETRY__METRICS__EXPORT_INTERVAL_S": "1",
            "AIVA_TELEMETRY__HTTP__BODY_SIZE_METRICS": "true",
            "AIVA_HEALTH__CHECKS__CPU__ENABLED": "false",
        }
    )
    _send(service)
    paths = {sent.path for sent in SENT}
    spans = collector.wait_for_spans(
        lambda s: s["kind"] == "SERVER" and s["attributes"].get("url.path") in paths,
        count=len(SENT),
    )
    collector.wait_for(_a_point_for_every_request)
    return spans, collector.metrics()


def _a_point_for_every_request(collector: Rotel) -> bool:
    points = [
        attributes
        for metric in collector.metrics()
        if metric["name"] == http_metrics.HTTP_SERVER_REQUEST_DURATION
        for attributes in metric["point_attributes"]
    ]
    return all(any(sent in _sent_for_point(p) for p in points) for sent in SENT)


def _missing(
    levels: Mapping[str, tuple[str, Condition]], sent: Sent, attributes: Mapping[str, Any]
) -> list[str]:
    """The required, applying conditionally required, and applying recommended attributes
    that `attributes` lacks; and any opt-in one it carries (aiva opts into none)."""
    wrong = []
    for name, (level, applies) in levels.items():
        if level == OPT_IN:
            if name in attributes:
                wrong.append(f"{name} (opt-in) present")
        elif applies(sent, attributes) and name not in attributes:
            wrong.append(f"{name} ({level}) missing")
    return wrong


def _sent_for_span(span: Record) -> Sent:
    [sent] = [s for s in SENT if s.path == span["attributes"]["url.path"]]
    return sent


def _sent_for_point(attributes: Mapping[str, Any]) -> list[Sent]:
    return [
        sent
        for sent in SENT
        if attributes.get(ROUTE) == sent.route
        and attributes.get(STATUS) == sent.status
        and attributes.get(METHOD) == (sent.method if sent.known else OTHER)
    ]


def test_the_levels_name_attributes_of_the_package() -> None:
    # Guards the tables: each name is one the package defines (a typo would be a new key).
    modules = (client_attributes, error_attributes, http_attributes, network_attributes,
               server_attributes, url_attributes, user_agent_attributes, incubating_ua)  # fmt: skip
    defined = {
        value for module in modules for value in vars(module).values() if isinstance(value, str)
    }
    for table in (SPAN, DURATION, ACTIVE):
        assert set(table) <= defined
    recommended = {name for name, (level, _) in SPAN.items() if level == RECOMMENDED}
    assert SPAN_NOT_EMITTED.issubset(recommended)
    assert all(SPAN[name][1] is NEVER for name in SPAN_NOT_EMITTED)


def test_the_default_known_methods_are_the_conventions(tmp_path: Any) -> None:
    known = load_settings({}, config_dir=tmp_path).settings.telemetry.http.known_methods
    assert set(known) == KNOWN_METHODS
    stable = {m.value for m in http_attributes.HttpRequestMethodValues} - {OTHER}
    assert stable <= KNOWN_METHODS


def test_spans_and_metrics_hold_to_the_conventions(
    exported: tuple[list[Record], list[Record]],
) -> None:
    # One service run for the four checks: each would otherwise start its own.
    spans, metrics = exported
    assert len(spans) == len(SENT)  # exactly one server span a request
    assert span_problems(spans) == {}
    assert duration_problems(spans, metrics) == []
    assert active_problems(metrics) == []
    assert kind_problems(metrics) == []


def span_problems(spans: list[Record]) -> dict[str, list[str]]:
    """By path: what each server span lacks, or has wrong, against SPAN and the span name."""
    problems = {}
    for span in spans:
        sent = _sent_for_span(span)
        attributes = span["attributes"]
        wrong = _missing(SPAN, sent, attributes)
        # Span name: {method} {target}, method HTTP when it is _OTHER, target http.route.
        method = attributes.get(METHOD) if attributes.get(METHOD) != OTHER else "HTTP"
        name = f"{method} {sent.route}" if sent.route else method
        if span["name"] != name:
            wrong.append(f"name {span['name']!r}, want {name!r}")
        if attributes.get(METHOD) not in KNOWN_METHODS | {OTHER}:
            wrong.append(f"{METHOD} {attributes.get(METHOD)!r} is no value of the enum")
        if METHOD_ORIGINAL in attributes and attributes[METHOD_ORIGINAL] == attributes.get(METHOD):
            wrong.append(f"{METHOD_ORIGINAL} set though the same as {METHOD}")
        if not sent.failed and ERROR_TYPE in attributes:
            wrong.append(f"{ERROR_TYPE} on a request that succeeded")
        if sent.failed and span["status"] != "ERROR":
            wrong.append(f"status {span['status']} for a failed request")
        if wrong:
            problems[sent.path] = wrong
    return problems


def duration_problems(spans: list[Record], metrics: list[Record]) -> list[str]:
    """The duration's and the body sizes' points against DURATION; error.type the span's."""
    span_errors = {
        s["attributes"].get(ROUTE): s["attributes"][ERROR_TYPE]
        for s in spans
        if ERROR_TYPE in s["attributes"]
    }
    names = (
        http_metrics.HTTP_SERVER_REQUEST_DURATION,
        incubating_http_metrics.HTTP_SERVER_REQUEST_BODY_SIZE,
        incubating_http_metrics.HTTP_SERVER_RESPONSE_BODY_SIZE,
    )
    checked: dict[str, set[str]] = {name: set() for name in names}
    problems = []
    for metric in metrics:
        if metric["name"] not in names:
            continue
        for attributes in metric["point_attributes"]:
            unknown = set(attributes) - set(DURATION)
            if unknown:
                problems.append(f"{metric['name']}: not in the conventions' list: {unknown}")
            for sent in _sent_for_point(attributes):
                checked[metric["name"]].add(sent.path)
                problems += [
                    f"{metric['name']} {sent.path}: {wrong}"
                    for wrong in _missing(DURATION, sent, attributes)
                ]
            error = attributes.get(ERROR_TYPE)
            if error is not None and error != span_errors.get(attributes.get(ROUTE)):
                problems.append(f"{metric['name']}: error.type {error!r} is not the span's")
    for name, paths in checked.items():
        unseen = {sent.path for sent in SENT} - paths
        if unseen:
            problems.append(f"{name}: no point for {sorted(unseen)}")
    return problems


def active_problems(metrics: list[Record]) -> list[str]:
    """http.server.active_requests: the required attributes, nothing else."""
    points = [
        attributes
        for metric in metrics
        if metric["name"] == incubating_http_metrics.HTTP_SERVER_ACTIVE_REQUESTS
        for attributes in metric["point_attributes"]
    ]
    required = {name for name, (level, _) in ACTIVE.items() if level == REQUIRED}
    problems = [
        f"attributes {sorted(a)}, want {sorted(required)}" for a in points if set(a) != required
    ]
    return problems if points else ["no point"]


def kind_problems(metrics: list[Record]) -> list[str]:
    """Each metric's unit, description and OTLP kind against the package's create_* helper."""
    meter = MeterProvider().get_meter("conformance")
    problems = []
    for name, create in CREATORS.items():
        instrument = create(meter)
        ours = next((m for m in metrics if m["name"] == name), None)
        if ours is None:
            problems.append(f"{name}: not exported")
            continue
        monotonic = ours["monotonic"] if ours["type"] == "Sum" else None
        got = (ours["unit"], ours["description"], ours["type"], monotonic)
        want = (instrument.unit, instrument.description, *_kind(instrument))
        if got != want:
            problems.append(f"{name}: {got}, want {want}")
    return problems
