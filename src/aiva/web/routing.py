"""The route template of a request, for span names, metric attributes and access logs."""

from __future__ import annotations

from starlette.routing import Mount
from starlette.types import Scope


def route_template(scope: Scope) -> str | None:
    """`/items/{item_id}` for a matched request, with any Mount prefix; None when unmatched.

    Unmatched paths have no template on purpose: a raw path must never become a span
    name or a metric attribute (a scan of random URLs would explode the series count).
    """
    route = scope.get("route")
    if route is None:
        return None
    root = scope.get("root_path", "").rstrip("/")
    if isinstance(route, Mount):
        return root or "/"
    path_format = getattr(route, "path_format", None)
    return (root + path_format) or "/" if isinstance(path_format, str) else None
