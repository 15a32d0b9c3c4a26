"""Grafana provisioning: datasources with fixed uids and cross-links, dashboards Grafana can load."""

from __future__ import annotations

from typing import Any

import pytest

from ._repo import DASHBOARDS, DATASOURCES, GRAFANA_DIR, load_json, load_yaml, panels

TITLES = {
    "aiva-red": "aiva / RED per route",
    "aiva-health": "aiva / Health",
    "aiva-resources": "aiva / Process and system resources",
    "aiva-telemetry": "aiva / Telemetry pipeline",
}


@pytest.fixture(scope="module")
def datasources() -> dict[str, dict[str, Any]]:
    return {ds["uid"]: ds for ds in load_yaml(DATASOURCES)["datasources"]}


def test_datasources_and_their_links(datasources: dict[str, dict[str, Any]]) -> None:
    assert {uid: ds["type"] for uid, ds in datasources.items()} == {
        "prometheus": "prometheus",
        "jaeger": "jaeger",
        "loki": "loki",
    }
    # Exemplars open their trace: the label aiva's exemplars carry, the Jaeger datasource's
    # fixed uid (a uid left to Grafana would change, and break the link, per install).
    prom = datasources["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    assert prom == [{"name": "trace_id", "datasourceUid": "jaeger"}]
    assert datasources["jaeger"]["type"] == "jaeger"
    derived = datasources["loki"]["jsonData"]["derivedFields"]
    assert any(f["datasourceUid"] == "jaeger" and "trace_id" in f["matcherRegex"] for f in derived)
    assert datasources["jaeger"]["jsonData"]["tracesToLogsV2"]["datasourceUid"] == "loki"


def test_dashboard_provider_points_at_the_mounted_folder() -> None:
    provider = load_yaml(GRAFANA_DIR / "provisioning" / "dashboards" / "dashboards.yaml")
    assert provider["providers"][0]["options"]["path"] == "/etc/grafana/dashboards"


def test_the_four_dashboards_exist() -> None:
    assert {load_json(p)["uid"]: load_json(p)["title"] for p in DASHBOARDS} == TITLES


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_valid(path: Any, datasources: dict[str, dict[str, Any]]) -> None:
    board = load_json(path)
    assert board["uid"] == path.stem and board["title"] and board["schemaVersion"] >= 36
    ids = [panel["id"] for panel in panels(board)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(board):
        assert {"type", "title", "gridPos"} <= panel.keys()
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] in datasources
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            ds = target["datasource"]
            assert ds["uid"] in datasources and ds["type"] == datasources[ds["uid"]]["type"]
            assert target["expr"].strip()
    for var in board["templating"]["list"]:
        assert var["datasource"]["uid"] in datasources


def test_red_dashboard_uses_the_http_duration_histogram() -> None:
    board = load_json(GRAFANA_DIR / "dashboards" / "aiva-red.json")
    exprs = " ".join(t["expr"] for p in panels(board) for t in p.get("targets", []))
    for quantile in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}, " in exprs
    assert "http_server_request_duration_seconds_bucket" in exprs


def test_red_latency_panels_show_exemplars() -> None:
    board = load_json(GRAFANA_DIR / "dashboards" / "aiva-red.json")
    quantile_targets = [
        (panel["title"], target)
        for panel in panels(board)
        for target in panel.get("targets", [])
        if "histogram_quantile(" in target.get("expr", "")
    ]
    assert len(quantile_targets) == 3  # p50, p95, p99
    for title, target in quantile_targets:
        assert target.get("exemplar") is True, title
        # Exemplars are a property of the bucket series: asked on a query over them.
        assert "http_server_request_duration_seconds_bucket" in target["expr"], title
        assert target["datasource"]["uid"] == "prometheus", title
