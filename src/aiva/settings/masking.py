"""Masking of secrets for every output: settings values, log records, responses, CLI.

The one list of what a secret looks like lives here: the names whose values are
secrets (`SECRET_NAMES`) and the patterns of secrets in free text (`TEXT_PATTERNS`).
The settings' masking, the health checks' messages and the log records' scrubbing
(aiva.telemetry.scrub, extended by `telemetry.logs.scrub.patterns`) all use it.
"""

from __future__ import annotations

import functools
import re
import traceback
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from aiva.settings.model import SECRET_KEYS

MASK = "****"

# Names whose value is a secret: a settings key's last part, a log record's field, a
# key in a mapping logged, the name in a `name=value` pair or a header line. Matched
# at the end of a name (`db_password`, `client_secret`, `x-api-key`, `set-cookie`),
# case-insensitively, with `_` also matching `-` or nothing (`apikey`). Not `key`,
# `auth` or `session` alone: `cache key=...`, `author`, `session_id` are no secrets.
SECRET_NAMES = (
    "password",
    "passwd",
    "pwd",
    "passphrase",
    "secret",
    "secret_key",
    "token",
    "api_key",
    "access_key",
    "private_key",
    "credential",
    "credentials",
    "signature",
    "authorization",
    "cookie",
)
# Names whose value runs to the end of its line when unquoted, as a header's does
# (`Authorization: Bearer abc`, `Cookie: a=1; b=2`).
_HEADER_NAMES = ("authorization", "cookie")


def _name_regex(names: Iterable[str]) -> str:
    return "|".join(name.replace("_", "[_-]?") for name in sorted(names, key=len, reverse=True))


_NAME = _name_regex(SECRET_NAMES)
_OTHER_NAMES = _name_regex(set(SECRET_NAMES) - set(_HEADER_NAMES))
# After a name: `=` or `:` (spaces or tabs around, not a line break), behind a closing
# quote too (`"password": `, `\"password\":` in JSON quoted again), or `', '` in a
# (name, value) pair's repr (`(b'authorization', b'Basic ...')`).
_SEPARATOR = r"""(?:\\?["'](?:[ \t]*[:=]|,)|[ \t]*[:=])[ \t]*"""

# The patterns of secrets in free text, one alternative each. Each keeps the part in
# its named group and masks what follows it; the text to mask starts where the match
# does, at one of the anchors below (see Scrubber).
TEXT_PATTERNS = {
    # A URL's password (`postgres://app:pw@db/x`), up to the last `@` of the authority
    # (a password may hold an `@`, as urlsplit reads it).
    "url": r"(?P<url>://[^\s:/@]*:)[^\s/?#]*(?=@)",
    # `password=...`, `token: ...`, `"api_key": "..."`, `('password', '...')`: a quoted
    # value up to its closing quote; a bare one up to a space or `&` (the next query
    # parameter); a header's (authorization, cookie) to the end of its line.
    "pair": (
        rf"(?P<pair>(?:(?P<header>{_name_regex(_HEADER_NAMES)})|{_OTHER_NAMES}){_SEPARATOR}"
        r"""(?:b?\\?(?P<quote>["']))?)"""
        r"(?(quote)(?:(?!(?P=quote))[^\r\n])*|(?(header)[^\r\n]+|[^\s&]+))"
    ),
    # A JSON Web Token anywhere (header and payload are base64url JSON: `eyJ`), starting
    # a word: tried inside one, a client's `eyJeyJeyJ...` made every `eyJ` an anchor
    # whose try scanned to the word's end (30 KB took 565 ms; now linear).
    "jwt": r"(?P<jwt>)(?<![\w-])(?-i:eyJ)[\w-]+\.(?-i:eyJ)[\w-]+\.[\w-]*",
    # A bearer token without its header name (`sent Bearer abc...`).
    "bearer": r"(?P<bearer>\bbearer\s+)[\w.~+/-]{8,}=*",
}


def _anchors() -> tuple[str, ...]:
    """Where a match can start, in lower case: `://`, each name's first word (`api` for
    api_key), `eyj`, `bearer`; a word another one begins is left out (`credentials`
    once `credential` is there)."""
    words = {"://", "eyj", "bearer"} | {name.split("_")[0] for name in SECRET_NAMES}
    return tuple(sorted(w for w in words if not any(w != o and w.startswith(o) for o in words)))


_ANCHORS = _anchors()
_SECRET_NAME = re.compile(rf"(?:{_NAME})\Z", re.IGNORECASE)


@functools.lru_cache(maxsize=1024)
def is_secret_name(name: str) -> bool:
    """Whether a field, header or key name names a secret (`db_password`, `X-API-Key`).

    Cached: a process logs the same few field names again and again.
    """
    return _SECRET_NAME.search(name) is not None


class Scrubber:
    """Masks secrets in free text: the built-in patterns, plus `extra` regular
    expressions whose whole match is masked.

    The built-in patterns are one compiled regex, but it is tried only where a match
    can start: Python's regex engine tries every alternative at every position
    (about 0.2 µs a character here, 50 µs for a 250-character message), while
    finding the anchors with `str.find` costs about 1 µs. Before that, text that
    holds none of the characters every pattern needs is returned at once (0.1 µs).
    """

    def __init__(self, extra: Iterable[str] = ()) -> None:
        self._pattern = _built_in_pattern()
        self._extra = tuple(re.compile(p) for p in extra)

    def scrub(self, text: str) -> str:
        """The text with every secret masked; the same object when nothing was."""
        for extra in self._extra:
            text = extra.sub(_mask_whole, text)
        # Every pattern needs a separator (`=`, `:`, `,`), `eyJ` or `bearer`. Spelled
        # out: `any()` over a tuple of them costs six times as much (0.65 against 0.1 µs).
        if not (
            "=" in text
            or ":" in text
            or "," in text
            or "eyJ" in text
            or "earer" in text
            or "EARER" in text
        ):
            return text
        lower = text.lower()
        if len(lower) != len(text):  # a character whose lower case is longer: scan it all
            return self._pattern.sub(_mask_after_kept, text)
        starts = sorted(
            {start for anchor in _ANCHORS if anchor in lower for start in _find_all(lower, anchor)}
        )
        if not starts:
            return text
        return self._masked_at(text, starts)

    def _masked_at(self, text: str, starts: list[int]) -> str:
        parts: list[str] = []
        done = 0  # text[:done] is in parts
        for start in starts:
            if start < done:
                continue  # inside a masked value
            match = self._pattern.match(text, start)
            if match is None:
                continue
            parts += (text[done:start], _mask_after_kept(match))
            done = match.end()
        if not parts:
            return text
        parts.append(text[done:])
        return "".join(parts)


@functools.cache
def _built_in_pattern() -> re.Pattern[str]:
    return re.compile("|".join(TEXT_PATTERNS.values()), re.IGNORECASE)


@functools.cache
def built_in_scrubber() -> Scrubber:
    """The scrubber of the built-in patterns (settings, health messages, logs by default)."""
    return Scrubber()


def _find_all(text: str, part: str) -> Iterable[int]:
    start = text.find(part)
    while start >= 0:
        yield start
        start = text.find(part, start + 1)


def _mask_after_kept(match: re.Match[str]) -> str:
    # Each alternative keeps its named group, the outermost one, which closes last.
    kept = match[match.lastgroup] if match.lastgroup else ""
    return f"{kept}{MASK}"


def _mask_whole(match: re.Match[str]) -> str:
    return MASK if match.group() else ""  # an empty match masks nothing


# Under `app.*` (the service's own settings, free-form) also a name ending in `key` or
# `keys` (`stripe_key`, `signingKey`, `stripe.key`) or holding `credential`
# (`gcp_credentials_json`), as Spring Boot's actuator masks them, and at any depth:
# `app.stripe_keys.live` is a secret too. aiva's own keys list their secrets
# (SECRET_KEYS): there `security.rate_limit.key` and `telemetry.otlp.client_key` (a
# file's path) are none.
_APP_SECRET_NAME = re.compile(rf"(?:{_NAME}|keys?)\Z|credential", re.IGNORECASE)


def is_secret_key(key: str) -> bool:
    """Whether a dotted key names a secret (or lies under one, like a header value)."""
    section, _, rest = key.partition(".")
    return (
        key in SECRET_KEYS
        or is_secret_name(key.rsplit(".", 1)[-1])
        or any(key.startswith(secret + ".") for secret in SECRET_KEYS)
        or (section == "app" and any(_APP_SECRET_NAME.search(part) for part in rest.split(".")))
    )


# `user:password@` anywhere in a text that is no proper URL (`postgres//u:pw@h/db`): the
# password runs to the last `@` before whitespace, as urlsplit takes the netloc's last `@`.
_USER_PASSWORD = re.compile(r"(?P<user>[^\s:/@]*):[^\s]*@")


def mask_url(text: str) -> str:
    """Replace the password of a URL or DSN (`scheme://user:pass@host`) with the mask.

    A malformed one (no `://`, or one urlsplit refuses) still has any `user:pass@` masked.
    """
    if "@" not in text:
        return text
    if "://" not in text:
        return _USER_PASSWORD.sub(rf"\g<user>:{MASK}@", text)
    try:
        parts = urlsplit(text)
    except ValueError:  # e.g. an unbalanced `[` in the host
        return _USER_PASSWORD.sub(rf"\g<user>:{MASK}@", text)
    if parts.password is None:
        return text
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{netloc}"))


def mask_text(text: str) -> str:
    """Free text (a driver's error, a stack trace) with every secret the built-in
    patterns know masked: URL passwords, `password=...`-style pairs, header values."""
    return built_in_scrubber().scrub(text)


def masked_exception(error: BaseException) -> dict[str, str]:
    """An exception's message and stacktrace, masked, as the exception event's attributes:
    `span.record_exception(error, attributes=masked_exception(error))` records these
    in place of the SDK's own (a driver's message may quote the DSN it failed to reach)."""
    stacktrace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return {
        "exception.message": mask_text(str(error)),
        "exception.stacktrace": mask_text(stacktrace),
    }


def mask_value(key: str, value: Any) -> Any:
    """The value as it may be shown for `key`: secrets masked, nested mappings walked."""
    if value is None:
        return None
    if isinstance(value, dict):
        if is_secret_key(key):
            return {name: MASK for name in value}
        return {name: mask_value(f"{key}.{name}", item) for name, item in value.items()}
    if is_secret_key(key):
        return MASK if value != "" else value  # an empty one hides nothing (and is no key)
    if isinstance(value, str):  # a URL's password, and whatever else looks like a secret
        return mask_text(mask_url(value))
    if isinstance(value, list | tuple):
        return [mask_value(key, item) for item in value]
    return value
