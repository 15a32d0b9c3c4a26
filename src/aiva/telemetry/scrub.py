"""Scrubbing of log records: what a record shows on every output (message, fields,
exception), with its secrets masked once for all of them."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from aiva.context import log_fields_var, request_id_var
from aiva.settings.masking import MASK, Scrubber, is_secret_name
from aiva.telemetry.log_bounds import bounded

ACCESS_LOGGER = "aiva.access"
# The access line's own fields hold no text of the request, so they are not scrubbed:
# the method is one of the known methods or `_OTHER` (even a raw method is an HTTP
# token: no space, `=`, `:` or `,`, one of which every pattern but a JWT's needs), the
# route is a template of the app's routes (None when unmatched: a raw path never is
# one), status and duration are numbers. Fields a filter adds to the line are scrubbed.
_ACCESS_FIELDS = frozenset({"http_method", "http_route", "status_code", "duration_ms"})

# The attributes LogRecord.__init__ sets, in its order: a record's extras come after them.
_INIT_NAMES = list(logging.LogRecord("", 0, "", 0, "", None, None).__dict__)
_INIT_COUNT = len(_INIT_NAMES)
# The attributes every LogRecord has; anything else on a record is an extra field.
_RECORD_ATTRS = frozenset(_INIT_NAMES) | {
    "message",
    "asctime",
    "taskName",
}
_VIEW_ATTR = "_aiva_view"
# Extras other libraries attach for their own formatters (uvicorn's ANSI-coloured copy),
# and this module's own note on the record.
_DROPPED_EXTRAS = frozenset({"color_message", _VIEW_ATTR})
_NOT_EXTRAS = _RECORD_ATTRS | _DROPPED_EXTRAS
_NONE: frozenset[str] = frozenset()
# Nesting walked in a field's value; deeper values are scrubbed as their str() (a
# structure that holds itself would otherwise never end).
_MAX_DEPTH = 8
_NUMBERS = (int, float)  # bool too: no text in them


class RecordView(NamedTuple):
    """A record as every output shows it, secrets masked."""

    message: str
    # The request id, the fields bound with log_context, then the record's own extras.
    fields: dict[str, Any]
    # The exception's traceback as traceback.format_exception writes it, and its text.
    stacktrace: str | None
    exception_message: str | None


class RecordScrubber:
    """Masks secrets in log records: the built-in patterns of aiva.settings.masking
    plus `patterns` (telemetry.logs.scrub.patterns), in the message, every field
    (values by pattern, and whole values of fields and keys named like a secret:
    `password`, `authorization`, ...), and the exception's text and traceback."""

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        self.patterns = tuple(patterns)
        # Every text of a record is scrubbed through this, and cut when too long.
        self.text = bounded(Scrubber(self.patterns).scrub)
        self._last_request_id: tuple[str | None, str] = (None, "")

    def view(self, record: logging.LogRecord) -> RecordView:
        """The record's view, computed once and kept on the record: the console, the
        file and the OTLP handler each need it."""
        noted = record.__dict__.get(_VIEW_ATTR)
        # The same patterns (another app's scrubber, built from equal settings): reused.
        if noted is not None and (noted[0] is self or noted[0].patterns == self.patterns):
            return noted[1]  # type: ignore[no-any-return]
        view = self._scrubbed(record)
        record.__dict__[_VIEW_ATTR] = (self, view)
        return view

    def _scrubbed(self, record: logging.LogRecord) -> RecordView:
        fields: dict[str, Any] = {}
        request_id = request_id_var.get()
        if request_id is not None:
            fields["request_id"] = self._request_id(request_id)
        bound = log_fields_var.get()
        if bound:
            self._add_fields(fields, bound, safe=_NONE)
        safe = _ACCESS_FIELDS if record.name == ACCESS_LOGGER else _NONE
        self._add_fields(fields, _extras(record), safe=safe)
        stacktrace = exception_message = None
        if record.exc_info:
            stacktrace = self.text("".join(traceback.format_exception(*record.exc_info)))
            error = record.exc_info[1]
            if error is not None:
                exception_message = self.text(str(error))
        return RecordView(self.text(record.getMessage()), fields, stacktrace, exception_message)

    def _request_id(self, request_id: str) -> str:
        """The request id scrubbed, once a request: its records hold the same str object."""
        last = self._last_request_id
        if last[0] is request_id:
            return last[1]
        scrubbed = self.text(request_id)
        self._last_request_id = (request_id, scrubbed)  # replaced whole: safe across threads
        return scrubbed

    def _add_fields(
        self,
        into: dict[str, Any],
        fields: Mapping[str, Any],
        safe: frozenset[str],
    ) -> None:
        """Each of `fields` scrubbed (those in `safe` as they are)."""
        text = self.text
        for name, value in fields.items():
            if name in safe:
                into[name] = value
            elif is_secret_name(name):
                into[name] = _masked(value)
            elif type(value) is str:  # the common case, without one call more
                into[name] = text(value)
            else:
                into[name] = self._value(value, 0)

    def _value(self, value: Any, depth: int) -> Any:
        """The value with its secrets masked; the same object when it had none, so the
        outputs write it as they would have."""
        if isinstance(value, str):
            return self.text(value)
        if value is None or isinstance(value, _NUMBERS):
            return value
        if depth < _MAX_DEPTH:
            if isinstance(value, dict):
                return self._mapping(value, depth + 1)
            if isinstance(value, list | tuple):
                items = [self._value(item, depth + 1) for item in value]
                changed = any(new is not old for new, old in zip(items, value, strict=True))
                return items if changed else value
        # Anything else is written as its str() (JSON) or sent as it (OTLP).
        text = str(value)
        masked = self.text(text)
        return value if masked is text else masked

    def _mapping(self, mapping: dict[Any, Any], depth: int) -> dict[Any, Any]:
        scrubbed = {
            key: _masked(item)
            if isinstance(key, str) and is_secret_name(key)
            else self._value(item, depth)
            for key, item in mapping.items()
        }
        changed = any(scrubbed[key] is not item for key, item in mapping.items())
        return scrubbed if changed else mapping


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    """The record's attributes that LogRecord.__init__ did not set, in their order.

    From a snapshot of the names (one C-level copy): the console's and the file's threads
    and the OTLP handler may each make the view, one noting it on the record while another
    reads the record's attributes. A record made by LogRecord.__init__ (any factory calling
    it first) starts with its names in its order: only what follows is looked at (0.6 µs
    a record less than walking all twenty).
    """
    attributes = record.__dict__
    names = list(attributes)
    if names[:_INIT_COUNT] == _INIT_NAMES:
        names = names[_INIT_COUNT:]
    extras = {}
    for name in names:
        if name not in _NOT_EXTRAS:
            value = attributes.get(name, _MISSING)
            if value is not _MISSING:
                extras[name] = value
    return extras


_MISSING = object()  # an attribute deleted since the snapshot of the names


def _masked(value: Any) -> Any:
    return value if value is None else MASK
