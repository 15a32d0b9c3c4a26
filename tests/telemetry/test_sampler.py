"""aiva's one-piece sampler decides exactly as the SDK's ParentBased(TraceIdRatioBased)."""

from __future__ import annotations

import random

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import ParentBased, SamplingResult, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from aiva.telemetry.traces import AdjustableRatioSampler

ATTRIBUTES = {"http.request.method": "GET"}


def _parents(rng: random.Random) -> list[Context | None]:
    """No parent, an invalid one, and valid local and remote parents, sampled or not."""
    contexts: list[Context | None] = [
        None,
        trace.set_span_in_context(trace.INVALID_SPAN),
    ]
    for remote in (False, True):
        for flags in (TraceFlags.DEFAULT, TraceFlags.SAMPLED):
            for state in (None, TraceState([("vendor", "v1")])):
                parent = SpanContext(
                    rng.getrandbits(128), rng.getrandbits(64), remote, TraceFlags(flags), state
                )
                contexts.append(trace.set_span_in_context(NonRecordingSpan(parent)))
    return contexts


def _view(result: SamplingResult) -> tuple[object, ...]:
    return (result.decision, dict(result.attributes), result.trace_state)


@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.5, 1.0])
def test_decisions_equal_the_sdk_parent_based_ratio_sampler(ratio: float) -> None:
    rng = random.Random(ratio)
    ours = AdjustableRatioSampler(ratio)
    sdk = ParentBased(root=TraceIdRatioBased(ratio))
    sampled = 0
    for parent in _parents(rng):
        for _ in range(400):
            trace_id = rng.getrandbits(128)
            expected = sdk.should_sample(parent, trace_id, "GET", attributes=ATTRIBUTES)
            actual = ours.should_sample(parent, trace_id, "GET", attributes=ATTRIBUTES)
            assert _view(actual) == _view(expected), (parent, trace_id)
            sampled += actual.decision.is_sampled()
    assert sampled > 0  # sampled parents are always followed


def test_the_ratio_changes_while_running() -> None:
    sampler = AdjustableRatioSampler(0.0)
    rng = random.Random(1)
    trace_ids = [rng.getrandbits(128) for _ in range(200)]

    def sampled() -> int:
        return sum(sampler.should_sample(None, t, "x").decision.is_sampled() for t in trace_ids)

    assert sampled() == 0
    sampler.set_ratio(1.0)
    assert sampler.ratio == 1.0
    assert sampled() == len(trace_ids)
    assert "1.0" in sampler.get_description()


@pytest.mark.parametrize("ratio", [-0.1, 1.5])
def test_a_ratio_outside_0_to_1_is_refused(ratio: float) -> None:
    with pytest.raises(ValueError, match="within"):
        AdjustableRatioSampler(ratio)
    with pytest.raises(ValueError, match="within"):
        AdjustableRatioSampler(0.5).set_ratio(ratio)
