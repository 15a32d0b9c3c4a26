"""In-process cost of the default attribute value limit (telemetry.limits.attribute_value_length).

The limit touches two places a request goes through: the server span, whose attributes
the SDK cleans (and now cuts) as they are set (aiva's HttpTelemetry.start_span and
end_span, with the SDK's span limits built from the settings), and the access line on
its way to OTLP (aiva's OtlpLogHandler, which cuts long values itself). Each is timed
alone, without and with the default limit, so that a difference well under a
microsecond is not lost in the noise of a whole request: the best of several rounds of
many calls, the two settings interleaved. Nothing is exported while it runs.

Run: `taskset -c 0 python benchmarks/attribute_limit_inprocess.py [--rounds 9]`.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from typing import Any

from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, InMemoryLogRecordExporter
from opentelemetry.sdk.trace import TracerProvider

from aiva.settings import load_settings
from aiva.settings.model import LimitsSettings
from aiva.telemetry.http import HttpTelemetry
from aiva.telemetry.logs import OtlpLogHandler, OtlpLogs, log_record_limits
from aiva.telemetry.traces import span_limits

CALLS = 20_000
SCOPE = {
    "type": "http", "http_version": "1.1", "method": "GET", "scheme": "http",
    "path": "/items/1", "query_string": b"page=2", "client": ("127.0.0.1", 50000),
}  # fmt: skip
HEADERS = {
    b"host": b"api.example:8443",
    b"user-agent": b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    b"Chrome/126.0.0.0 Safari/537.36",
}


def _limits(**env: str) -> LimitsSettings:
    return load_settings(env, config_dir="/nonexistent").settings.telemetry.limits


def _server_span(limits: LimitsSettings) -> Callable[[], None]:
    http = HttpTelemetry(
        TracerProvider(span_limits=span_limits(limits)), NoOpMeterProvider(), excluded_paths=()
    )

    def request() -> None:
        span, token = http.start_span("GET", SCOPE, None, HEADERS, "http")
        http.end_span(span, token, "GET", "/items/{item_id}", 200, None)

    return request


def _access_line(limits: LimitsSettings) -> Callable[[], None]:
    processor = BatchLogRecordProcessor(
        InMemoryLogRecordExporter(), max_queue_size=10 * CALLS, schedule_delay_millis=3_600_000
    )
    logs = OtlpLogs(LoggerProvider(), processor, log_record_limits(limits))
    handler = OtlpLogHandler(logs)
    logger = logging.getLogger("aiva.access")

    def request() -> None:  # as aiva.web.middleware.AccessLog.write makes it
        record = logger.makeRecord(
            "aiva.access", logging.INFO, __file__, 0, "%s %s %d",
            ("GET", "/items/{item_id}", 200), None, "write",
        )  # fmt: skip
        record.__dict__.update(
            http_method="GET", http_route="/items/{item_id}", status_code=200, duration_ms=1.234
        )
        handler.emit(record)

    return request


def _best_us(call: Callable[[], None]) -> float:
    started = time.process_time()
    for _ in range(CALLS):
        call()
    return (time.process_time() - started) / CALLS * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    opts = parser.parse_args()
    unlimited = _limits(AIVA_TELEMETRY__LIMITS__ATTRIBUTE_VALUE_LENGTH="@none")
    default = _limits()
    for what, build in (("server span", _server_span), ("access line", _access_line)):
        paths: dict[str, Any] = {"no limit": build(unlimited), "default": build(default)}
        best = dict.fromkeys(paths, float("inf"))
        for _ in range(opts.rounds):
            for name, call in paths.items():
                best[name] = min(best[name], _best_us(call))
        print(
            f"{what:12s} no limit {best['no limit']:6.2f} us, limit "
            f"{default.attribute_value_length} {best['default']:6.2f} us: "
            f"{best['default'] - best['no limit']:+.2f} us a request"
        )


if __name__ == "__main__":
    main()
