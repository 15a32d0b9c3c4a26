"""telemetry.metrics.buckets: boundaries per instrument, whose names hold dots, through
every layer, validation, `config show` and `--sources`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from aiva.errors import SettingsError
from aiva.settings import load_settings
from aiva.settings.layers import get_path, join_key, key_parts, leaves, merge, read_layers
from tests.conftest import WriteConfig
from tests.test_cli import aiva

KEY = 'telemetry.metrics.buckets."aiva.operation.duration"'
VARIABLE = "AIVA_TELEMETRY__METRICS__BUCKETS"
YAML_FILE = """\
default:
  telemetry:
    metrics:
      buckets:
        "aiva.operation.duration": [0.001, 0.01, 0.1, 1]
        http.server.request.duration: [0.05, 0.5, 5]
"""


def problems(folder: Path, environ: dict[str, str]) -> list[str]:
    with pytest.raises(SettingsError) as caught:
        load_settings(environ, config_dir=folder)
    return [str(p) for p in caught.value.problems]


def test_no_boundaries_by_default(tmp_path: Path) -> None:
    assert dict(load_settings({}, config_dir=tmp_path).settings.telemetry.metrics.buckets) == {}


def test_dotted_instrument_names_stay_one_key_from_a_yaml_file(
    write_config: WriteConfig,
) -> None:
    folder = write_config({"settings.yaml": YAML_FILE})
    loaded = load_settings({}, config_dir=folder)
    assert dict(loaded.settings.telemetry.metrics.buckets) == {
        "aiva.operation.duration": (0.001, 0.01, 0.1, 1),
        "http.server.request.duration": (0.05, 0.5, 5),
    }
    source = str(folder.resolve() / "settings.yaml")
    assert loaded.sources[KEY] == source
    assert loaded.sources['telemetry.metrics.buckets."http.server.request.duration"'] == source


def test_dotted_instrument_names_stay_one_key_from_a_toml_file(
    write_config: WriteConfig,
) -> None:
    toml = '[default.telemetry.metrics.buckets]\n"aiva.operation.duration" = [0.5, 1.5]\n'
    folder = write_config({"settings.toml": toml})
    loaded = load_settings({}, config_dir=folder)
    assert dict(loaded.settings.telemetry.metrics.buckets) == {
        "aiva.operation.duration": (0.5, 1.5)
    }
    assert loaded.sources[KEY] == str(folder.resolve() / "settings.toml")


def test_a_variable_gives_a_toml_inline_table_merged_over_the_files(
    write_config: WriteConfig,
) -> None:
    folder = write_config({"settings.yaml": YAML_FILE})
    environ = {
        VARIABLE: '{"aiva.operation.duration" = [0.2, 2], "aiva.health.check.duration" = [1]}'
    }
    loaded = load_settings(environ, config_dir=folder)
    assert dict(loaded.settings.telemetry.metrics.buckets) == {
        "aiva.operation.duration": (0.2, 2),  # the variable wins for its instruments
        "http.server.request.duration": (0.05, 0.5, 5),  # the file's others stay
        "aiva.health.check.duration": (1,),
    }
    assert loaded.sources[KEY] == f"environment variable {VARIABLE}"
    assert loaded.sources['telemetry.metrics.buckets."http.server.request.duration"'] == str(
        folder.resolve() / "settings.yaml"
    )


def test_a_name_that_prefixes_another_keeps_each_its_own_source(
    write_config: WriteConfig,
) -> None:
    # Split at their dots, `aiva.operation` would be the parent of `aiva.operation.duration`
    # and its setting would take the other's provenance away.
    folder = write_config({"settings.yaml": YAML_FILE})
    loaded = load_settings({VARIABLE: '{"aiva.operation" = [3]}'}, config_dir=folder)
    assert loaded.settings.telemetry.metrics.buckets["aiva.operation"] == (3,)
    assert loaded.settings.telemetry.metrics.buckets["aiva.operation.duration"] == (
        0.001,
        0.01,
        0.1,
        1,
    )
    assert loaded.sources[KEY] == str(folder.resolve() / "settings.yaml")
    assert loaded.sources['telemetry.metrics.buckets."aiva.operation"'] == (
        f"environment variable {VARIABLE}"
    )


def test_an_undotted_name_is_a_plain_key_also_from_a_nested_variable(tmp_path: Path) -> None:
    loaded = load_settings({f"{VARIABLE}__LATENCY": "[0.1, 1]"}, config_dir=tmp_path)
    assert dict(loaded.settings.telemetry.metrics.buckets) == {"latency": (0.1, 1)}
    assert loaded.sources["telemetry.metrics.buckets.latency"] == (
        f"environment variable {VARIABLE}__LATENCY"
    )


@pytest.mark.parametrize(
    ("boundaries", "rule"),
    [
        ("[1, 0.5]", "must be strictly increasing, got [1, 0.5]"),
        ("[0.5, 0.5]", "must be strictly increasing, got [0.5, 0.5]"),
        ("[-1, 0.5]", "must not hold a negative number, got [-1, 0.5]"),
        ("[]", "must not be empty, got []"),
        ('["0.1", 1]', "must be a list of numbers (bucket boundaries), got ['0.1', 1]"),
        ("[true]", "must be a list of numbers (bucket boundaries), got [True]"),
        ("0.5", "must be a list of numbers (bucket boundaries), got 0.5"),
        ("[0.1, nan]", "must hold finite numbers only (no nan or inf), got [0.1, nan]"),
        ("[0.1, inf]", "must hold finite numbers only (no nan or inf), got [0.1, inf]"),
    ],
)
def test_bad_boundaries_name_the_instrument_key(tmp_path: Path, boundaries: str, rule: str) -> None:
    environ = {VARIABLE: f'{{"aiva.operation.duration" = {boundaries}}}'}
    assert problems(tmp_path, environ) == [f"{KEY}: {rule} (from environment variable {VARIABLE})"]


@pytest.mark.parametrize(
    ("boundaries", "rule"),
    [
        ("[0.1, .nan]", "must hold finite numbers only (no nan or inf)"),
        ("[0.1, .inf]", "must hold finite numbers only (no nan or inf)"),
        ("[2, 1]", "must be strictly increasing"),
    ],
)
def test_bad_boundaries_in_a_file_name_the_key_and_the_file(
    write_config: WriteConfig, boundaries: str, rule: str
) -> None:
    text = YAML_FILE.replace("[0.001, 0.01, 0.1, 1]", boundaries)
    folder = write_config({"settings.yaml": text})
    [line] = problems(folder, {})
    assert line.startswith(f"{KEY}: {rule}, got ")
    assert line.endswith(f"(from {folder.resolve() / 'settings.yaml'})")


def test_each_instrument_is_checked_and_a_bad_name_refused(tmp_path: Path) -> None:
    environ = {VARIABLE: '{"aiva.operation.duration" = [2, 1], "http.*" = [1], ok = [1]}'}
    assert problems(tmp_path, environ) == [
        f"{KEY}: must be strictly increasing, got [2, 1] (from environment variable {VARIABLE})",
        'telemetry.metrics.buckets."http.*": must be an instrument name (a letter, then '
        f"letters, digits, _ . - /) (from environment variable {VARIABLE})",
    ]


def test_a_table_is_required(tmp_path: Path) -> None:
    assert problems(tmp_path, {VARIABLE: "[0.1, 1]"}) == [
        f"telemetry.metrics.buckets: must be a table, got [0.1, 1] (from environment variable "
        f"{VARIABLE})"
    ]


def test_quoted_keys_address_one_name() -> None:
    assert key_parts(KEY) == ["telemetry", "metrics", "buckets", "aiva.operation.duration"]
    assert join_key(key_parts(KEY)) == KEY
    data = {"telemetry": {"metrics": {"buckets": {"aiva.operation.duration": [1]}}}}
    assert get_path(data, KEY) == [1]
    assert get_path(data, "telemetry.metrics.buckets.aiva.operation.duration") is None
    assert dict(leaves(data)) == {KEY: [1]}


def test_layers_keep_the_name_whole(write_config: WriteConfig) -> None:
    folder = write_config({"settings.yaml": YAML_FILE})
    layers, found = read_layers({VARIABLE: '{"aiva.operation" = [3]}'}, "development", folder)
    assert found == []
    merged = merge(layers)
    buckets = merged.data["telemetry"]["metrics"]["buckets"]
    assert set(buckets) == {
        "aiva.operation.duration",
        "http.server.request.duration",
        "aiva.operation",
    }
    assert {k for k in merged.origins if k.startswith("telemetry.metrics.buckets")} == {
        KEY,
        'telemetry.metrics.buckets."http.server.request.duration"',
        'telemetry.metrics.buckets."aiva.operation"',
    }


def test_config_show_and_sources_print_the_quoted_key(write_config: WriteConfig) -> None:
    folder = write_config({"settings.yaml": YAML_FILE})
    env = {VARIABLE: '{"aiva.health.check.duration" = [0.5, 5]}'}
    shown = aiva("config", "show", config=folder, env=env)
    assert shown.returncode == 0, shown.stderr
    buckets = yaml.safe_load(shown.stdout)["telemetry"]["metrics"]["buckets"]
    assert buckets == {
        "aiva.operation.duration": [0.001, 0.01, 0.1, 1],
        "http.server.request.duration": [0.05, 0.5, 5],
        "aiva.health.check.duration": [0.5, 5],
    }
    sources = aiva("config", "show", "--sources", config=folder, env=env)
    assert sources.returncode == 0, sources.stderr
    lines = sources.stdout.splitlines()
    assert (f"{KEY} = [0.001, 0.01, 0.1, 1]    # {folder.resolve() / 'settings.yaml'}") in lines
    assert (
        'telemetry.metrics.buckets."aiva.health.check.duration" = [0.5, 5]    '
        f"# environment variable {VARIABLE}"
    ) in lines


def test_config_validate_exits_2_naming_the_key(tmp_path: Path) -> None:
    result = aiva(
        "config",
        "validate",
        config=tmp_path,
        env={VARIABLE: '{"aiva.operation.duration" = [1, 0]}'},
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"settings error: {KEY}: must be strictly increasing, got [1, 0] "
        f"(from environment variable {VARIABLE})\n"
    )
