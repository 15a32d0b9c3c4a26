"""The tracer provider: parent-based ratio sampling and batched OTLP export."""

from __future__ import annotations

from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    Decision,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import SpanContext, TraceState
from opentelemetry.util.types import Attributes

from aiva.fast import PLAIN, FastLayer
from aiva.fast.batch import count_drops
from aiva.settings import Settings
from aiva.settings.model import BatchSettings, LimitsSettings, TracesSettings
from aiva.telemetry.exporters import CountingSpanExporter, ExportStats, otlp_exporter
from aiva.telemetry.otlp_target import otlp_target, within
from aiva.telemetry.sdk_drops import SdkDropCounts
from aiva.telemetry.spans import LeanTracerProvider, ParentDecidingSampler


class AdjustableRatioSampler(ParentDecidingSampler):
    """The SDK's standard samplers (OTEL_TRACES_SAMPLER) as one sampler, whose ratio can
    change while the service runs (hot reload) for the *traceidratio ones.

    `parent_based`: ParentBased(root), where a valid parent's sampled flag decides
    (ParentBased's defaults); otherwise, or without a parent, the trace id's low 64 bits
    are compared with the ratio's bound (TraceIdRatioBased; ratio 1 is AlwaysOn and 0
    AlwaysOff, whose decisions are the same). One sampler rather than the SDK's pair:
    the parent is looked up once instead of twice, and a dropped root span (nine in ten
    at ratio 0.1) reuses one result instead of building its own. A test compares its
    decisions with the SDK's. The ratio and its bound change together in one
    assignment, so a request in flight sees the old or the new ratio, never a mix.
    """

    def __init__(self, ratio: float, *, parent_based: bool = True, adjustable: bool = True) -> None:
        self._rule = _rule(ratio)
        self._parent_based = parent_based
        self._adjustable = adjustable

    @property
    def ratio(self) -> float:
        return self._rule[0]

    def set_ratio(self, ratio: float) -> None:
        """A new ratio for the *traceidratio samplers; the always_* ones keep theirs."""
        if self._adjustable:
            self._rule = _rule(ratio)

    def decide(self, parent: SpanContext, trace_id: int, attributes: Attributes) -> SamplingResult:
        """should_sample's answer (ParentDecidingSampler's, which looks the parent up) for a
        parent's span context (invalid: none)."""
        if self._parent_based and parent.is_valid:
            sampled = parent.trace_flags.sampled
            state: TraceState | None = parent.trace_state
        else:
            sampled = trace_id & TraceIdRatioBased.TRACE_ID_LIMIT < self._rule[1]
            state = parent.trace_state if parent.is_valid else None
        if sampled:
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, state)
        return _DROP if state is None else SamplingResult(Decision.DROP, None, state)

    def get_description(self) -> str:
        ratio = self.ratio
        if self._adjustable:
            root = f"TraceIdRatioBased{{{ratio}}}"
        else:
            root = "AlwaysOnSampler" if ratio == 1.0 else "AlwaysOffSampler"
        return f"ParentBased{{root:{root}}}" if self._parent_based else root


# OTEL_TRACES_SAMPLER's names: (parent-based, fixed ratio or None for sampler_ratio).
_SAMPLERS: dict[str, tuple[bool, float | None]] = {
    "always_on": (False, 1.0),
    "always_off": (False, 0.0),
    "traceidratio": (False, None),
    "parentbased_always_on": (True, 1.0),
    "parentbased_always_off": (True, 0.0),
    "parentbased_traceidratio": (True, None),
}


def build_sampler(traces: TracesSettings) -> AdjustableRatioSampler:
    """The configured standard sampler (the ratio is used by the *traceidratio ones only)."""
    parent_based, fixed = _SAMPLERS[traces.sampler]
    ratio = traces.sampler_ratio if fixed is None else fixed
    return AdjustableRatioSampler(ratio, parent_based=parent_based, adjustable=fixed is None)


_DROP = SamplingResult(Decision.DROP, None, None)


def _rule(ratio: float) -> tuple[float, int]:
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"sampler ratio must be within [0, 1], got {ratio}")
    return ratio, TraceIdRatioBased.get_bound_for_rate(ratio)


def build_tracer_provider(
    settings: Settings, resource: Resource, stats: ExportStats, fast: FastLayer = PLAIN
) -> tuple[LeanTracerProvider, AdjustableRatioSampler]:
    """The provider with its exporters (OTLP when an endpoint is set, console) and sampler;
    `fast`: the fast layer's hooks in use. The provider also hands aiva's own tracers
    lean spans (aiva.telemetry.spans)."""
    traces = settings.telemetry.traces
    sampler = build_sampler(traces)
    provider = LeanTracerProvider(
        resource=resource,
        sampler=sampler,
        span_limits=span_limits(settings.telemetry.limits),
        shutdown_on_exit=False,
    )
    target = otlp_target(settings.telemetry.otlp, "traces")
    if "otlp" in traces.exporters and target is not None:
        exporter = CountingSpanExporter(
            otlp_exporter(within(target, traces.batch.export_timeout_s), fast), stats, fast
        )
        if "batch_drop_counts" in fast:
            processor = _batch(exporter, traces.batch)
            count_drops(processor, stats, "spans")
        else:  # the plain pipeline: the SDK's own processor metrics count the drops
            drops = SdkDropCounts(stats, "spans")
            processor = drops.built(lambda meters: _batch(exporter, traces.batch, meters))
        provider.add_span_processor(processor)
    if "console" in traces.exporters:  # written by the batch thread, never the event loop
        provider.add_span_processor(_batch(ConsoleSpanExporter(), traces.batch))
    return provider, sampler


def span_limits(limits: LimitsSettings) -> SpanLimits:
    """Every limit given explicitly: SpanLimits reads OTEL_* variables for what it is not
    given, and the settings hold those already. A span's own limit wins over the general."""
    spans = limits.spans

    def pick(*values: int | None, default: int | None = None) -> int | None:
        chosen = next((v for v in values if v is not None), default)
        return SpanLimits.UNSET if chosen is None else chosen

    count = limits.attribute_count
    return SpanLimits(
        max_attributes=pick(count, default=_DEFAULT_COUNT),
        max_span_attributes=pick(spans.attribute_count, count, default=_DEFAULT_COUNT),
        max_events=pick(spans.event_count, default=_DEFAULT_COUNT),
        max_links=pick(spans.link_count, default=_DEFAULT_COUNT),
        max_event_attributes=pick(spans.event_attribute_count, count, default=_DEFAULT_COUNT),
        max_link_attributes=pick(spans.link_attribute_count, count, default=_DEFAULT_COUNT),
        max_attribute_length=pick(limits.attribute_value_length),
        max_span_attribute_length=pick(spans.attribute_value_length, limits.attribute_value_length),
    )


# The specification's default count limits (the SDK's too).
_DEFAULT_COUNT = 128


def _batch(
    exporter: SpanExporter, batch: BatchSettings, meter_provider: MeterProvider | None = None
) -> BatchSpanProcessor:
    return BatchSpanProcessor(
        exporter,
        meter_provider=meter_provider,
        max_queue_size=batch.max_queue_size,
        schedule_delay_millis=batch.schedule_delay_s * 1000,
        max_export_batch_size=min(batch.max_export_batch_size, batch.max_queue_size),
        export_timeout_millis=batch.export_timeout_s * 1000,
    )
