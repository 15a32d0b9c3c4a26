"""Paths of the deployment stack's files and readers for them (shared by tests/deploy)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
COLLECTOR = REPO / "otel-collector" / "config.yaml"
PROMETHEUS_DIR = REPO / "config" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERT_TESTS = PROMETHEUS_DIR / "alerts_test.yml"
GRAFANA_DIR = REPO / "config" / "grafana"
DASHBOARDS = sorted((GRAFANA_DIR / "dashboards").glob("*.json"))
DATASOURCES = GRAFANA_DIR / "provisioning" / "datasources" / "datasources.yaml"
KUBERNETES = REPO / "deploy" / "kubernetes"
DOCS = REPO / "docs" / "deployment.md"


def load_yaml(path: Path) -> Any:
    """One YAML document."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_json(path: Path) -> Any:
    """One JSON document."""
    return json.loads(path.read_text(encoding="utf-8"))


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def dashboard_expressions() -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable of every dashboard.

    A variable `label_values(SELECTOR, label)` becomes `count by (label) (SELECTOR)`:
    it has data exactly when Grafana would offer values.
    """
    found: list[tuple[str, str]] = []
    for path in DASHBOARDS:
        board = load_json(path)
        for panel in panels(board):
            for target in panel.get("targets", []):
                found.append((f"{path.name}: {panel['title']} [{target['refId']}]", target["expr"]))
        for var in board.get("templating", {}).get("list", []):
            match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", var["query"]["query"])
            assert match, f"{path.name}: variable {var['name']} is not label_values(...)"
            found.append(
                (f"{path.name}: variable ${var['name']}", f"count by ({match[2]}) ({match[1]})")
            )
    return found


def exemplar_targets() -> list[str]:
    """Where (dashboard: panel [refId]) every panel target that asks Grafana for exemplars."""
    return [
        f"{path.name}: {panel['title']} [{target['refId']}]"
        for path in DASHBOARDS
        for panel in panels(load_json(path))
        for target in panel.get("targets", [])
        if target.get("exemplar")
    ]


def alert_rules() -> dict[str, str]:
    """alertname -> expr of every alert in alerts.yml."""
    return {
        rule["alert"]: rule["expr"]
        for group in load_yaml(ALERTS)["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
