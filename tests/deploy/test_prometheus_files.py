"""promtool accepts the shipped config and rules, and every alert's unit tests pass."""

from __future__ import annotations

import subprocess

import pytest

from infra.prometheus import INSTALL_HINT
from infra.require import require_binary

from ._repo import ALERT_TESTS, ALERTS, PROMETHEUS_DIR, alert_rules, load_yaml


def promtool(*args: str) -> None:
    binary = require_binary("promtool", INSTALL_HINT)
    done = subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("check", "config", str(PROMETHEUS_DIR / "prometheus.yml")),
        ("check", "rules", str(ALERTS)),
        ("test", "rules", str(ALERT_TESTS)),
    ],
    ids=["check-config", "check-rules", "test-rules"],
)
def test_promtool(args: tuple[str, ...]) -> None:
    promtool(*args)


def test_the_issue_alerts_exist() -> None:
    assert set(alert_rules()) >= {
        "AivaServiceUnhealthy",
        "AivaCriticalDependencyDown",
        "AivaHighErrorRatio",
        "AivaHighLatencyP99",
        "AivaTelemetryExportFailing",
        "ScrapeTargetDown",
    }


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in load_yaml(ALERT_TESTS)["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert firing == set(alert_rules())
    assert quiet == set(alert_rules())


def test_scrapes_aiva_and_the_collector() -> None:
    jobs = {
        job["job_name"]: job["static_configs"][0]["targets"]
        for job in load_yaml(PROMETHEUS_DIR / "prometheus.yml")["scrape_configs"]
    }
    assert jobs["aiva"] == ["aiva:8000"]
    assert jobs["otel-collector"] == ["otel-collector:8888"]
    assert jobs["otel-collector-otlp"] == ["otel-collector:8889"]
