"""One settings file read within bounds: its size, and a YAML file's aliases, checked before
any parser builds it."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import rtoml
import yaml

# A settings file larger than this is refused unread. aiva's own defaults are 8 KiB; 1 MiB
# still holds some 40,000 `key: value` lines. dynaconf's pure-Python YAML parser loads
# 25,000 of them (650 KB) in about 3 s, the largest files 5 to 20 s by their shape (a flow
# list of 500,000 numbers is the slowest); a 50 MB file kept the old reload busy for 428 s.
MAX_FILE_BYTES = 1024 * 1024

# Aliases reuse an anchored node. A hand-written file needs a handful (a `default` block
# merged into each environment); "billion laughs" needs dozens: 394 bytes of nine levels
# of nine aliases expand to 9**9 nodes, built by dynaconf at 6 MB/s until memory runs out.
MAX_YAML_ALIASES = 100
# Aliases nested in anchors multiply even when few (20 aliases, two per level, make 2**10
# copies). The document as the loaders will expand it may hold no more nodes than the
# largest plain file could (each node written takes at least two bytes: `[1,1,1,...]`).
MAX_YAML_NODES = MAX_FILE_BYTES // 2
# Deeper than any settings need (aiva's own go 6 deep, sections included). It bounds what
# the loaders' recursion and tomllib's dotted keys cost: tomllib's time and memory grow
# with the square of a key's length (32 KB of `a.a.a...` took 4 s and 1 GB); 1 MiB of
# 50-part keys takes it 2 s.
MAX_DEPTH = 50

# The C event parser (libyaml) when PyYAML has it: it scans 1 MiB in about 0.1 s.
_EVENT_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class FileRefused(Exception):
    """A settings file refused before it was parsed; the message says why, in one line."""


def read_text(path: Path) -> str:
    """The file's text: at most MAX_FILE_BYTES of UTF-8 (what dynaconf's loaders read)."""
    with path.open("rb") as handle:
        data = handle.read(MAX_FILE_BYTES + 1)  # never more, however large the file
        if len(data) > MAX_FILE_BYTES:
            size = path.stat().st_size
            raise FileRefused(
                f"is too large: {size:,} bytes, at most {MAX_FILE_BYTES:,} (1 MiB) are read"
            )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"not UTF-8: {error}") from error


def top_level_names(text: str, path: Path) -> frozenset[str]:
    """The names at the top of the file (its environment sections), once the file is known
    to stay within bounds as the loaders will build it.

    Raises FileRefused, or the parser's own error for a file that does not parse.
    """
    if path.suffix in (".yaml", ".yml"):
        return _scan_yaml(text, path.name)
    # TOML through rtoml, not the tomllib dynaconf uses: see MAX_DEPTH. JSON's parser is
    # C, bounded by Python's recursion limit.
    data = rtoml.loads(text) if path.suffix == ".toml" else json.loads(text)
    _check_depth(data)
    return frozenset(str(name) for name in data) if isinstance(data, dict) else frozenset()


@dataclass(slots=True)
class _Collection:
    """A mapping or sequence the YAML scan is inside of."""

    anchor: str | None
    is_mapping: bool
    nodes: int = 1  # itself and everything below, aliases expanded
    children: int = 0


def _scan_yaml(text: str, name: str) -> frozenset[str]:
    """Walk the YAML events (no document is built): count the aliases, the nodes they
    expand to and the depth; collect the top mapping's keys."""
    stream = io.StringIO(text)
    stream.name = name  # the parser's messages name the file
    aliases = nodes = 0
    anchored: dict[str, int] = {}  # anchor -> nodes of the node it names, expanded
    inside: list[_Collection] = []
    names: set[str] = set()
    for event in _events(stream):
        if isinstance(event, yaml.CollectionStartEvent):
            if len(inside) >= MAX_DEPTH:
                raise FileRefused(f"is nested more than {MAX_DEPTH} levels deep")
            inside.append(_Collection(event.anchor, isinstance(event, yaml.MappingStartEvent)))
            continue
        if isinstance(event, yaml.CollectionEndEvent):
            done = inside.pop()
            anchor, size = done.anchor, done.nodes
        elif isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_YAML_ALIASES:
                raise FileRefused(f"has more than {MAX_YAML_ALIASES} YAML aliases")
            anchor, size = None, anchored.get(event.anchor or "", 1)
        elif isinstance(event, yaml.ScalarEvent):
            anchor, size = event.anchor, 1
            top = inside[0] if len(inside) == 1 else None
            if top is not None and top.is_mapping and top.children % 2 == 0:
                names.add(event.value)  # a key of the top mapping
        else:
            continue  # stream and document events
        if anchor is not None:
            anchored[anchor] = size
        if inside:
            inside[-1].nodes += size
            inside[-1].children += 1
        else:
            nodes += size
    if nodes > MAX_YAML_NODES:
        raise FileRefused(
            f"has YAML aliases that expand it to {nodes:,} nodes, more than the "
            f"{MAX_YAML_NODES:,} a file within the size limit can hold"
        )
    return frozenset(names)


def _events(stream: io.StringIO) -> Iterator[yaml.Event]:
    """The YAML events of `stream`, one at a time."""
    try:
        yield from yaml.parse(stream, Loader=_EVENT_LOADER)
    except yaml.MarkedYAMLError as error:
        # PyYAML 6.0.4 and later bound the flow nesting themselves, while scanning ahead
        # of the events (a `[[[[...` line is scanned whole before its first event): the
        # same refusal, whichever bound is met first.
        if "maximum nesting depth" in (error.problem or ""):
            raise FileRefused(f"is nested more than {MAX_DEPTH} levels deep") from error
        raise


def _check_depth(data: object) -> None:
    level, depth = [data], 0
    while level:
        depth += 1
        if depth > MAX_DEPTH:
            raise FileRefused(f"is nested more than {MAX_DEPTH} levels deep")
        level = [
            child
            for item in level
            if isinstance(item, dict | list)
            for child in (item.values() if isinstance(item, dict) else item)
            if isinstance(child, dict | list)
        ]
