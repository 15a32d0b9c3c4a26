"""The six settings layers, read through dynaconf and merged key by key with provenance."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dynaconf import Dynaconf
from dynaconf.loaders import json_loader, toml_loader, yaml_loader
from dynaconf.utils.parse_conf import parse_conf_data

from aiva.errors import Problem
from aiva.settings.files import FileRefused, read_text, top_level_names
from aiva.settings.masking import is_secret_key
from aiva.settings.model import Settings, declares_string
from aiva.settings.otel_env import OTEL_VARIABLES, VariableError

DEFAULTS_FILE = Path(__file__).resolve().parent.parent / "defaults.yaml"
DEFAULTS_SOURCE = "package defaults"
DEFAULT_ENV = "development"
STANDARD_ENVS = ("development", "testing", "production")
DEFAULT_CONFIG_DIR = "config"

# The file layers, lowest first; each may be written in any one of these formats.
FILE_LAYERS = ("settings", "settings.local", ".secrets")
_LOADERS = {
    ".yaml": yaml_loader,
    ".yml": yaml_loader,
    ".toml": toml_loader,
    ".json": json_loader,
}
FILE_SUFFIXES = tuple(_LOADERS)
# Variables that pick the environment and the folder; they are not settings keys.
_SWITCHES = frozenset({"AIVA_ENV", "AIVA_CONFIG_DIR"})
_SECTION_NAMES = frozenset(f.upper() for f in Settings.__dataclass_fields__)


@dataclass(frozen=True)
class Layer:
    """One source of settings: its nested data and, per dotted leaf key, where it came from."""

    data: dict[str, Any]
    origins: Mapping[str, str]
    # The environment sections a settings file has (`default` aside); none for the others.
    sections: frozenset[str] = frozenset()


def read_layers(
    environ: Mapping[str, str], env: str, config_dir: Path
) -> tuple[list[Layer], list[Problem]]:
    """Every layer in order, lowest first, and the problems met while reading them."""
    problems: list[Problem] = []
    layers = [_file_layer(DEFAULTS_FILE, None, DEFAULTS_SOURCE)]
    for stem in FILE_LAYERS:
        folder = config_dir.resolve()
        found = sorted(p for p in (folder / f"{stem}{ext}" for ext in _LOADERS) if p.is_file())
        if len(found) > 1:
            names = ", ".join(p.name for p in found)
            problems.append(
                Problem(stem, f"one format per settings file, found {names}", str(config_dir))
            )
            continue
        if found:
            try:
                layers.append(_file_layer(found[0], env, str(found[0])))
            except _FileError as error:
                problems.append(error.problem)
    layers.append(_otel_layer(environ, problems))
    layers.append(_aiva_layer(environ))
    return layers, problems


def merge(layers: list[Layer]) -> Layer:
    """Layers merged in order: later values win, nested tables merge key by key.

    The origins stay in the order the values were set, so the last entry under a
    table names the layer that touched it last.
    """
    data: dict[str, Any] = {}
    origins = Origins()
    for layer in layers:
        for key, origin in layer.origins.items():
            current = get_path(data, key)
            if get_path(layer.data, key) == {} and isinstance(current, dict) and current:
                continue  # an empty table merged into a full one changes nothing
            origins.set_newest(key, origin)
        _merge_into(data, layer.data)
    return Layer(data, origins)


class Origins(MutableMapping[str, str]):
    """Dotted leaf key -> the layer that set it, in the order set, with the keys under each
    table indexed.

    The index finds a table's keys without a scan of them all: the scan made the merge
    quadratic (10,000 keys in a file took 18.5 s, 25,000 took 84 s), and so the source of
    each unknown table (25,000 of them: minutes).
    """

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._by_key: dict[str, str] = {}
        self._order: dict[str, int] = {}  # key -> when it took its place (for `newest_under`)
        self._placed = itertools.count()
        self._under: dict[str, set[str]] = {}  # table key -> the keys below it
        for key, origin in items:
            self[key] = origin

    def __getitem__(self, key: str) -> str:
        return self._by_key[key]

    def __setitem__(self, key: str, origin: str) -> None:
        """As a dict does: a key already there keeps its place."""
        if key not in self._by_key:
            self._order[key] = next(self._placed)
            for table in _tables_above(key):
                self._under.setdefault(table, set()).add(key)
        self._by_key[key] = origin

    def __delitem__(self, key: str) -> None:
        del self._by_key[key]
        del self._order[key]
        for table in _tables_above(key):
            self._under[table].discard(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_key)

    def __len__(self) -> int:
        return len(self._by_key)

    def set_newest(self, key: str, origin: str) -> None:
        """`key` set by `origin`, placed last: a table replaced by a plain value takes its
        keys' provenance with it; a value (or an empty table) replaced by a table takes its
        own."""
        for stale in list(self._under.get(key, ())):
            del self[stale]
        for table in _tables_above(key):
            if table in self._by_key:
                del self[table]
        self.pop(key, None)
        self[key] = origin

    def newest_under(self, table: str) -> str | None:
        """The layer that set one of the table's keys last; None when it has none."""
        keys = self._under.get(table)
        if not keys:
            return None
        return self._by_key[max(keys, key=self._order.__getitem__)]


def _tables_above(key: str) -> list[str]:
    parts = key_parts(key)
    return [join_key(parts[:n]) for n in range(1, len(parts))]


def source_of(key: str, origins: Mapping[str, str]) -> str:
    """Where a dotted key's effective value came from (its own, a child's or a parent's).

    For a table, the layer that set one of its keys last.
    """
    if key in origins:
        return origins[key]
    if isinstance(origins, Origins):
        newest = origins.newest_under(key)
    else:
        children = [origin for k, origin in origins.items() if k.startswith(key + ".")]
        newest = children[-1] if children else None
    if newest is not None:
        return newest
    parent = join_key(key_parts(key)[:-1])
    return source_of(parent, origins) if parent else DEFAULTS_SOURCE


# A name in a dotted key: one quoted (holding dots), or one without dots.
_KEY_PART = re.compile(r'"[^"]*"|[^.]+')


def key_parts(key: str) -> list[str]:
    """The names along a dotted key; a quoted one (`buckets."aiva.operation.duration"`,
    as TOML writes it) is one name, dots and all."""
    return [part.strip('"') for part in _KEY_PART.findall(key)]


def join_key(parts: Iterable[str]) -> str:
    """The dotted key of these names, each holding a dot quoted (the inverse of key_parts)."""
    return ".".join(f'"{part}"' if "." in part else part for part in parts)


def leaves(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) for every leaf; an empty table counts as a leaf.

    Below the top, a name holding a dot (an instrument or resource attribute name) is
    quoted, so that it stays one name: `telemetry.metrics.buckets."aiva.operation.duration"`.
    A top-level name is taken as written: the layers pass a dotted key there
    (`leaves({key: value})`).
    """
    for name, value in data.items():
        key = f"{prefix}{join_key([str(name)])}" if prefix else str(name)
        if isinstance(value, dict) and value:
            yield from leaves(value, key + ".")
        else:
            yield key, value


class _FileError(Exception):
    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


def _file_layer(path: Path, env: str | None, source: str) -> Layer:
    """Read one settings file through dynaconf's own loaders, once it is known to be bounded.

    We call the loader per file instead of listing every file in one Dynaconf:
    dynaconf would then add `<name>.local.<ext>` on its own and merge all files
    into one history, and we need to know which layer each key came from.
    """
    try:
        text = read_text(path)
        names = top_level_names(text, path)
        data = _parsed(text, path.suffix, env)
    except FileRefused as error:
        raise _FileError(Problem(path.name, str(error), source)) from error
    except Exception as error:
        raise _FileError(Problem(path.name, _parse_message(error, path), source)) from error
    sections = _check_sections(names, source) if env is not None else frozenset()
    return Layer(data, {key: source for key, _ in leaves(data)}, sections)


def _parsed(text: str, suffix: str, env: str | None) -> dict[str, Any]:
    """The text as dynaconf's loader for `suffix` reads it (environment sections merged).

    The text the bounds were checked on is handed over, not the path: the file may have
    changed since. A loader takes a list item for text unless it ends like a file name;
    the newline added sees to that (`x: a.yaml` would otherwise be opened as a file).
    """
    holder = Dynaconf(
        environments=env is not None, env=env or DEFAULT_ENV, loaders=[], merge_enabled=True
    )
    _LOADERS[suffix].load(holder, env=None, silent=True, key=None, filename=[text + "\n"])
    return _lower_top(holder.as_dict())


def _check_sections(names: frozenset[str], source: str) -> frozenset[str]:
    """The file's environment sections; settings written outside one would be silently
    ignored: refuse them."""
    top = [name.lower() for name in names]
    misplaced = sorted(k for k in top if k.upper() in _SECTION_NAMES)
    if misplaced:
        raise _FileError(
            Problem(
                misplaced[0],
                "must sit inside an environment section (default, development, testing, "
                "production, ...)",
                source,
            )
        )
    return frozenset(top) - {"default"}


def _parse_message(error: Exception, path: Path) -> str:
    """A parser's message folded to one line (it names the line and column)."""
    text = " ".join(str(error).split()).replace('"<unicode string>"', f'"{path.name}"')
    return f"cannot be parsed: {text}"


def _lower_top(data: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k).lower(): v for k, v in data.items()}


def _merge_into(target: dict[str, Any], source: Mapping[str, Any]) -> None:
    for name, value in source.items():
        current = target.get(name)
        if isinstance(value, dict) and isinstance(current, dict):
            _merge_into(current, value)
        elif isinstance(value, dict):
            target[name] = {}
            _merge_into(target[name], value)
        else:
            target[name] = value


def get_path(data: Any, key: str) -> Any:
    """The value at a dotted key in nested mappings, or None where the path ends early."""
    for part in key_parts(key):
        if not isinstance(data, Mapping):
            return None
        data = data.get(part)
    return data


def _set_path(data: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key_parts(key)
    for part in parents:
        child = data.get(part)
        if not isinstance(child, dict):
            child = data[part] = {}
        data = child
    data[last] = value


def _otel_layer(environ: Mapping[str, str], problems: list[Problem]) -> Layer:
    """The standard OpenTelemetry variables (aiva.settings.otel_env), as settings keys."""
    data: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for variable, spec in OTEL_VARIABLES.items():
        if not environ.get(variable, "").strip():
            continue  # the specification: an empty value means unset
        source = f"environment variable {variable}"
        try:
            values = spec.parse(environ[variable])
        except VariableError as error:
            key = spec.keys[0]
            message = error.message
            if error.position is not None and is_secret_key(key):
                # A header entry may be a bare secret (`Bearer abc` without its `name=`).
                message = (
                    f"malformed entry at position {error.position} (not shown: secret), "
                    "want k=v,..."
                )
            problems.append(Problem(key, message, source))
            continue
        for key, value in values.items():
            _set_path(data, key, value)
            origins.update((leaf, source) for leaf, _ in leaves({key: value}))
    return Layer(data, origins)


def _aiva_layer(environ: Mapping[str, str]) -> Layer:
    """`AIVA_A__B=value` sets `a.b`; values are typed as dynaconf types them (TOML literals).

    Except where the model declares a string: there the text is kept as written, so a
    password `123456` or a version `1.0` stays a string (`@none` still means null).
    """
    data: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for variable in sorted(environ):
        if not variable.startswith("AIVA_") or variable in _SWITCHES:
            continue
        key = ".".join(part.lower() for part in variable[len("AIVA_") :].split("__"))
        text = environ[variable]
        if declares_string(key) and text.strip().lower() != "@none":
            value: Any = text
        else:
            value = parse_conf_data(text, tomlfy=True, box_settings={})
        _set_path(data, key, value)
        source = f"environment variable {variable}"
        origins.update((leaf, source) for leaf, _ in leaves({key: value}))
    return Layer(data, origins)
