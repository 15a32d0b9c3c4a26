"""Scrubbing of log records: message, extras, log_context fields and exceptions, masked
once a record for every output (JSON lines, readable lines, OTLP)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from aiva.api import log_context, operation, tracer
from aiva.context import request_id_var
from aiva.settings import SettingsError, load_settings
from aiva.telemetry.log_setup import claim_logging
from aiva.telemetry.logs import ConsoleFormatter, JsonFormatter, OtlpLogHandler, OtlpLogs
from aiva.telemetry.scrub import RecordScrubber
from aiva.web.middleware import AccessLog
from infra.service import service_env
from tests.telemetry.conftest import InMemoryTelemetry
from tests.telemetry.test_logs import _in_memory_pipeline

SECRET = "Canary7f3a9c2e"
DSN = f"postgresql://app:{SECRET}@db:5432/orders"


def _record(
    msg: str = "m",
    args: tuple[object, ...] | None = None,
    name: str = "svc",
    error: BaseException | None = None,
    **extras: object,
) -> logging.LogRecord:
    exc_info = (type(error), error, error.__traceback__) if error is not None else None
    record = logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, exc_info)
    record.__dict__.update(extras)
    return record


def _raised(error: BaseException) -> BaseException:
    try:
        raise error
    except BaseException as caught:  # noqa: BLE001 - handed back to the test
        return caught


def test_the_message_and_its_arguments_are_scrubbed() -> None:
    view = RecordScrubber().view(_record("connect to %s with password=%s", (DSN, SECRET)))
    assert view.message == ("connect to postgresql://app:****@db:5432/orders with password=****")


def test_extras_are_scrubbed_by_name_and_by_value_at_any_depth() -> None:
    record = _record(
        password=SECRET,
        db_password=1234,  # not text, still a secret by its name
        note=None,
        headers={"Authorization": f"Bearer {SECRET}", "Accept": "*/*"},
        calls=[{"url": DSN}, ("token=" + SECRET, 2)],
        target=DSN,
        count=3,
    )
    fields = RecordScrubber().view(record).fields
    assert fields["password"] == fields["db_password"] == "****"
    assert fields["note"] is None
    assert fields["headers"] == {"Authorization": "****", "Accept": "*/*"}
    assert fields["calls"] == [{"url": "postgresql://app:****@db:5432/orders"}, ["token=****", 2]]
    assert fields["target"] == "postgresql://app:****@db:5432/orders"
    assert fields["count"] == 3
    assert SECRET not in repr(fields)


class _Connection:
    def __str__(self) -> str:
        return f"<Connection {DSN}>"


def test_values_written_as_their_str_are_scrubbed_and_the_others_kept() -> None:
    plain = ("x", 1)
    fields = RecordScrubber().view(_record(conn=_Connection(), plain=plain)).fields
    assert fields["conn"] == "<Connection postgresql://app:****@db:5432/orders>"
    assert fields["plain"] is plain  # nothing masked: written as before


def test_log_context_fields_and_the_request_id_are_scrubbed() -> None:
    token = request_id_var.set("req-1")
    try:
        with log_context(client_secret=SECRET, upstream=DSN, component="orders"):
            fields = RecordScrubber().view(_record()).fields
    finally:
        request_id_var.reset(token)
    assert fields == {
        "request_id": "req-1",
        "client_secret": "****",
        "upstream": "postgresql://app:****@db:5432/orders",
        "component": "orders",
    }


def test_the_exceptions_text_and_traceback_are_scrubbed() -> None:
    error = _raised(ConnectionError(f"cannot reach {DSN} (password={SECRET})"))
    view = RecordScrubber().view(_record("failed", error=error))
    # A bare value runs to the next space: the `)` goes with it.
    assert (
        view.exception_message == "cannot reach postgresql://app:****@db:5432/orders (password=****"
    )
    assert view.stacktrace is not None
    assert "ConnectionError: cannot reach postgresql://app:****@db" in view.stacktrace
    assert SECRET not in view.stacktrace


def test_extra_patterns_apply_on_top_of_the_built_in_ones() -> None:
    scrubber = RecordScrubber([r"(?<=card )[0-9]{4}(?:-[0-9]{4}){3}"])
    view = scrubber.view(_record("card 4111-1111-1111-1111 and token=%s", (SECRET,)))
    assert view.message == "card **** and token=****"


def test_a_record_is_scrubbed_once_for_every_output() -> None:
    record = _record(target=DSN)
    first = RecordScrubber()
    view = first.view(record)
    assert first.view(record) is view
    assert RecordScrubber().view(record) is view  # another one with the same patterns
    other = RecordScrubber(["Canary"]).view(record)  # other patterns: scrubbed again
    assert other is not view and other.fields["target"] == "postgresql://app:****@db:5432/orders"


def test_the_access_lines_own_fields_pass_and_fields_a_filter_adds_are_scrubbed() -> None:
    record = _record(
        "%s %s %d",
        ("GET", "/items/{id}", 200),
        name="aiva.access",
        http_method="GET",
        http_route="/items/{id}",
        status_code=200,
        duration_ms=1.5,
        referer=f"https://shop/?token={SECRET}",
    )
    fields = RecordScrubber().view(record).fields
    assert fields == {
        "http_method": "GET",
        "http_route": "/items/{id}",
        "status_code": 200,
        "duration_ms": 1.5,
        "referer": "https://shop/?token=****",
    }


def _leaky_record() -> logging.LogRecord:
    error = _raised(RuntimeError(f"gave up on {DSN}"))
    return _record("login to %s failed", (DSN,), error=error, password=SECRET)


def test_json_and_readable_lines_show_the_scrubbed_record() -> None:
    record = _leaky_record()
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "login to postgresql://app:****@db:5432/orders failed"
    assert entry["password"] == "****"
    assert "RuntimeError: gave up on postgresql://app:****@db" in entry["exception"]
    assert not entry["exception"].endswith("\n")  # as logging.Formatter writes it
    text = ConsoleFormatter("%(levelname)s %(name)s: %(message)s").format(record)
    assert text.startswith("ERROR svc: login to postgresql://app:****@db:5432/orders failed\n")
    assert "RuntimeError: gave up on postgresql://app:****@db" in text
    for output in (json.dumps(entry), text):
        assert SECRET not in output


def test_a_readable_lines_stack_is_scrubbed() -> None:
    def log_here() -> logging.LogRecord:
        password = SECRET  # noqa: F841 - in the stack's source line below
        record = _record("m")
        record.stack_info = f"Stack (most recent call last):\n  connect(password={SECRET})"
        return record

    text = ConsoleFormatter("%(message)s").format(log_here())
    assert "connect(password=****" in text and SECRET not in text


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_the_console_aiva_configures_is_scrubbed(
    log_format: str, capsys: pytest.CaptureFixture[str]
) -> None:
    logs = load_settings(
        {
            "AIVA_TELEMETRY__LOGS__FORMAT": log_format,
            "AIVA_TELEMETRY__LOGS__SCRUB__PATTERNS": '["Canary[0-9a-f]+"]',
        },
        config_dir="/nonexistent",
    ).settings.telemetry.logs
    root = logging.getLogger()
    saved = list(root.handlers)
    root.handlers[:] = []  # nothing configured: aiva sets the console up
    try:
        release = claim_logging(logs, None)
        logging.getLogger("svc").warning("connect to %s as %s", DSN, "Canary0123abcd")
        release()
    finally:
        root.handlers[:] = saved
    written = capsys.readouterr().err
    assert "connect to postgresql://app:****@db:5432/orders as ****" in written
    assert SECRET not in written and "Canary0123abcd" not in written


def test_the_otlp_record_is_scrubbed() -> None:
    exporter, provider, processor = _in_memory_pipeline()
    OtlpLogHandler(OtlpLogs(provider, processor)).emit(_leaky_record())
    assert provider.force_flush(5000)
    [queued] = exporter.get_finished_logs()
    log = queued.log_record
    attributes = dict(log.attributes or {})
    assert log.body == "login to postgresql://app:****@db:5432/orders failed"
    assert attributes["password"] == "****"
    assert attributes["exception.message"] == "gave up on postgresql://app:****@db:5432/orders"
    assert "RuntimeError: gave up on postgresql://app:****@db" in attributes["exception.stacktrace"]
    assert SECRET not in repr(attributes)
    provider.shutdown()


def test_the_access_lines_otlp_attributes_are_named_by_the_conventions() -> None:
    exporter, provider, processor = _in_memory_pipeline()
    access = logging.getLogger("aiva.access")
    otlp = OtlpLogHandler(OtlpLogs(provider, processor))
    lines: list[str] = []
    console = logging.Handler()
    console.setFormatter(JsonFormatter())
    console.emit = lambda record: lines.append(console.format(record))  # type: ignore[method-assign]
    previous = access.level
    access.setLevel(logging.INFO)
    access.addHandler(otlp)
    access.addHandler(console)
    try:
        AccessLog().write("GET", "/items/{id}", 404, 0.0025, quiet=False)
        AccessLog().write("GET", None, 404, 0.001, quiet=False)  # unmatched: no route
    finally:
        access.removeHandler(otlp)
        access.removeHandler(console)
        access.setLevel(previous)
    assert provider.force_flush(5000)
    matched, unmatched = (dict(r.log_record.attributes or {}) for r in exporter.get_finished_logs())
    assert matched == {
        "http.request.method": "GET",
        "http.route": "/items/{id}",
        "http.response.status_code": 404,
        "duration_ms": 2.5,
    }
    assert "http.route" not in unmatched and unmatched["http.response.status_code"] == 404
    # The console keeps the documented keys.
    entry = json.loads(lines[0])
    assert (entry["http_method"], entry["http_route"], entry["status_code"]) == (
        "GET",
        "/items/{id}",
        404,
    )
    assert entry["duration_ms"] == 2.5
    provider.shutdown()


def test_log_context_masks_its_fields_on_the_span_too(otel: InMemoryTelemetry) -> None:
    with tracer().start_as_current_span("work"), log_context(api_key=SECRET, upstream=DSN, n=1):
        pass
    [span] = otel.spans.get_finished_spans()
    assert dict(span.attributes or {}) == {
        "api_key": "****",
        "upstream": "postgresql://app:****@db:5432/orders",
        "n": 1,
    }


def test_an_operations_exception_is_masked_on_its_span(otel: InMemoryTelemetry) -> None:
    with pytest.raises(ConnectionError), operation("connect"):
        raise ConnectionError(f"cannot reach {DSN}")
    [span] = otel.spans.get_finished_spans()
    assert span.status.description == "cannot reach postgresql://app:****@db:5432/orders"
    [event] = span.events
    attributes = dict(event.attributes or {})
    assert attributes["exception.message"] == "cannot reach postgresql://app:****@db:5432/orders"
    assert attributes["exception.type"] == "ConnectionError"
    assert SECRET not in repr(attributes)


def test_scrub_patterns_are_a_setting() -> None:
    env = {"AIVA_TELEMETRY__LOGS__SCRUB__PATTERNS": '["ssn-[0-9]+", "(?<=card )[0-9-]+"]'}
    loaded = load_settings(env, config_dir="/nonexistent")
    assert loaded.settings.telemetry.logs.scrub.patterns == ("ssn-[0-9]+", "(?<=card )[0-9-]+")
    assert load_settings({}, config_dir="/nonexistent").settings.telemetry.logs.scrub.patterns == ()


def test_an_invalid_scrub_pattern_is_a_settings_error() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(
            {"AIVA_TELEMETRY__LOGS__SCRUB__PATTERNS": '["ok", "(unclosed"]'},
            config_dir="/nonexistent",
        )
    [problem] = caught.value.problems
    assert problem.key == "telemetry.logs.scrub.patterns"
    assert "regular expressions" in problem.rule


def test_aiva_serve_refuses_an_invalid_scrub_pattern_with_exit_2(tmp_path: Path) -> None:
    env = service_env({"AIVA_TELEMETRY__LOGS__SCRUB__PATTERNS": '["(unclosed"]'}, tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "aiva", "serve", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("settings error: telemetry.logs.scrub.patterns: must be a list")
