"""Route templates for telemetry, and RouteGroup: aiva's own routes as one router entry."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from starlette.datastructures import URLPath
from starlette.routing import BaseRoute, Match, Mount, NoMatchFound, Route
from starlette.types import Receive, Scope, Send

from aiva.fast.fastapi import ROUTER_SCOPE_KEY
from aiva.web.fastapi_support import template_of
from aiva.web.paths import route_path  # the path Route.matches reads, root_path and all


def route_template(scope: Scope, root: str | None = None) -> str | None:
    """`/items/{item_id}` for a matched request, with any Mount prefix; None when unmatched.

    Unmatched paths have no template on purpose: a raw path must never become a span
    name or a metric attribute (a scan of random URLs would explode the series count).
    `root`: the Mounts' prefix as a template (MountTemplates), where the scope's
    root_path holds a Mount parameter's raw value.
    """
    route = scope.get("route")
    root = (scope.get("root_path", "") if root is None else root).rstrip("/")
    if route is None or isinstance(route, Mount) or ROUTER_SCOPE_KEY in scope:
        # A FastAPI router took part: it records less than Starlette's (fastapi_support).
        template = template_of(scope, route)
        if template is not None:
            return (root + template) or "/"
    if route is None:
        return None
    if isinstance(route, Mount):
        return root or "/"
    path_format = getattr(route, "path_format", None)
    return (root + path_format) or "/" if isinstance(path_format, str) else None


class MountTemplates:
    """The Mounts a request went through, as templates, for an app where some Mount has
    a parameter (`Mount("/tenants/{tenant}", ...)`): the root_path Starlette leaves in
    the scope holds the raw value (`/tenants/acme`), one series per tenant otherwise.

    The request's path is matched against the app's routes again, Mounts only and
    first match first, as the router did; in an app without such a Mount (most) it
    costs one attribute check.
    """

    def __init__(self, routes: list[BaseRoute]) -> None:
        self._routes = routes  # the app's own list: routes added later are seen
        self._parametrized: bool | None = None

    def needed(self) -> bool:
        if self._parametrized is None:  # decided at the first request: routes are final
            self._parametrized = any("{" in m.path for m in _mounts(self._routes))
        return self._parametrized

    def root(self, scope: Scope, entry_root: str) -> str:
        """The template of `entry_root` plus the Mounts the request's path went through."""
        template = entry_root.rstrip("/")
        probe: dict[str, Any] = {
            "type": "http", "path": scope["path"], "root_path": entry_root,
            "method": scope.get("method", "GET"), "headers": scope.get("headers", []),
        }  # fmt: skip
        routes: list[BaseRoute] | None = self._routes
        while routes:
            for route in routes:
                match, child = route.matches(probe)
                if match is not Match.FULL:
                    continue
                if not isinstance(route, Mount):
                    return template  # the router stops at this route
                template += route.path
                probe.update(child)
                routes = getattr(getattr(route.app, "router", route.app), "routes", None)
                break
            else:
                return template
        return template


def _mounts(routes: Iterable[BaseRoute]) -> Iterable[Mount]:
    for route in routes:
        if isinstance(route, Mount):
            yield route
            yield from _mounts(getattr(getattr(route.app, "router", route.app), "routes", ()))


def _first_segment(path: str) -> str:
    return path[1:].partition("/")[0]


class RouteGroup(BaseRoute):
    """Routes that the router sees as one entry, tried only when the first segment fits.

    Hand-written because Starlette's router scans its routes in order, one regex match
    each, and no library indexes them: every request to a user route would first fail
    on each of aiva's own endpoints. The group keys its routes by their first literal
    path segment (a route whose first segment has a parameter is tried for every path)
    and otherwise keeps Router's rules: the routes in their order, the first FULL match
    wins, else the first PARTIAL (a 405), else NONE.

    The child scope carries `"route"`: the inner route that matched. It overrides the
    group that Router stored, so `route_template` and `handle` see the inner route.
    """

    def __init__(self, routes: Iterable[BaseRoute]) -> None:
        own: list[Route] = []
        for route in routes:
            if not isinstance(route, Route):
                raise TypeError(f"RouteGroup takes starlette Route objects only, not {route!r}")
            own.append(route)
        segments = [_first_segment(route.path) for route in own]
        self._routes = tuple(own)
        self._always = tuple(r for r, s in zip(own, segments, strict=True) if "{" in s)
        self._by_segment = {
            segment: tuple(
                r for r, s in zip(own, segments, strict=True) if s == segment or "{" in s
            )
            for segment in segments
            if "{" not in segment
        }

    @property
    def routes(self) -> list[Route]:
        """The inner routes, in order (a copy: the group's index is fixed)."""
        return list(self._routes)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if "path" in scope:
            segment = _first_segment(route_path(scope))
            candidates = self._by_segment.get(segment, self._always)
        else:
            candidates = self._routes
        partial: Scope | None = None
        for route in candidates:
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                child_scope["route"] = route
                return match, child_scope
            if match is Match.PARTIAL and partial is None:
                child_scope["route"] = route
                partial = child_scope
        if partial is not None:
            return Match.PARTIAL, partial
        return Match.NONE, {}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = scope.get("route")
        if route is None or route is self:
            raise RuntimeError("RouteGroup.handle needs the scope its matches() returned")
        await route.handle(scope, receive, send)

    def url_path_for(self, name: str, /, **path_params: Any) -> URLPath:
        for route in self._routes:
            try:
                return route.url_path_for(name, **path_params)
            except NoMatchFound:
                pass
        raise NoMatchFound(name, path_params)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RouteGroup) and self._routes == other._routes

    def __repr__(self) -> str:
        return f"{type(self).__name__}(routes={list(self._routes)!r})"
