"""Parse rotel's `--debug-log-verbosity detailed` dump (collector debug format) into dicts.

The dump has no per-record prefix: it is a sequence of blocks (ResourceSpans/ResourceLog/
ResourceMetrics -> Scope* -> Span/LogRecord/Metric). rotel writes each Resource block with a
single write(), so a block is never interleaved with another one. String values are printed
raw, so a multi-line string continues on the next lines; such continuation lines are joined
back onto the line they belong to.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

Record = dict[str, Any]

_HEADERS = (
    "ResourceSpans",
    "ResourceLog",
    "ResourceLogs",
    "ResourceMetrics",
    "Resource SchemaURL",
    "Resource attributes",
    "ScopeSpans",
    "ScopeLogs",
    "ScopeMetrics",
    "InstrumentationScope",
    "Span #",
    "SpanEvent #",
    "SpanLink #",
    "Start time:",
    "End time:",
    "Attributes:",
    "Events:",
    "Links:",
    "LogRecord #",
    "ObservedTimestamp:",
    "Timestamp:",
    "SeverityText:",
    "SeverityNumber:",
    "Body:",
    "EventName:",
    "Flags:",
    "Metric #",
    "Descriptor:",
    "NumberDataPoints #",
    "HistogramDataPoints #",
    "ExponentialHistogramDataPoints #",
    "SummaryDataPoints #",
    "Data point attributes:",
    "StartTimestamp:",
    "Value:",
    "Count:",
    "Sum:",
    "Min:",
    "Max:",
    "ExplicitBounds #",
    "Buckets #",
    "Bucket ",
    "Exemplars",
    "Exemplar #",
    "QuantileValue",
    "Scale:",
    "ZeroCount:",
    "Positive",
    "Negative",
    "Dropped",
)
_PADDED = re.compile(
    r"^ {4}(Trace ID|Parent ID|ID|Span ID|Name|Kind|Status code|Status message|TraceState)"
    r"\s+: ?(.*)$"
)
_ATTR = re.compile(r"^(\s+)-> (.*?): ?(.*)$", re.S)
_ROTEL_LOG = re.compile(r"^\d{4}-\d\d-\d\dT\S+Z\s+[A-Z]+ ")
_TYPED = re.compile(r"^(\w+)\((.*)\)$", re.S)


def _structural(line: str) -> bool:
    """True when line starts a field of the dump (not a continuation of a multi-line string)."""
    return (
        line.startswith(_HEADERS)
        or bool(_PADDED.match(line))
        or line.lstrip().startswith("-> ")
        or bool(_ROTEL_LOG.match(line))
    )


def logical_lines(text: str) -> list[str]:
    """Lines of the dump with multi-line string values joined back ('\\n' inside the value)."""
    out: list[str] = []
    for line in text.split("\n"):
        if out and not _structural(line) and line != "":
            out[-1] += "\n" + line
        elif out and line == "" and not _closed(out[-1]):
            out[-1] += "\n"
        elif line:
            out.append(line)
    return out


def _closed(line: str) -> bool:
    """Heuristic: a typed value line is complete when it ends with ')' or has no '('."""
    return line.endswith(")") or "(" not in line


def _split_top(inner: str, sep: str = ", ") -> list[str]:
    """Split inner at sep where parentheses are balanced; ValueError when unbalanced."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(inner):
        ch = inner[i]
        depth += ch == "("
        depth -= ch == ")"
        if depth < 0:
            raise ValueError(inner)
        if depth == 0 and inner.startswith(sep, i):
            parts.append(inner[start:i])
            i += len(sep)
            start = i
            continue
        i += 1
    if depth:
        raise ValueError(inner)
    parts.append(inner[start:])
    return [p for p in parts if p != ""]


def _map_item(item: str) -> tuple[str, Any]:
    """'key:Type(v)' -> (key, value)."""
    key, _, rest = item.partition(":")
    return key, parse_value(rest, strict=True)


def parse_value(text: str, strict: bool = False) -> Any:
    """Typed dump value -> Python: Str, Int, Double, Bool, Empty(None), Slice, Map, Bytes.

    Nested values that cannot be split unambiguously are returned as their raw text.
    """
    if text == "Empty":
        return None
    match = _TYPED.match(text)
    if not match:
        if strict:
            raise ValueError(text)
        return text
    kind, inner = match.groups()
    try:
        return _convert(kind, inner)
    except ValueError:
        if strict:
            raise
        return text


def _convert(kind: str, inner: str) -> Any:
    """Convert one typed value; ValueError when it cannot be parsed."""
    if kind == "Str":
        return inner
    if kind == "Int":
        return int(inner)
    if kind == "Double":
        return float(inner)
    if kind == "Bool":
        return inner == "true"
    if kind == "Bytes":
        return bytes(int(b) for b in inner.strip("[]").split(",") if b.strip())
    if kind == "Slice":
        return [parse_value(p, strict=True) for p in _split_top(inner)]
    if kind == "Map":
        return dict(_map_item(p) for p in _split_top(inner))
    raise ValueError(kind)


def _attr(line: str) -> tuple[int, str, str] | None:
    """'     -> key: Str(v)' -> (indent, key, raw value)."""
    match = _ATTR.match(line)
    if not match:
        return None
    indent, key, raw = match.groups()
    return len(indent), key, raw


def _blocks(text: str, header: str) -> Iterator[list[str]]:
    """Resource blocks (lists of logical lines) whose first line starts with header."""
    block: list[str] | None = None
    for line in logical_lines(text):
        if line.startswith(
            ("ResourceSpans #", "ResourceLog #", "ResourceLogs #", "ResourceMetrics #")
        ):
            if block is not None:
                yield block
            block = [] if line.startswith(header) else None
        if block is not None:
            block.append(line)
    if block is not None:
        yield block


def _resource(block: list[str]) -> dict[str, Any]:
    """Resource attributes of a resource block (the '->' lines after 'Resource attributes:')."""
    attrs: dict[str, Any] = {}
    inside = False
    for line in block:
        if line.startswith("Resource attributes"):
            inside = True
            continue
        parsed = _attr(line)
        if inside and parsed:
            attrs[parsed[1]] = parse_value(parsed[2])
        elif inside:
            break
    return attrs


def _items(block: list[str], marker: str) -> Iterator[tuple[str, list[str]]]:
    """(scope name, lines) for each item (e.g. 'Span #') in a resource block."""
    scope: str = ""
    item: list[str] | None = None
    for line in block:
        if line.startswith("InstrumentationScope"):
            scope = [*line.split(" "), ""][1]
        if line.startswith(marker):
            if item is not None:
                yield scope, item
            item = []
        elif (
            line.startswith(("ScopeSpans #", "ScopeLogs #", "ScopeMetrics #")) and item is not None
        ):
            yield scope, item
            item = None
        if item is not None:
            item.append(line)
    if item is not None:
        yield scope, item


def _fields(lines: list[str]) -> dict[str, str]:
    """'Key: value' and padded '    Key     : value' fields of an item (first occurrence wins)."""
    out: dict[str, str] = {}
    for line in lines:
        padded = _PADDED.match(line)
        if padded:
            out.setdefault(padded.group(1), padded.group(2))
        elif not line.startswith(" ") and ": " in line:
            key, _, value = line.partition(": ")
            out.setdefault(key, value)
        elif not line.startswith(" ") and line.endswith(":"):
            out.setdefault(line[:-1], "")
    return out


def _section(lines: list[str], title: str) -> list[str]:
    """The lines following a 'Title:' line up to the next top-level (unindented) line."""
    out: list[str] = []
    inside = False
    for line in lines:
        if line == title:
            inside = True
            continue
        if inside and (line.startswith(" ") and not _PADDED.match(line)):
            out.append(line)
        elif inside:
            break
    return out


def _attrs(lines: list[str], indent: int | None = None) -> dict[str, Any]:
    """'-> key: Value' lines (optionally only at a given indent) as a dict."""
    out: dict[str, Any] = {}
    for line in lines:
        parsed = _attr(line)
        if parsed and (indent is None or parsed[0] == indent):
            out[parsed[1]] = parse_value(parsed[2])
    return out


def _sub_items(lines: list[str], marker: str) -> list[list[str]]:
    """Split a section into items starting with marker (e.g. 'SpanEvent #')."""
    items: list[list[str]] = []
    for line in lines:
        if line.startswith(marker):
            items.append([])
        elif items:
            items[-1].append(line)
    return items


def _event(lines: list[str]) -> Record:
    """A SpanEvent/SpanLink item: its first-level '->' fields plus its nested attributes."""
    parsed = [p for p in (_attr(line) for line in lines) if p is not None]
    top_indent = min((p[0] for p in parsed), default=0)
    fields = {key: raw for indent, key, raw in parsed if indent == top_indent}
    nested = {key: parse_value(raw) for indent, key, raw in parsed if indent > top_indent}
    return {"fields": fields, "attributes": nested}


def _events_and_links(lines: list[str]) -> tuple[list[Record], list[Record]]:
    """Events ('SpanEvent #') and links ('SpanLink #') of a span item."""
    events_part: list[str] = []
    links_part: list[str] = []
    current: list[str] | None = None
    for line in lines:
        if line == "Events:":
            current = events_part
        elif line == "Links:":
            current = links_part
        elif current is not None and (
            line.startswith(("SpanEvent #", "SpanLink #")) or line.startswith(" ")
        ):
            current.append(line)
        elif current is not None:
            current = None
    events = [_event(item) for item in _sub_items(events_part, "SpanEvent #")]
    links = [_event(item) for item in _sub_items(links_part, "SpanLink #")]
    return (
        [{"name": e["fields"].get("Name", ""), "attributes": e["attributes"]} for e in events],
        [
            {
                "trace_id": e["fields"].get("Trace ID", ""),
                "span_id": e["fields"].get("ID", ""),
                "attributes": e["attributes"],
            }
            for e in links
        ],
    )


def _strip_prefix(value: str, prefix: str) -> str:
    """'SPAN_KIND_SERVER' -> 'SERVER'."""
    return value[len(prefix) :] if value.startswith(prefix) else value


def _int(value: str) -> int | None:
    """int(value) or None."""
    try:
        return int(value)
    except ValueError:
        return None


def _span(lines: list[str], scope: str, resource: dict[str, Any]) -> Record:
    """One 'Span #' item as a dict."""
    fields = _fields(lines)
    events, links = _events_and_links(lines)
    return {
        "trace_id": fields.get("Trace ID", ""),
        "span_id": fields.get("ID", ""),
        "parent_id": fields.get("Parent ID", ""),
        "name": fields.get("Name", ""),
        "kind": _strip_prefix(fields.get("Kind", ""), "SPAN_KIND_"),
        "status": _strip_prefix(fields.get("Status code", ""), "STATUS_CODE_"),
        "status_message": fields.get("Status message", ""),
        "start_time": _int(fields.get("Start time", "")),
        "end_time": _int(fields.get("End time", "")),
        "attributes": _attrs(_section(lines, "Attributes:"), indent=5),
        "events": events,
        "links": links,
        "scope": scope,
        "resource": resource,
    }


_SEVERITY = re.compile(r"^SEVERITY_NUMBER_([A-Z0-9]+)\((\d+)\)$")


def _log_record(lines: list[str], scope: str, resource: dict[str, Any]) -> Record:
    """One 'LogRecord #' item as a dict."""
    fields = _fields(lines)
    severity = _SEVERITY.match(fields.get("SeverityNumber", ""))
    return {
        "body": parse_value(fields.get("Body", "Empty")),
        "severity": severity.group(1) if severity else fields.get("SeverityText", ""),
        "severity_number": int(severity.group(2)) if severity else 0,
        "severity_text": fields.get("SeverityText", ""),
        "event_name": fields.get("EventName", ""),
        "trace_id": fields.get("Trace ID", ""),
        "span_id": fields.get("Span ID", ""),
        "timestamp": _int(fields.get("Timestamp", "")),
        "attributes": _attrs(_section(lines, "Attributes:"), indent=5),
        "scope": scope,
        "resource": resource,
    }


def _metric(lines: list[str], scope: str, resource: dict[str, Any]) -> Record:
    """One 'Metric #' item: descriptor (name, type, unit, description, monotonic: True or
    False for a Sum, else None), data point count and each point's attributes."""
    descriptor = _attrs(_section(lines, "Descriptor:"))
    points: list[list[str]] = []
    for line in lines:
        if re.match(r"^\w*DataPoints #", line):
            points.append([])
        elif points:
            points[-1].append(line)
    monotonic = descriptor.get("IsMonotonic")
    return {
        "name": str(descriptor.get("Name", "")),
        "type": str(descriptor.get("DataType", "")),
        "unit": str(descriptor.get("Unit", "")),
        "description": str(descriptor.get("Description", "")),
        "monotonic": None if monotonic is None else str(monotonic).lower() == "true",
        "points": len(points),
        "point_attributes": [_attrs(_section(p, "Data point attributes:")) for p in points],
        "point_exemplars": [_exemplars(p) for p in points],
        "scope": scope,
        "resource": resource,
    }


def _exemplars(point: list[str]) -> list[Record]:
    """A data point's 'Exemplar #' items: trace_id, span_id (hex, '' when none), value and
    timestamp (ns)."""
    found: list[Record] = []
    for item in _sub_items(point, "Exemplar #"):
        fields = {key: raw for _, key, raw in filter(None, map(_attr, item))}
        found.append(
            {
                "trace_id": fields.get("Trace ID", ""),
                "span_id": fields.get("Span ID", ""),
                "value": float(fields["Value"]) if "Value" in fields else None,
                "timestamp": _int(fields.get("Timestamp", "")),
            }
        )
    return found


def parse_spans(text: str) -> list[Record]:
    """All spans in the dump, in output order."""
    return [
        _span(lines, scope, _resource(block))
        for block in _blocks(text, "ResourceSpans #")
        for scope, lines in _items(block, "Span #")
    ]


def parse_log_records(text: str) -> list[Record]:
    """All log records in the dump, in output order."""
    return [
        _log_record(lines, scope, _resource(block))
        for block in _blocks(text, "ResourceLog")
        for scope, lines in _items(block, "LogRecord #")
    ]


def parse_metrics(text: str) -> list[Record]:
    """All metrics (one entry per metric per export) in the dump, in output order."""
    return [
        _metric(lines, scope, _resource(block))
        for block in _blocks(text, "ResourceMetrics #")
        for scope, lines in _items(block, "Metric #")
    ]
