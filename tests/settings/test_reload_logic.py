"""Pure logic of hot reload: differences, live keys, what a reload puts in force."""

from __future__ import annotations

from aiva.settings import load_settings
from aiva.settings.reload import changes, describe_changes, digest, is_live, with_live_keys


def settings(**environ: str):  # type: ignore[no-untyped-def]
    return load_settings(environ, config_dir="/nonexistent").settings


def test_changes_lists_each_differing_key() -> None:
    old = settings()
    new = settings(AIVA_SERVER__PORT="9000", AIVA_TELEMETRY__LOGS__LEVEL="DEBUG")
    assert changes(old, new) == {
        "server.port": (8000, 9000),
        "telemetry.logs.level": ("INFO", "DEBUG"),
    }
    assert changes(old, settings()) == {}


def test_live_keys() -> None:
    assert is_live("telemetry.logs.level")
    assert is_live("telemetry.traces.sampler_ratio")
    assert is_live("health.interval_s") and is_live("health.checks.disk.warn_percent")
    assert not is_live("server.port")
    assert not is_live("telemetry.logs.levels")


def test_reload_puts_only_live_keys_in_force() -> None:
    old = settings()
    new = settings(
        AIVA_SERVER__PORT="9000",
        AIVA_TELEMETRY__TRACES__SAMPLER_RATIO="0.5",
        AIVA_HEALTH__INTERVAL_S="3",
    )
    in_force = with_live_keys(old, new)
    assert in_force.server.port == 8000
    assert in_force.telemetry.traces.sampler_ratio == 0.5
    assert in_force.health.interval_s == 3
    assert digest(in_force) != digest(old)


def test_described_changes_mask_secrets() -> None:
    old, new = settings(AIVA_DATABASE__PASSWORD="a"), settings(AIVA_DATABASE__PASSWORD="b")
    assert describe_changes(changes(old, new)) == "database.password: '****' -> '****'"


def test_digest_is_of_the_masked_settings() -> None:
    # A hash of the secrets themselves (shown on /info) would let anyone test guesses.
    assert digest(settings(AIVA_DATABASE__PASSWORD="a")) == digest(
        settings(AIVA_DATABASE__PASSWORD="b")
    )
    assert digest(settings(AIVA_DATABASE__PASSWORD="a")) != digest(settings())
    assert digest(settings(AIVA_SERVER__PORT="9000")) != digest(settings())
