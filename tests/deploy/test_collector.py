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
    assert pipelines["traces"]["exporters"] == ["otlp_grpc/jaeger"]
    assert pipelines["metrics"]["exporters"] == ["prometheus"]
    assert pipelines["logs"]["exporters"] == ["otlp_http/loki"]
    for pipeline in pipelines.values():
        assert pipeline["receivers"] == ["otlp"]
        # memory_limiter first (refuse before buffering); no deprecated `batch` processor.
        assert pipeline["processors"][0] == "memory_limiter"
        assert "batch" not in pipeline["processors"]
    # The push exporters batch in their sending queue instead.
    for name in ("otlp_grpc/jaeger", "otlp_http/loki"):
        assert "batch" in config["exporters"][name]["sending_queue"], name


def test_endpoints_match_the_stack(config: dict[str, Any]) -> None:
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert protocols["http"]["endpoint"] == "0.0.0.0:4318"
    # aiva's `collector` check (config/settings.yaml) GETs otel-collector:13133.
    assert config["extensions"]["health_check"]["endpoint"] == "0.0.0.0:13133"
    assert config["exporters"]["otlp_grpc/jaeger"]["endpoint"] == "jaeger:4317"
    assert config["exporters"]["otlp_http/loki"]["endpoint"] == "http://loki:3100/otlp"
    assert config["exporters"]["prometheus"]["endpoint"] == "0.0.0.0:8889"


# Component types the collector deprecated or renamed (contrib 0.166): what replaces them.
DEPRECATED_COMPONENTS = {
    ("exporters", "logging"): "debug",
    ("exporters", "otlp"): "otlp_grpc",
    ("exporters", "otlphttp"): "otlp_http",
    ("exporters", "loadbalancing"): "load_balancing",
    ("exporters", "prometheusremotewrite"): "prometheus_remote_write",
    ("processors", "batch"): "the exporters' sending_queue.batch",
}


def test_no_deprecated_component_names(config: dict[str, Any]) -> None:
    for kind in ("receivers", "processors", "exporters", "extensions", "connectors"):
        for component in config.get(kind) or {}:
            replacement = DEPRECATED_COMPONENTS.get((kind, component.split("/")[0]))
            assert replacement is None, f"{kind} {component}: deprecated, use {replacement}"
