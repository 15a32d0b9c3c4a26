"""Hostile settings files against a real `aiva serve`: a reload of a 50 MB file, a YAML
bomb or a 25,000-key file leaves `/livez` answering within 100 ms and the old settings in
force; at start-up the refused files stop `aiva serve` and `aiva config validate` with one
line and exit code 2.

The files are made at test time in tmp_path (never committed). Every loop has a deadline.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from infra.service import AivaService, service_env
from infra.wait import wait_for

MB = 1024 * 1024
# The bound for a probe during a reload; and how often the probe asks.
PROBE_BOUND_S = 0.100
PROBE_EVERY_S = 0.020
# Probes go on this long after the reload is counted (a stall just after it shows too).
AFTER_RELOAD_S = 1.0
# How long a reload may take to be counted (a 25,000-key file reads in ~3 s on one core).
RELOAD_DEADLINE_S = 40.0
ENV = {"AIVA_HEALTH__CHECKS__CPU__ENABLED": "false"}
# A live key set at start-up: it must still be in force after a refused reload.
START = "default:\n  telemetry:\n    traces:\n      sampler_ratio: 0.5\n"


def fifty_megabytes() -> str:
    """50 MB of ordinary `key: value` lines (428 s of frozen service before the limit)."""
    line = "    key_{:09}: value {:09}\n"  # 35 bytes
    count = 50 * MB // len(line.format(0, 0))
    return "default:\n  app:\n" + "".join(line.format(i, i) for i in range(count))


def yaml_bomb() -> str:
    """\"Billion laughs\": 394 bytes, nine levels of nine aliases (9**9 nodes when built)."""
    levels = ['    a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for n in range(1, 9):
        name, below = chr(ord("a") + n), chr(ord("a") + n - 1)
        levels.append(f"    {name}: &{name} [" + ",".join([f"*{below}"] * 9) + "]")
    return "default:\n  app:\n" + "\n".join(levels) + "\n"


def many_keys(count: int = 25_000) -> str:
    """`count` keys under app (84 s of frozen service with the quadratic layering)."""
    return "default:\n  app:\n" + "".join(f"    key_{i}: value {i}\n" for i in range(count))


@dataclass
class Prober:
    """A thread asking GET /livez every PROBE_EVERY_S; each latency is kept (a failure is
    kept as infinity)."""

    url: str
    latencies: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Prober:
        self._thread = threading.Thread(target=self._run, name="livez-prober", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=5)

    def _run(self) -> None:
        with httpx.Client(timeout=2.0) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    ok = client.get(self.url).status_code == 200
                except httpx.HTTPError:
                    ok = False
                took = time.perf_counter() - started
                self.latencies.append(took if ok else float("inf"))
                self._stop.wait(max(0.0, PROBE_EVERY_S - took))

    @property
    def worst(self) -> float:
        return max(self.latencies)


def reload_counts(service: AivaService) -> dict[str, float]:
    counts: dict[str, float] = {}
    text = httpx.get(f"{service.base_url}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith("aiva_config_reloads_total{"):
            result = line.split('result="')[1].split('"')[0]
            counts[result] = float(line.rsplit(" ", 1)[1])
    return counts


def records(service: AivaService, since: int) -> list[dict[str, object]]:
    lines = service.log_text()[since:].splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def reload_with(service: AivaService, text: str) -> tuple[Prober, dict[str, float], int]:
    """Save `text` as settings.local.yaml (written aside, then renamed: one change) while
    /livez is probed; wait until the reload is counted. The prober, the counts before, and
    the log position before."""
    before, mark = reload_counts(service), len(service.log_text())
    aside = service.config_dir / ".settings.local.yaml.tmp"
    aside.write_text(text, encoding="utf-8")
    with Prober(f"{service.base_url}/livez") as prober:
        time.sleep(0.2)  # probes from before the change, too
        aside.replace(service.config_dir / "settings.local.yaml")
        wait_for(
            lambda: sum(reload_counts(service).values()) > sum(before.values()),
            timeout=RELOAD_DEADLINE_S,
            interval=0.2,
            message="the reload was never counted",
        )
        time.sleep(AFTER_RELOAD_S)
    return prober, before, mark


@pytest.fixture
def service(aiva_service: Callable[..., AivaService]) -> AivaService:
    return aiva_service(env=ENV, config_files={"settings.yaml": START}, ready_path="/livez")


def assert_probes_answered(prober: Prober, what: str) -> None:
    slow = [round(t * 1000, 1) for t in prober.latencies if t > PROBE_BOUND_S]
    print(f"{what}: {len(prober.latencies)} probes, worst {prober.worst * 1000:.1f} ms")
    assert len(prober.latencies) >= 20, prober.latencies
    assert slow == [], f"{len(slow)} of {len(prober.latencies)} probes over 100 ms: {slow[:20]}"


def assert_settings_kept(service: AivaService, before: dict[str, object]) -> None:
    with service.client() as client:
        after = client.get("/info").json()
    assert after["settings"]["telemetry"]["traces"]["sampler_ratio"] == 0.5
    assert after["settings_hash"] == before["settings_hash"]


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (fifty_megabytes, "is too large: "),
        (yaml_bomb, "has YAML aliases that expand it to "),
    ],
    ids=["50MB", "yaml-bomb"],
)
def test_a_refused_file_leaves_the_service_answering(
    service: AivaService, make: Callable[[], str], reason: str
) -> None:
    with service.client() as client:
        info = client.get("/info").json()
    prober, before, mark = reload_with(service, make())
    assert_probes_answered(prober, make.__name__)
    counts = reload_counts(service)
    rejected = counts["rejected"] - before["rejected"]
    assert rejected >= 1 and counts["applied"] == before["applied"]
    errors = [r for r in records(service, mark) if r["level"] == "ERROR"]
    assert len(errors) == rejected  # one ERROR line for each rejected reload
    message = str(errors[-1]["message"])
    assert message.startswith("settings reload (file change) rejected, old settings stay: ")
    assert f"settings.local.yaml: {reason}" in message
    assert len(message) < 1000
    assert_settings_kept(service, info)


def test_a_25000_key_file_is_read_off_the_loop(service: AivaService) -> None:
    with service.client() as client:
        info = client.get("/info").json()
    prober, before, mark = reload_with(service, many_keys())
    assert_probes_answered(prober, "25,000 keys")
    counts = reload_counts(service)
    assert counts["unchanged"] == before["unchanged"] + 1, counts  # app.* waits for a restart
    [message] = [
        str(r["message"])
        for r in records(service, mark)
        if str(r["message"]).startswith("settings changed that need a restart (not applied): ")
    ]
    assert "app.key_0: None -> 'value 0'" in message
    assert message.endswith("more"), message[-200:]  # 25,000 keys, the first few named
    assert len(message) < 5000
    assert_settings_kept(service, info)


# --- at start-up -----------------------------------------------------------------------


def aiva(args: list[str], folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aiva", *args],
        env=service_env(ENV, folder),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (fifty_megabytes, "is too large: "),
        (yaml_bomb, "has YAML aliases that expand it to "),
    ],
    ids=["50MB", "yaml-bomb"],
)
@pytest.mark.parametrize("command", [["config", "validate"], ["serve"]])
def test_a_refused_file_stops_start_up_with_one_line(
    tmp_path: Path, make: Callable[[], str], reason: str, command: list[str]
) -> None:
    (tmp_path / "settings.yaml").write_text(make(), encoding="utf-8")
    started = time.monotonic()
    result = aiva(command, tmp_path)
    took = time.monotonic() - started
    assert result.returncode == 2, result.stderr[-2000:]
    [line] = result.stderr.splitlines()
    assert line.startswith(f"settings error: settings.yaml: {reason}")
    assert line.endswith(f"(from {tmp_path / 'settings.yaml'})")
    assert took < 30


def test_a_25000_key_file_is_valid_at_start_up(tmp_path: Path) -> None:
    (tmp_path / "settings.yaml").write_text(many_keys(), encoding="utf-8")
    result = aiva(["config", "validate"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("settings valid")
    assert (tmp_path / "settings.yaml").stat().st_size > 500_000
