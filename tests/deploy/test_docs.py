"""docs/deployment.md explains how to start the stack, where to click, and every dashboard."""

from __future__ import annotations

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
