"""Every label the dashboards and alert rules read off a process or system metric is one
that metric carries on /metrics.

The live PromQL test (tests/deploy/test_live_promql.py) proves each expression returns
data, but `sum by (instance, type) (...)` returns data whether or not a `type` label
exists: a renamed label would leave a panel with one merged line and no failure there.
"""

from __future__ import annotations

import re

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

import aiva
from aiva.settings import load_settings
from tests.deploy._repo import DASHBOARDS, alert_rules, load_json, panels

SYSTEM_METRIC = re.compile(r"\b((?:process|system|cpython)_\w+)")
# Labels every scraped series gets from Prometheus itself.
TARGET_LABELS = {"job", "instance"}
SUFFIXES = ("_total", "_bucket", "_count", "_sum")


def queries() -> list[tuple[str, str, str]]:
    """(where, PromQL, legend) of every dashboard target and alert rule."""
    found = [
        (f"{path.name}: {panel['title']}", target["expr"], target.get("legendFormat", ""))
        for path in DASHBOARDS
        for panel in panels(load_json(path))
        for target in panel.get("targets", [])
    ]
    return found + [(f"alerts.yml: {name}", expr, "") for name, expr in alert_rules().items()]


def labels_used(expr: str, legend: str) -> set[str]:
    """Labels an expression groups or matches by, and those its legend prints."""
    used: set[str] = set()
    for clause in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        used |= {label.strip() for label in clause.split(",") if label.strip()}
    for selector in re.findall(r"\{([^}]*)\}", expr):
        used |= set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", selector))
    return used | set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))


@pytest.fixture(scope="module")
def exposed() -> dict[str, set[str]]:
    """Sample name -> label names on a live /metrics of aiva's own app."""
    settings = load_settings({}, config_dir="/nonexistent").settings
    with TestClient(aiva.create_app(settings)) as client:
        text = client.get("/metrics").text
    found: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, set()).update(sample.labels)
    return found


def metrics_read(expr: str) -> set[str]:
    """The process and system metric names in an expression (labels set aside)."""
    bare = re.sub(r"\b(?:by|without)\s*\([^)]*\)|\{[^}]*\}", " ", expr)
    return set(SYSTEM_METRIC.findall(bare))


def system_queries() -> list[tuple[str, str, str]]:
    return [q for q in queries() if metrics_read(q[1])]


def test_the_dashboards_read_process_and_system_metrics() -> None:
    assert len(system_queries()) >= 10


@pytest.mark.fast_layer("metric_producers")
@pytest.mark.parametrize(
    ("where", "expr", "legend"), system_queries(), ids=[q[0] for q in system_queries()]
)
def test_labels_exist_on_the_metrics_read(
    where: str, expr: str, legend: str, exposed: dict[str, set[str]]
) -> None:
    names = metrics_read(expr)
    missing_metrics = sorted(names - set(exposed))
    assert not missing_metrics, f"{where}: no such series on /metrics: {missing_metrics}"
    carried = set().union(*(exposed[name] for name in names)) | TARGET_LABELS
    unknown = sorted(labels_used(expr, legend) - carried)
    assert not unknown, f"{where}: {unknown} not on {sorted(names)} (carried: {sorted(carried)})"


def test_old_label_names_would_be_caught() -> None:
    assert labels_used('sum by (instance, type) (rate(x{state="idle"}[1m]))', "{{device}}") == {
        "instance",
        "type",
        "state",
        "device",
    }
