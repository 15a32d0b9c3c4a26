"""How long a log record's texts may be: a message, a field value, an exception's text or
traceback longer than MAX_TEXT_CHARS is cut, with a note of how long it was, the same on
every output (console, file, OTLP).

Issue #12: a 10 MB `baggage` header made a 10 MB warning line (the OpenTelemetry
propagator echoes the header it refuses), and the scrubbing pass over it took about 95 ms.
"""

from __future__ import annotations

from collections.abc import Callable

# 16 KiB: room for any message aiva writes and a long traceback (a chained one through
# the middleware stack is about 8 KiB), while a log line stays of a size that container
# runtimes pass whole (Docker and the CRI split lines at 16 KiB).
MAX_TEXT_CHARS = 16 * 1024
# Cut with room to spare before scrubbing (a 10 MB text costs no 10 MB scan). A secret the
# first cut splits may then match no pattern: the text after the last masked secret, as
# it came, loses up to this much at its end, so that no part of such a secret is shown.
# Secrets are shorter than this.
_MARGIN = 1024


def bounded(scrub: Callable[[str], str], limit: int = MAX_TEXT_CHARS) -> Callable[[str], str]:
    """`scrub` for texts of any length: one longer than `limit` comes out cut to it, with
    a note; a shorter one as `scrub` returns it (the same object when nothing was masked)."""

    def text(value: str) -> str:
        if len(value) <= limit:
            return scrub(value)
        first = value[: limit + _MARGIN]
        scrubbed = scrub(first)
        kept = scrubbed[: min(limit, len(scrubbed) - _unmasked_end(first, scrubbed))]
        return f"{kept}… [cut: {len(value)} characters, {len(kept)} kept]"

    return text


def _unmasked_end(text: str, scrubbed: str) -> int:
    """How many of the last _MARGIN characters `scrubbed` still has as `text` had them."""
    length = 0
    most = min(_MARGIN, len(text), len(scrubbed))
    while length < most and text[-1 - length] == scrubbed[-1 - length]:
        length += 1
    return length
