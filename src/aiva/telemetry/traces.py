"""The tracer provider: parent-based ratio sampling and batched OTLP export."""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import (
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind, TraceState
from opentelemetry.util.types import Attributes

from aiva.settings import Settings
from aiva.telemetry.exporters import CountingSpanExporter, ExportStats, count_drops, otlp_exporter


class AdjustableRatioSampler(Sampler):
    """TraceIdRatioBased whose ratio can change while the service runs (hot reload).

    The SDK's samplers are immutable; swapping the delegate is one atomic assignment,
    so a request in flight sees either the old or the new ratio, never a mix.
    """

    def __init__(self, ratio: float) -> None:
        self._delegate = TraceIdRatioBased(ratio)

    @property
    def ratio(self) -> float:
        return self._delegate.rate

    def set_ratio(self, ratio: float) -> None:
        self._delegate = TraceIdRatioBased(ratio)

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        return self._delegate.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"AdjustableRatioSampler{{{self._delegate.rate}}}"


def build_tracer_provider(
    settings: Settings, resource: Resource, stats: ExportStats
) -> tuple[TracerProvider, AdjustableRatioSampler]:
    """The provider (with OTLP export when an endpoint is set) and its adjustable sampler."""
    sampler = AdjustableRatioSampler(settings.telemetry.traces.sampler_ratio)
    provider = TracerProvider(
        resource=resource, sampler=ParentBased(root=sampler), shutdown_on_exit=False
    )
    otlp = settings.telemetry.otlp
    if otlp.endpoint:
        processor = BatchSpanProcessor(CountingSpanExporter(otlp_exporter(otlp, "traces"), stats))
        count_drops(processor, stats, "spans")
        provider.add_span_processor(processor)
    return provider, sampler
