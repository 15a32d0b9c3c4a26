"""`opentelemetry-instrument aiva serve`: auto-instrumentation on top of aiva leaves one
copy of each log record and a quiet shutdown."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path

import httpx

from infra.ports import free_port
from infra.processes import ManagedProcess
from infra.rotel import Rotel
from infra.service import answers, service_env

AUTO_INSTRUMENT = Path(sys.executable).with_name("opentelemetry-instrument")


def test_auto_instrumentation_doubles_no_log_record_and_shuts_down_quietly(
    rotel: Callable[[], Rotel], tmp_path: Path
) -> None:
    assert AUTO_INSTRUMENT.exists(), "opentelemetry-instrumentation installs it beside python"
    collector = rotel()
    port = free_port()
    env = service_env(
        {
            "AIVA_TELEMETRY__OTLP__ENDPOINT": collector.grpc_endpoint,
            "AIVA_TELEMETRY__OTLP__TIMEOUT_S": "2",
            "AIVA_HEALTH__CHECKS__CPU__ENABLED": "false",
            "OTEL_BLRP_SCHEDULE_DELAY": "200",
        },
        tmp_path,
    )
    argv = [str(AUTO_INSTRUMENT), sys.executable, "-m", "aiva", "serve", "--port", str(port)]
    service = ManagedProcess(argv=argv, log_path=tmp_path / "auto.log", env=env, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"

    try:
        service.start(lambda: answers(url + "/"), 30)
        answer = httpx.get(url + "/api/demo/items/1", headers={"X-Request-ID": "auto-once-1"})
        assert answer.status_code == 200
        service.signal(signal.SIGTERM)
        assert service.wait(20) == 0
    finally:
        service.stop()

    def access_record(record: dict[str, object]) -> bool:
        # Anywhere in the record: a second handler files aiva's fields under other keys.
        return "auto-once-1" in repr(record["attributes"]) and "items" in repr(record["body"])

    collector.wait_for_log_records(access_record)
    assert len([r for r in collector.log_records() if access_record(r)]) == 1
    log = service.log_text()
    assert "Traceback" not in log and "Callback failed" not in log, log[-3000:]
    assert "OpenTelemetry's own logging handler removed" in log
