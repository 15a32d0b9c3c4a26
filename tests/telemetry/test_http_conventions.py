"""The HTTP server conventions on a running service: spans and metrics at a real collector
(rotel) and on /metrics, for an unknown method, a User-Agent, a Host with a port, proxy
headers and a raising route."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx

from infra.rotel import Rotel
from infra.service import AivaService

UA = "conventions-test/1.0 (+https://aiva.example/bot)"


def otlp_env(collector: Rotel, **more: str) -> dict[str, str]:
    return {
        "AIVA_TELEMETRY__OTLP__ENDPOINT": collector.grpc_endpoint,
        "AIVA_TELEMETRY__OTLP__TIMEOUT_S": "2",
        "AIVA_TELEMETRY__METRICS__EXPORT_INTERVAL_S": "1",
        "AIVA_HEALTH__CHECKS__CPU__ENABLED": "false",
        **more,
    }


def request(service: AivaService, method: str, path: str, **kwargs: Any) -> httpx.Response:
    # A connection of its own each: uvicorn closes the one a raising route answered on.
    return httpx.request(method, service.base_url + path, timeout=5, **kwargs)


def server_span(collector: Rotel, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    [span] = collector.wait_for_spans(lambda s: s["kind"] == "SERVER" and match(s))
    return span


def duration_points(collector: Rotel, match: Callable[[dict[str, Any]], bool]) -> list[Any]:
    """The distinct attribute sets of http.server.request.duration points at the collector
    that match (each export repeats the cumulative points), once one has arrived."""

    def found() -> list[dict[str, Any]]:
        distinct = {
            tuple(sorted(attributes.items()))
            for metric in collector.metrics()
            if metric["name"] == "http.server.request.duration"
            for attributes in metric["point_attributes"]
            if match(attributes)
        }
        return [dict(items) for items in sorted(distinct)]

    return collector.wait_for(lambda _: found())  # type: ignore[no-any-return]


def prometheus_series(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample of `name` in a text exposition."""
    found = []
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels = line[len(name) + 1 : line.rindex("}")]
            found.append((dict(re.findall(r'(\w+)="([^"]*)"', labels)), float(line.split()[-1])))
    return found


def test_unknown_method_user_agent_host_and_raising_route(
    rotel: Callable[[], Rotel], aiva_service: Callable[..., AivaService]
) -> None:
    collector = rotel()
    service = aiva_service(env=otlp_env(collector))
    assert request(service, "PROPFIND", "/api/demo/items/1").status_code == 405
    headers = {
        "Host": "api.example:8443",
        "User-Agent": UA,
        "X-Forwarded-Host": "claimed.example",  # not trusted by default
    }
    assert request(service, "GET", "/api/demo/items/7", headers=headers).status_code == 200
    assert request(service, "GET", "/api/demo/fail").status_code == 500

    # The unknown method: span name HTTP, _OTHER, the method kept as sent.
    propfind = server_span(collector, lambda s: s["attributes"]["url.path"] == "/api/demo/items/1")
    assert propfind["name"] == "HTTP /api/demo/items/{item_id}"
    assert propfind["attributes"]["http.request.method"] == "_OTHER"
    assert propfind["attributes"]["http.request.method_original"] == "PROPFIND"
    assert propfind["attributes"]["http.response.status_code"] == 405

    # User-Agent, Host with a port, protocol version, client address.
    item = server_span(collector, lambda s: s["attributes"]["url.path"] == "/api/demo/items/7")
    assert item["name"] == "GET /api/demo/items/{item_id}"
    attributes = item["attributes"]
    assert attributes["user_agent.original"] == UA
    assert (attributes["server.address"], attributes["server.port"]) == ("api.example", 8443)
    assert attributes["network.protocol.version"] == "1.1"
    assert attributes["client.address"] == "127.0.0.1"
    assert "http.request.method_original" not in attributes

    # The raising route: the same error.type on the span and on both metric readers.
    fail = server_span(collector, lambda s: s["name"] == "GET /api/demo/fail")
    assert fail["status"] == "ERROR"
    assert fail["attributes"]["error.type"] == "RuntimeError"
    [failed_point] = duration_points(collector, lambda a: a.get("http.route") == "/api/demo/fail")
    assert failed_point["error.type"] == fail["attributes"]["error.type"]
    assert failed_point["network.protocol.version"] == "1.1"
    [other_point] = duration_points(collector, lambda a: a.get("http.request.method") == "_OTHER")
    assert other_point["http.response.status_code"] == 405
    assert "error.type" not in other_point

    # Header values never become metric attributes: the client picks them.
    for metric in collector.metrics():
        for point in metric["point_attributes"]:
            assert not {"server.address", "server.port", "user_agent.original"} & set(point)
            assert "PROPFIND" not in point.values()
    text = request(service, "GET", "/metrics").text
    assert "api.example" not in text and "PROPFIND" not in text and UA not in text
    series = prometheus_series(text, "http_server_request_duration_seconds_count")
    [(fail_labels, _)] = [s for s in series if s[0]["http_route"] == "/api/demo/fail"]
    assert fail_labels["error_type"] == "RuntimeError"
    assert any(labels["http_request_method"] == "_OTHER" for labels, _ in series)


def test_known_methods_variable_trusted_proxy_and_body_sizes(
    rotel: Callable[[], Rotel], aiva_service: Callable[..., AivaService]
) -> None:
    collector = rotel()
    env = otlp_env(
        collector,
        OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS="GET,PROPFIND",
        AIVA_TELEMETRY__HTTP__TRUST_PROXY_HEADERS="true",
        AIVA_TELEMETRY__HTTP__BODY_SIZE_METRICS="true",
    )
    service = aiva_service(env=env)
    assert request(service, "PROPFIND", "/api/demo/items/1").status_code == 405
    assert request(service, "POST", "/api/demo/items/2", content=b"x" * 1000).status_code == 405
    forwarded = {
        "Host": "app.internal:8000",
        # Forwarded (RFC 7239), which uvicorn's own proxy handling does not read.
        "Forwarded": 'for=192.0.2.60;proto=https;host="api.example"',
    }
    item_response = request(service, "GET", "/api/demo/items/3", headers=forwarded)
    assert item_response.status_code == 200

    # PROPFIND is known now, POST is not: the variable replaces the default list.
    propfind = server_span(collector, lambda s: s["attributes"]["url.path"] == "/api/demo/items/1")
    assert propfind["name"] == "PROPFIND /api/demo/items/{item_id}"
    assert propfind["attributes"]["http.request.method"] == "PROPFIND"
    assert "http.request.method_original" not in propfind["attributes"]
    post = server_span(collector, lambda s: s["attributes"]["url.path"] == "/api/demo/items/2")
    assert post["name"] == "HTTP /api/demo/items/{item_id}"
    assert post["attributes"]["http.request.method_original"] == "POST"

    # The proxy's original host and scheme, the scheme's default port.
    item = server_span(collector, lambda s: s["attributes"]["url.path"] == "/api/demo/items/3")
    attributes = item["attributes"]
    assert (attributes["server.address"], attributes["server.port"]) == ("api.example", 443)
    assert attributes["url.scheme"] == "https"
    duration_points(collector, lambda a: a.get("url.scheme") == "https")

    # Body sizes in bytes on both readers, under the duration's attributes.
    for name in ("http.server.request.body.size", "http.server.response.body.size"):
        [metric, *_] = collector.wait_for_metric(name)
        assert (metric["type"], metric["unit"]) == ("Histogram", "By")
    text = request(service, "GET", "/metrics").text
    sizes = prometheus_series(text, "http_server_request_body_size_bytes_sum")
    [(_, posted)] = [s for s in sizes if s[0]["http_request_method"] == "_OTHER"]
    assert posted == 1000
    [(_, propfind_bytes)] = [s for s in sizes if s[0]["http_request_method"] == "PROPFIND"]
    assert propfind_bytes == 0
    sent = prometheus_series(text, "http_server_response_body_size_bytes_sum")
    [(_, item_bytes)] = [s for s in sent if s[0]["url_scheme"] == "https"]
    assert item_bytes == len(item_response.content) > 0
