"""A secret a service logs in a message, an extra, a log_context field and an exception's
text reaches no output of a real `aiva serve`: the console, the rotating file, and the
log records a real collector (rotel) receives. The access line's OTLP attributes are
named by the HTTP conventions there."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from infra.rotel import Rotel
from infra.service import REPO_ROOT, SRC_DIR, AivaService

CARD = "4111-1111-1111-1111"
MASKED_DSN = "postgresql://app:****@db:5432/orders"


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _one(entries: list[dict[str, Any]], key: str, prefix: str) -> dict[str, Any]:
    """The first entry whose `key` starts with `prefix` (each request logs its own)."""
    found = [e for e in entries if str(e[key]).startswith(prefix)]
    assert found, f"no entry with {key} {prefix!r}"
    return found[0]


def test_a_logged_secret_reaches_no_output(
    rotel: Callable[[], Rotel], aiva_service: Callable[..., AivaService], tmp_path: Path
) -> None:
    collector = rotel()
    secret = f"Canary{secrets.token_hex(8)}"
    log_file = tmp_path / "aiva.jsonl"
    service = aiva_service(
        env={
            "PYTHONPATH": os.pathsep.join([str(SRC_DIR), str(REPO_ROOT)]),
            "AIVA_HEALTH__CHECKS__CPU__ENABLED": "false",
            "LEAKY_SECRET": secret,
            "AIVA_TELEMETRY__OTLP__ENDPOINT": collector.grpc_endpoint,
            "AIVA_TELEMETRY__OTLP__PROTOCOL": "grpc",
            "AIVA_TELEMETRY__LOGS__FILE__PATH": str(log_file),
            # A pattern of the service's own, on top of the built-in ones.
            "AIVA_TELEMETRY__LOGS__SCRUB__PATTERNS": '["(?<=card )[0-9]{4}(?:-[0-9]{4}){3}"]',
        },
        args=["tests.apps.leaky_service:app"],
        ready_path="/livez",
    )
    with service.client() as client:
        assert client.get("/leak").status_code == 200
        assert client.get("/leak", params={"raise": "1"}).status_code == 500
    assert service.terminate() == 0  # flushes the OTLP logs on the way out

    records = collector.wait_for_log_records(
        lambda r: str(r["body"]).startswith("Exception in ASGI application")
    )
    records = collector.log_records()
    console = service.log_text()
    written = log_file.read_text(encoding="utf-8")
    # Everything the collector received (log records, spans with their exception events
    # and status messages, metrics), as rotel printed it.
    for output in (console, written, repr(records), collector.output()):
        assert secret not in output
        assert CARD not in output

    # What was logged is there, masked, on each output.
    for entries in (_json_lines(console), _json_lines(written)):
        connecting = _one(entries, "message", "connecting to ")
        assert connecting["message"] == f"connecting to {MASKED_DSN}"
        assert (connecting["db_password"], connecting["target"]) == ("****", MASKED_DSN)
        signing_in = _one(entries, "message", "signing in")
        assert signing_in["password"] == "****"
        assert signing_in["headers"] == {"Authorization": "****", "Accept": "*/*"}
        assert signing_in["query"] == "user=app&token=****"
        assert _one(entries, "message", "customer card")["message"] == (
            "customer card **** charged"
        )
        handled = _one(entries, "message", "connect failed")
        assert f"ConnectionError: cannot reach {MASKED_DSN} (password=****" in handled["exception"]
        unhandled = _one(entries, "message", "Exception in ASGI application")
        assert f"RuntimeError: gave up on {MASKED_DSN}" in unhandled["exception"]

    connecting = _one(records, "body", "connecting to ")
    assert connecting["body"] == f"connecting to {MASKED_DSN}"
    assert connecting["attributes"]["db_password"] == "****"
    signing_in = _one(records, "body", "signing in")
    assert signing_in["attributes"]["password"] == "****"
    assert signing_in["attributes"]["query"] == "user=app&token=****"
    handled = _one(records, "body", "connect failed")["attributes"]
    assert handled["exception.message"] == f"cannot reach {MASKED_DSN} (password=****"
    unhandled = _one(records, "body", "Exception in ASGI application")["attributes"]
    assert unhandled["exception.message"] == f"gave up on {MASKED_DSN}"
    assert f"RuntimeError: gave up on {MASKED_DSN}" in unhandled["exception.stacktrace"]

    # log_context binds its fields to the request's span too: masked there alike.
    [span, _] = collector.wait_for_spans(lambda s: s["name"] == "GET /leak", count=2)
    assert (span["attributes"]["db_password"], span["attributes"]["target"]) == (
        "****",
        MASKED_DSN,
    )


def test_the_access_lines_otlp_attributes_are_named_by_the_conventions(
    rotel: Callable[[], Rotel], aiva_service: Callable[..., AivaService]
) -> None:
    collector = rotel()
    service = aiva_service(
        env={
            "AIVA_HEALTH__CHECKS__CPU__ENABLED": "false",
            "AIVA_TELEMETRY__OTLP__ENDPOINT": collector.grpc_endpoint,
            "AIVA_TELEMETRY__OTLP__PROTOCOL": "grpc",
        }
    )
    with service.client() as client:
        assert client.get("/api/demo/items/7").status_code == 200
    assert service.terminate() == 0

    [record] = collector.wait_for_log_records(
        lambda r: r["scope"] == "aiva.access" and "/api/demo/items/" in str(r["body"])
    )
    attributes = record["attributes"]
    assert attributes["http.request.method"] == "GET"
    assert attributes["http.route"] == "/api/demo/items/{item_id}"
    assert attributes["http.response.status_code"] == 200
    assert attributes["duration_ms"] >= 0
    assert not {"http_method", "http_route", "status_code"} & set(attributes)
    # The console line keeps the documented keys.
    [line] = [
        entry
        for entry in _json_lines(service.log_text())
        if entry["logger"] == "aiva.access" and "/api/demo/items/" in entry["message"]
    ]
    assert (line["http_method"], line["http_route"], line["status_code"]) == (
        "GET",
        "/api/demo/items/{item_id}",
        200,
    )
    assert line["duration_ms"] >= 0
