"""The collector config is coherent (the collector binary cannot run here: a structural check)."""

from __future__ import annotations

from typing import Any

import pytest

from ._repo import COLLECTOR, load_yaml


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return dict(load_yaml(COLLECTOR))


def test_pipelines_reference_only_defined_components(config: dict[str, Any]) -> None:
    service = config["service"]
    for extension in service.get("extensions", []):
        assert extension in config["extensions"], extension
    for name, pipeline in service["pipelines"].items():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in config[kind], f"pipeline {name}: undefined {kind} {component}"


def test_every_signal_has_a_pipeline_to_its_backend(config: dict[str, Any]) -> None:
    pipelines = config["service"]["pipelines"]
    assert pipelines["traces"]["exporters"] == ["otlp/jaeger"]
    assert pipelines["metrics"]["exporters"] == ["prometheus"]
    assert pipelines["logs"]["exporters"] == ["otlphttp/loki"]
    for pipeline in pipelines.values():
        assert pipeline["receivers"] == ["otlp"]
        # memory_limiter first (refuse before buffering), batch last.
        assert pipeline["processors"][0] == "memory_limiter"
        assert pipeline["processors"][-1] == "batch"


def test_endpoints_match_the_stack(config: dict[str, Any]) -> None:
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert protocols["http"]["endpoint"] == "0.0.0.0:4318"
    # aiva's `collector` check (config/settings.yaml) GETs otel-collector:13133.
    assert config["extensions"]["health_check"]["endpoint"] == "0.0.0.0:13133"
    assert config["exporters"]["otlp/jaeger"]["endpoint"] == "jaeger:4317"
    assert config["exporters"]["otlphttp/loki"]["endpoint"] == "http://loki:3100/otlp"
    assert config["exporters"]["prometheus"]["endpoint"] == "0.0.0.0:8889"
