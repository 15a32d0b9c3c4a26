"""docs/deployment.md explains how to start the stack, where to click, and every dashboard."""

from __future__ import annotations

import yaml

from ._repo import DASHBOARDS, DOCS, alert_rules, load_json


def test_docs_cover_the_stack() -> None:
    text = DOCS.read_text(encoding="utf-8")
    assert "docker compose up" in text
    for url in ("localhost:3000", "localhost:16686", "localhost:9090", "localhost:8000"):
        assert url in text
    for path in DASHBOARDS:
        assert load_json(path)["title"] in text
    for alert in alert_rules():
        assert alert in text
    assert "deploy/kubernetes" in text


def test_docs_go_beyond_one_machine() -> None:
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("## Beyond one machine", 1)[1].split("\n## ", 1)[0]
    for needed in (
        "kubernetes_sd_configs",  # Prometheus finds every pod ...
        "PodMonitor",
        "Never scrape through the Service",  # ... and not through the load balancer
        "load_balancing",  # the gateway routing by trace id to tail samplers
        "routing_key: traceID",
        "tail_sampling",
        "hpa.yaml",
        "requests.cpu",
        "--workers N",
        "service.instance.id",
        "exemplar-storage",
    ):
        assert needed in section, needed
    # Every YAML example in the section parses.
    blocks = section.split("```yaml\n")[1:]
    assert len(blocks) >= 3
    for block in blocks:
        assert list(yaml.safe_load_all(block.split("```", 1)[0]))
