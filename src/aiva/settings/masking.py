"""Masking of secret settings values for every output: logs, responses, CLI."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from aiva.settings.model import SECRET_KEYS

MASK = "****"
_SECRET_SUFFIXES = (".password", ".api_key", ".token", ".secret")
# `user:password@` anywhere in a text that is no proper URL (`postgres//u:pw@h/db`): the
# password runs to the last `@` before whitespace, as urlsplit takes the netloc's last `@`.
_USER_PASSWORD = re.compile(r"(?P<user>[^\s:/@]*):[^\s]*@")
# In free text (a driver's error message, a stack trace): a URL's password, up to the last
# `@` of its authority (a password may hold an `@`), and libpq-style `password=...`.
_URL_PASSWORD_IN_TEXT = re.compile(r"(\w+://[^:/@\s]*:)[^\s/]*@")
_KEY_PASSWORD = re.compile(r"\b(password|passwd|pwd)=('[^']*'|\S+)", re.IGNORECASE)


def is_secret_key(key: str) -> bool:
    """Whether a dotted key names a secret (or lies under one, like a header value)."""
    return (
        key in SECRET_KEYS
        or key.endswith(_SECRET_SUFFIXES)
        or any(key.startswith(secret + ".") for secret in SECRET_KEYS)
    )


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
    """Free text with every URL password and `password=...` value in it masked."""
    text = _URL_PASSWORD_IN_TEXT.sub(rf"\1{MASK}@", text)
    return _KEY_PASSWORD.sub(rf"\1={MASK}", text)


def mask_value(key: str, value: Any) -> Any:
    """The value as it may be shown for `key`: secrets masked, nested mappings walked."""
    if value is None:
        return None
    if isinstance(value, dict):
        if is_secret_key(key):
            return {name: MASK for name in value}
        return {name: mask_value(f"{key}.{name}", item) for name, item in value.items()}
    if is_secret_key(key):
        return MASK
    if isinstance(value, str):
        return mask_url(value)
    if isinstance(value, list | tuple):
        return [mask_value(key, item) for item in value]
    return value
