"""Settings files are bounded before any parser builds them: size, YAML aliases and the
nodes they expand to, nesting (YAML, TOML, JSON); ordinary anchors still load."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from aiva.errors import SettingsError
from aiva.settings import load_settings
from aiva.settings.files import (
    MAX_DEPTH,
    MAX_FILE_BYTES,
    MAX_YAML_ALIASES,
    MAX_YAML_NODES,
    FileRefused,
    read_text,
    top_level_names,
)


def problem(folder: Path) -> str:
    """The one problem line of loading `folder`."""
    with pytest.raises(SettingsError) as caught:
        load_settings({}, config_dir=folder)
    [line] = [str(p) for p in caught.value.problems]
    return line


def bomb(levels: int = 9, width: int = 9) -> str:
    """Billion laughs: each level a list of `width` aliases of the level below."""
    lines = ["default:", "  app:", "    l0: &l0 [" + ",".join(['"lol"'] * width) + "]"]
    for n in range(1, levels):
        lines.append(f"    l{n}: &l{n} [" + ",".join([f"*l{n - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def test_a_file_over_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text("default:\n  app:\n    blob: '" + "x" * MAX_FILE_BYTES + "'\n")
    with pytest.raises(FileRefused, match=r"is too large: 1,048,6\d\d bytes, at most 1,048,576"):
        read_text(path)
    assert problem(tmp_path) == (
        f"settings.yaml: is too large: {path.stat().st_size:,} bytes, at most 1,048,576 "
        f"(1 MiB) are read (from {path.resolve()})"
    )


def test_a_file_at_the_size_limit_is_read(tmp_path: Path) -> None:
    head = "default:\n  app:\n    blob: '"
    text = head + "x" * (MAX_FILE_BYTES - len(head) - 2) + "'\n"
    (tmp_path / "settings.yaml").write_text(text)
    blob = load_settings({}, config_dir=tmp_path).settings.app["blob"]
    assert len(blob) == MAX_FILE_BYTES - len(head) - 2


# The pathological files below go to the check itself, not through load_settings: were
# the check ever skipped, the loaders would hang this process or exhaust its memory (the
# same files meet the whole path in tests/reliability/test_settings_files.py, in a
# subprocess with a deadline).


def test_a_yaml_bomb_is_refused_before_it_is_built() -> None:
    text = bomb()
    assert len(text) < 500
    started = time.monotonic()
    with pytest.raises(FileRefused) as refused:
        top_level_names(text, Path("settings.yaml"))
    assert time.monotonic() - started < 10
    # 9**9 "lol"s, 9**8 lists of them, ...: 490,329,068 nodes once built.
    assert str(refused.value) == (
        "has YAML aliases that expand it to 490,329,068 nodes, more than the "
        f"{MAX_YAML_NODES:,} a file within the size limit can hold"
    )


def test_few_aliases_nested_deep_are_refused_by_what_they_expand_to() -> None:
    # 40 aliases, two a level: far under the alias limit, 2**20 copies of the first list.
    with pytest.raises(FileRefused, match="has YAML aliases that expand it to 8,388,609 nodes"):
        top_level_names(bomb(levels=21, width=2), Path("settings.yaml"))


def test_more_than_the_allowed_aliases_are_refused(tmp_path: Path) -> None:
    uses = "".join(f"    k{i}: *shared\n" for i in range(MAX_YAML_ALIASES + 1))
    (tmp_path / "settings.yaml").write_text("default:\n  app:\n    shared: &shared 1\n" + uses)
    assert problem(tmp_path) == (
        f"settings.yaml: has more than {MAX_YAML_ALIASES} YAML aliases "
        f"(from {(tmp_path / 'settings.yaml').resolve()})"
    )


def test_ordinary_anchors_and_merge_keys_load(tmp_path: Path) -> None:
    (tmp_path / "settings.yaml").write_text(
        "default: &base\n"
        "  server:\n    port: 9000\n"
        "  app:\n    headers: &headers {a: '1', b: '2'}\n    again: *headers\n"
        "development:\n  <<: *base\n  service:\n    name: dev\n"
    )
    s = load_settings({}, config_dir=tmp_path).settings
    assert (s.server.port, s.service.name) == (9000, "dev")
    assert s.app["again"] == {"a": "1", "b": "2"}


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("settings.yaml", "default:\n  app:\n    x: " + "[" * 100_000 + "]" * 100_000 + "\n"),
        ("settings.toml", "[default.app]\n" + ".".join(["a"] * 60) + " = 1\n"),
        ("settings.json", '{"default": {"app": ' + "[" * 60 + "]" * 60 + "}}"),
    ],
    ids=["yaml", "toml-dotted-key", "json"],
)
def test_deep_nesting_is_refused(tmp_path: Path, name: str, text: str) -> None:
    (tmp_path / name).write_text(text)
    assert problem(tmp_path).startswith(f"{name}: is nested more than {MAX_DEPTH} levels deep")


@pytest.mark.parametrize(
    ("name", "text"),
    [
        # tomllib's time and memory grow with the square of a dotted key's length: this
        # one (0.4 MB) would need hundreds of GB.
        ("settings.toml", "[default.app]\n" + ".".join(["a"] * 200_000) + " = 1\n"),
        ("settings.toml", "[default.app]\nx = " + "[" * 100_000 + "]" * 100_000 + "\n"),
        ("settings.json", '{"default": {"app": ' + "[" * 200_000 + "]" * 200_000 + "}}"),
    ],
    ids=["toml-dotted-key", "toml-array", "json"],
)
def test_pathological_nesting_fails_fast(name: str, text: str) -> None:
    started = time.monotonic()
    with pytest.raises((FileRefused, ValueError, RecursionError)):
        top_level_names(text, Path(name))
    assert time.monotonic() - started < 10


def test_nesting_within_the_limit_loads(tmp_path: Path) -> None:
    key = ".".join(["a"] * (MAX_DEPTH - 3))  # under default.app
    (tmp_path / "settings.toml").write_text(f"[default.app]\n{key} = 1\n")
    data: object = load_settings({}, config_dir=tmp_path).settings.app
    for _ in range(MAX_DEPTH - 3):
        assert isinstance(data, Mapping)
        data = data["a"]
    assert data == 1


def test_text_ending_like_a_file_name_is_read_as_text(tmp_path: Path) -> None:
    # dynaconf's loaders take text ending in `.yaml` for a file name to open.
    (tmp_path / "settings.yaml").write_text("default:\n  app:\n    file: other.yaml")
    assert load_settings({}, config_dir=tmp_path).settings.app["file"] == "other.yaml"


def test_parse_errors_still_name_the_file_line_and_column(tmp_path: Path) -> None:
    (tmp_path / "settings.yaml").write_text("default:\n  server: [\n")
    line = problem(tmp_path)
    assert line.startswith("settings.yaml: cannot be parsed: ")
    assert 'in "settings.yaml", line 3, column 1' in line


def test_top_level_names_are_the_sections() -> None:
    text = "default:\n  server: {port: 1}\nproduction:\n  app: {x: [1, 2]}\n"
    assert top_level_names(text, Path("settings.yaml")) == {"default", "production"}
    assert top_level_names('{"default": {}, "testing": {}}', Path("settings.json")) == {
        "default",
        "testing",
    }
    assert top_level_names("[default]\n[staging.app]\n", Path("settings.toml")) == {
        "default",
        "staging",
    }
