"""The SDK's OTLP/gRPC span and log exporters, encoding with aiva's in-place encoder.

Only the request building changes (`_translate_data`, the SDK's hook for it); retries,
timeouts, TLS, headers and compression stay the SDK's. The HTTP/protobuf exporters
encode inside `export()` with no such hook, so they keep the SDK's encoder.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.exporter.otlp.proto.grpc._log_exporter import (
    OTLPLogExporter as SdkOTLPLogExporter,
)
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as SdkOTLPSpanExporter,
)
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.trace import ReadableSpan

from aiva.fast.otlp_encoding import encode_logs, encode_spans


class OTLPSpanExporter(SdkOTLPSpanExporter):
    def _translate_data(self, data: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
        return encode_spans(data)


class OTLPLogExporter(SdkOTLPLogExporter):
    def _translate_data(self, data: Sequence[ReadableLogRecord]) -> ExportLogsServiceRequest:
        return encode_logs(data)
