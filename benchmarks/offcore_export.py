"""What moving OTLP encoding to another process could save: encode vs flatten-and-pickle.

    python benchmarks/offcore_export.py

Builds N real SDK spans and log records (aiva's resource and access-line shape), then
times, per item, the OTLP protobuf encoding the exporter threads do today against
flattening each item to a tuple and pickling it (what a pipe to an exporter process
would cost on the serving core). Single process, no network.
"""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Callable

from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs as sdk_encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import (
    encode_spans as sdk_encode_spans,
)
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aiva.fast.otlp_encoding import encode_logs, encode_spans
from aiva.settings import load_settings
from aiva.telemetry.logs import OtlpLogHandler, OtlpLogs
from aiva.telemetry.resource import build_resource

N = 5000


def per_item_us(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) / N * 1e6


def main() -> None:
    resource = build_resource(load_settings({}, config_dir="/nonexistent").settings)
    logs_out = InMemoryLogRecordExporter()
    logger_provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
    processor = SimpleLogRecordProcessor(logs_out)
    logger_provider.add_log_record_processor(processor)
    log = logging.getLogger("bench.access")
    handler = OtlpLogHandler(OtlpLogs(logger_provider, processor))
    log.propagate, log.handlers = False, [handler]
    log.setLevel(logging.INFO)
    extra = {"http_method": "GET", "http_route": "/items/{id}", "status_code": 200}
    for _ in range(N):
        log.info("GET /items/{id} 200", extra=extra)
    logs = list(logs_out.get_finished_logs())

    spans_out = InMemorySpanExporter()
    tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans_out))
    tracer = tracer_provider.get_tracer("bench")
    for _ in range(N):
        span = tracer.start_span("GET /items/{id}", attributes={"http.request.method": "GET"})
        span.set_attributes({"http.route": "/items/{id}", "http.response.status_code": 200})
        span.end()
    spans = list(spans_out.get_finished_spans())

    def log_tuples() -> bytes:
        return pickle.dumps(
            [
                (r.log_record.timestamp, r.log_record.body, dict(r.log_record.attributes or {}))
                for r in logs
            ]
        )

    def span_tuples() -> bytes:
        return pickle.dumps(
            [
                (s.name, s.context.trace_id, s.start_time, s.end_time, dict(s.attributes or {}))
                for s in spans
                if s.context is not None
            ]
        )

    rows = {
        "SDK encode spans": lambda: sdk_encode_spans(spans).SerializeToString(),
        "aiva encode spans": lambda: encode_spans(spans).SerializeToString(),
        "pickle span tuples": span_tuples,
        "SDK encode logs": lambda: sdk_encode_logs(logs).SerializeToString(),
        "aiva encode logs": lambda: encode_logs(logs).SerializeToString(),
        "pickle log tuples": log_tuples,
    }
    for label, action in rows.items():
        best = min(per_item_us(action) for _ in range(3))  # first runs warm caches up
        print(f"{label:<20}{best:6.1f} us/item")


if __name__ == "__main__":
    main()
