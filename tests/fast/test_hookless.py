"""Each private hook of the fast layer taken away in turn (tests/apps/hookless/sitecustomize.py,
as an upgrade of the third-party package could): the service still starts, warns once
naming that hook, and sends correct telemetry through the plain pipeline to a real
collector, and /metrics still renders."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from aiva.fast import HOOK_NAMES
from infra.rotel import Rotel
from infra.service import REPO_ROOT, AivaService

# Each test here is about the fast layer itself: out of a SUITE_FAST_PATH=off run.
pytestmark = pytest.mark.fast_layer(*HOOK_NAMES)

HOOKLESS = REPO_ROOT / "tests" / "apps" / "hookless"
WORK_REQUESTS = 3


def _env(collector: Rotel, protocol: str, **more: str) -> dict[str, str]:
    endpoint = collector.grpc_endpoint if protocol == "grpc" else collector.http_endpoint
    return {
        "AIVA_TELEMETRY__OTLP__ENDPOINT": endpoint,
        "AIVA_TELEMETRY__OTLP__PROTOCOL": protocol,
        "AIVA_TELEMETRY__METRICS__EXPORT_INTERVAL_S": "1",
        "AIVA_TELEMETRY__LOGS__LEVEL": "INFO",
        "AIVA_HEALTH__CHECKS__CPU__ENABLED": "false",
        **more,
    }


def _fast_warnings(service: AivaService) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in service.log_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line["logger"] == "aiva.fast"]


def _serves_and_exports(service: AivaService, collector: Rotel) -> None:
    """The work route answers, and its telemetry arrives whole through whichever path."""
    with service.client() as client:
        for _ in range(WORK_REQUESTS):
            assert client.get("/api/demo/work").status_code == 200
        exposition = client.get("/metrics")
    assert exposition.status_code == 200
    assert "http_server_request_duration_seconds_count" in exposition.text
    assert 'aiva_operation_duration_seconds_count{operation="demo.compute"' in exposition.text
    servers = collector.wait_for_spans(lambda s: s["name"] == "GET /api/demo/work", count=3)
    for server in servers:
        children = collector.wait_for_spans(
            lambda s, trace=server["trace_id"]: s["trace_id"] == trace and s["kind"] == "INTERNAL",
            count=3,
        )
        assert {s["name"] for s in children} == {"demo.work", "demo.fetch", "demo.compute"}
        [line] = collector.wait_for_log_records(
            lambda r, trace=server["trace_id"]: (
                r["trace_id"] == trace and str(r["body"]).startswith("processed ")
            )
        )
        assert line["attributes"]["items"] >= 1
    collector.wait_for_metric("aiva.operation.duration")
    collector.wait_for_metric("http.server.request.duration")


@pytest.mark.parametrize("hook", HOOK_NAMES)
def test_a_missing_hook_leaves_the_plain_path_with_one_warning(
    rotel: Callable[[], Rotel], aiva_service: Callable[..., AivaService], hook: str
) -> None:
    collector = rotel()
    # export_outcomes is the HTTP exporter's: the others are checked over gRPC.
    protocol = "http/protobuf" if hook == "export_outcomes" else "grpc"
    env = _env(collector, protocol, HOOKLESS_BREAK=hook)
    env["PYTHONPATH"] = f"{HOOKLESS}:{REPO_ROOT / 'src'}"
    # The supervisor's hook is used with several workers only.
    args = ("--workers", "2") if hook == "uvicorn_supervisor" else ()
    service = aiva_service(env=env, args=args)
    _serves_and_exports(service, collector)
    [warning] = _fast_warnings(service)
    assert warning["level"] == "WARNING"
    named = [name for name in HOOK_NAMES if f"{name} (" in str(warning["message"])]
    assert named == [hook], warning["message"]


def test_with_every_hook_there_no_warning(
    rotel: Callable[[], Rotel], aiva_service: Callable[..., AivaService]
) -> None:
    collector = rotel()
    service = aiva_service(env=_env(collector, "grpc"))
    _serves_and_exports(service, collector)
    assert _fast_warnings(service) == []


def test_fast_path_off_is_the_plain_path_without_a_warning(
    rotel: Callable[[], Rotel], aiva_service: Callable[..., AivaService]
) -> None:
    collector = rotel()
    service = aiva_service(env=_env(collector, "grpc", AIVA_TELEMETRY__FAST_PATH="off"))
    _serves_and_exports(service, collector)
    assert _fast_warnings(service) == []


@pytest.mark.parametrize(
    ("hook", "template"),
    [
        (None, "/v1/items/{item_id}"),
        # Documented: without FastAPI's router state the route is named as Starlette's
        # scope names it, without the router's prefix.
        ("fastapi_route_state", "/items/{item_id}"),
        ("fastapi_telemetry_config", "/v1/items/{item_id}"),
    ],
)
def test_a_fastapi_app_without_a_fastapi_hook_makes_one_server_span(
    rotel: Callable[[], Rotel],
    aiva_service: Callable[..., AivaService],
    hook: str | None,
    template: str,
) -> None:
    collector = rotel()
    env = _env(collector, "grpc", HOOKLESS_BREAK=hook or "")
    env["PYTHONPATH"] = f"{HOOKLESS}:{REPO_ROOT / 'src'}:{REPO_ROOT}"
    service = aiva_service(
        env=env, args=("tests.apps.fastapi_routers:build", "--factory"), ready_path="/livez"
    )
    with service.client() as client:
        for item in (1, 2):
            assert client.get(f"/v1/items/{item}").status_code == 200
    spans = collector.wait_for_spans(lambda s: s["kind"] == "SERVER", count=2)
    assert [s["name"] for s in spans] == [f"GET {template}"] * 2
    warnings = _fast_warnings(service)
    assert [
        name for name in HOOK_NAMES if any(f"{name} (" in str(w["message"]) for w in warnings)
    ] == ([hook] if hook else [])
    assert len(warnings) == (1 if hook else 0)
