"""Live settings against a running `aiva serve`: edits, SIGHUP, bad edits, editors' ways."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from opentelemetry.metrics import NoOpMeterProvider

from aiva.settings import load_settings
from aiva.web.reloader import LiveSettings, SettingsReloader
from infra.rotel import Rotel
from infra.service import AivaService
from infra.wait import wait_for


def reloads(service: AivaService) -> dict[str, float]:
    counts: dict[str, float] = {}
    for line in httpx.get(f"{service.base_url}/metrics", timeout=5).text.splitlines():
        if line.startswith("aiva_config_reloads_total{"):
            result = line.split('result="')[1].split('"')[0]
            counts[result] = float(line.rsplit(" ", 1)[1])
    return counts


def total(service: AivaService) -> float:
    return sum(reloads(service).values())


def debug_lines(service: AivaService, since: int) -> list[dict[str, object]]:
    records = [json.loads(x) for x in service.log_text()[since:].splitlines() if x.startswith("{")]
    return [r for r in records if r["level"] == "DEBUG"]


def local(service: AivaService) -> Path:
    return service.config_dir / "settings.local.yaml"


def test_log_level_changes_live(aiva_service: Callable[..., AivaService]) -> None:
    service = aiva_service()
    mark = len(service.log_text())
    with service.client() as client:
        client.get("/api/demo/work")
        assert debug_lines(service, mark) == []
        local(service).write_text("default:\n  telemetry:\n    logs:\n      level: DEBUG\n")
        started = time.monotonic()

        def debug_seen() -> bool:
            client.get("/api/demo/work")
            return any(r["message"].startswith("planning") for r in debug_lines(service, mark))  # type: ignore[union-attr]

        wait_for(debug_seen, timeout=3, interval=0.2)
        assert time.monotonic() - started < 3
        local(service).write_text("default:\n  telemetry:\n    logs:\n      level: INFO\n")
        wait_for(lambda: reloads(service).get("applied") == 2, timeout=3)
        mark = len(service.log_text())
        for _ in range(3):
            client.get("/api/demo/work")
    time.sleep(0.3)
    assert debug_lines(service, mark) == []
    assert (
        "settings reloaded (file change): telemetry.logs.level: 'DEBUG' -> 'INFO'"
        in service.log_text()
    )


def test_sampler_ratio_changes_live(
    rotel: Callable[[], Rotel], aiva_service: Callable[..., AivaService]
) -> None:
    collector = rotel()
    service = aiva_service(
        env={
            "AIVA_TELEMETRY__OTLP__ENDPOINT": collector.grpc_endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
    )
    with service.client() as client:
        local(service).write_text("default:\n  telemetry:\n    traces:\n      sampler_ratio: 0\n")
        wait_for(lambda: reloads(service).get("applied") == 1, timeout=3)
        time.sleep(0.5)
        mark = collector.mark()
        for _ in range(20):
            client.get("/api/demo/items/zero")
        time.sleep(1)
        assert [s for s in collector.spans(mark) if s["kind"] == "SERVER"] == []
        local(service).write_text("default:\n  telemetry:\n    traces:\n      sampler_ratio: 1\n")
        wait_for(lambda: reloads(service).get("applied") == 2, timeout=3)
        client.get("/api/demo/items/one")
    collector.wait_for_spans(
        lambda s: s["attributes"].get("url.path") == "/api/demo/items/one", timeout=5
    )


def test_health_thresholds_change_by_the_next_round(
    aiva_service: Callable[..., AivaService],
) -> None:
    service = aiva_service(env={"AIVA_HEALTH__INTERVAL_S": "1"})
    with service.client() as client:
        wait_for(lambda: client.get("/health/startup").status_code == 200, timeout=5)
        disk = next(c for c in client.get("/health").json()["checks"] if c["name"] == "disk")
        assert disk["status"] == "healthy"
        local(service).write_text(
            "default:\n  health:\n    checks:\n      disk:\n        warn_percent: 0\n        fail_percent: 100\n"
        )

        def disk_status() -> str:
            return next(c for c in client.get("/health").json()["checks"] if c["name"] == "disk")[
                "status"
            ]

        wait_for(lambda: disk_status() == "degraded", timeout=4, interval=0.2)
        assert client.get("/health").status_code == 200  # non-critical: degraded, still 200


def test_invalid_edit_is_refused_and_service_keeps_serving(
    aiva_service: Callable[..., AivaService],
) -> None:
    service = aiva_service()
    with service.client() as client:
        before = client.get("/info").json()
        local(service).write_text("default:\n  telemetry:\n    traces:\n      sampler_ratio: 7\n")
        wait_for(lambda: reloads(service).get("rejected") == 1, timeout=4)
        local(service).write_text("default:\n  server: [\n")  # does not parse, twice
        wait_for(lambda: reloads(service).get("rejected") == 2, timeout=4)
        after = client.get("/info").json()
        assert client.get("/").status_code == 200
    assert after["settings_hash"] == before["settings_hash"]
    assert after["settings"]["telemetry"]["traces"]["sampler_ratio"] == 1.0
    log = service.log_text()
    assert (
        "settings reload (file change) rejected, old settings stay: telemetry.traces.sampler_ratio: must be between 0 and 1, got 7"
        in log
    )


def test_restart_keys_are_logged_not_applied(aiva_service: Callable[..., AivaService]) -> None:
    service = aiva_service()
    local(service).write_text("default:\n  server:\n    workers: 3\n")
    wait_for(
        lambda: "need a restart (not applied): server.workers: 1 -> 3" in service.log_text(),
        timeout=4,
    )
    with service.client() as client:
        assert client.get("/info").json()["settings"]["server"]["workers"] == 1


def test_each_way_of_saving_reloads_exactly_once(aiva_service: Callable[..., AivaService]) -> None:
    service = aiva_service()
    path = local(service)
    levels = iter(["DEBUG", "INFO", "WARNING"])

    def text() -> str:
        return f"default:\n  telemetry:\n    logs:\n      level: {next(levels)}\n"

    def settle(expected: float) -> None:
        wait_for(lambda: total(service) == expected, timeout=4)
        time.sleep(1)  # a second reload of the same save would show by now
        assert total(service) == expected

    start = total(service)
    # Rename-style save: write a temporary file, then rename it over the target.
    temporary = path.with_name(".settings.local.yaml.tmp")
    temporary.write_text(text())
    temporary.replace(path)
    settle(start + 1)
    # In place: truncate, then write, with a pause between (two events, one reload of the
    # final text: the watcher waits for quiet, a file caught empty is read again).
    with path.open("w") as handle:
        time.sleep(0.15)
        handle.write(text())
    settle(start + 2)
    assert reloads(service).get("applied") == 2
    assert reloads(service).get("rejected") == 0
    with service.client() as client:
        assert client.get("/info").json()["settings"]["telemetry"]["logs"]["level"] == "INFO"
    # SIGHUP with a changed file the watcher has not been told about is the same as an edit;
    # with no change it still counts one (unchanged) reload.
    assert service.pid is not None
    os.kill(service.pid, signal.SIGHUP)
    settle(start + 3)
    assert reloads(service).get("applied") == 2
    assert reloads(service).get("unchanged") == 1


def test_info_hash_and_load_time_follow_the_settings_in_force(
    aiva_service: Callable[..., AivaService],
) -> None:
    service = aiva_service()
    with service.client() as client:
        first = client.get("/info").json()
        # A live key and a restart-only key: only the live one is put in force.
        local(service).write_text(
            "default:\n  telemetry:\n    logs:\n      level: DEBUG\n  server:\n    workers: 3\n"
        )
        wait_for(lambda: reloads(service).get("applied") == 1, timeout=4)
        second = client.get("/info").json()
        # The live key back: the settings in force are the first ones again (workers 1).
        local(service).write_text("default:\n  telemetry:\n    logs:\n      level: INFO\n")
        wait_for(lambda: reloads(service).get("applied") == 2, timeout=4)
        third = client.get("/info").json()
    assert second["settings_hash"] != first["settings_hash"]
    assert second["settings_loaded_at"] > first["settings_loaded_at"]
    assert third["settings_loaded_at"] > second["settings_loaded_at"]
    assert third["settings"] == first["settings"]
    assert third["settings_hash"] == first["settings_hash"]


# --- the reloader in this process: a file caught half written -------------------


def reloader_on(folder: Path) -> tuple[SettingsReloader, LiveSettings]:
    loaded = load_settings({}, config_dir=folder)
    live = LiveSettings(loaded.settings)
    counter = NoOpMeterProvider().get_meter("test").create_counter("aiva.config.reloads")
    return SettingsReloader(loaded, {}, live, lambda _: None, counter), live


def reload_while(reloader: SettingsReloader, edit: Callable[[], object]) -> tuple[str, int]:
    """Reload; `edit` runs once the first read is done (the reads run in a thread). The
    result and how many times the files were read."""
    first_read = threading.Event()
    reads = 0
    read = reloader._read

    def counted(*args: Any) -> Any:
        nonlocal reads
        try:
            return read(*args)
        finally:
            reads += 1
            first_read.set()

    reloader._read = counted  # type: ignore[method-assign]

    async def scenario() -> str:
        task = asyncio.create_task(reloader.reload("test"))
        # The next read, if any, comes REPARSE_DELAY_S after this one.
        await asyncio.to_thread(first_read.wait, 30)
        edit()
        return await task

    return asyncio.run(scenario()), reads


DEBUG = "default:\n  telemetry:\n    logs:\n      level: DEBUG\n"


def test_file_unparsable_then_valid_on_the_retry_is_accepted(tmp_path: Path) -> None:
    reloader, live = reloader_on(tmp_path)
    path = tmp_path / "settings.local.yaml"
    path.write_text("default:\n  telemetry: [\n")
    result, reads = reload_while(reloader, lambda: path.write_text(DEBUG))
    assert result == "applied"
    assert reads == 2  # after REPARSE_DELAY_S, once more
    assert live.current.telemetry.logs.level == "DEBUG"


def test_file_unparsable_on_both_reads_is_rejected(tmp_path: Path) -> None:
    reloader, live = reloader_on(tmp_path)
    path = tmp_path / "settings.local.yaml"
    path.write_text("default:\n  telemetry: [\n")
    result, _ = reload_while(reloader, lambda: path.write_text("default:\n  server: [\n"))
    assert result == "rejected"
    assert live.current.telemetry.logs.level == "INFO"


def test_emptied_file_is_read_again_before_it_counts(tmp_path: Path) -> None:
    path = tmp_path / "settings.local.yaml"
    path.write_text(DEBUG)
    reloader, live = reloader_on(tmp_path)
    path.write_text("")  # truncated: the write is yet to come
    result, reads = reload_while(reloader, lambda: path.write_text(DEBUG.replace("DEBUG", "ERROR")))
    assert (result, live.current.telemetry.logs.level) == ("applied", "ERROR")
    assert reads == 2
    path.write_text("")  # and left empty: refused, the settings in force stay
    result, _ = reload_while(reloader, lambda: None)
    assert (result, live.current.telemetry.logs.level) == ("rejected", "ERROR")


def test_file_empty_from_the_start_is_fine(tmp_path: Path) -> None:
    (tmp_path / "settings.local.yaml").write_text("")
    reloader, live = reloader_on(tmp_path)
    (tmp_path / "settings.yaml").write_text(DEBUG)
    result, reads = reload_while(reloader, lambda: None)
    assert (result, live.current.telemetry.logs.level) == ("applied", "DEBUG")
    assert reads == 1
