"""The request path below the root path, as Starlette's routes match it.

Starlette reads it with `starlette._utils.get_route_path`, a private helper: aiva reads it
the same way here from the ASGI scope's public keys (`path`, `root_path`), so that its
routing, exclusions and limits see the path Starlette's routes see, and an upgrade of
Starlette cannot take the helper away (tests/web/test_paths.py compares the two).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def route_path(scope: Mapping[str, Any]) -> str:
    """`path` without `root_path` when the path lies below it (ASGI: `path` includes the
    root path); the whole path otherwise ('' for the root path itself)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if not root or not path.startswith(root):
        return path
    if len(path) == len(root):
        return ""
    return path[len(root) :] if path[len(root)] == "/" else path
