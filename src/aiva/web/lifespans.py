"""Lifespans composed: aiva's, the app's own, and those of the apps mounted under it.

Starlette runs the lifespan of the application the server calls and of nothing below
it: an app mounted with `Mount("/x", app=sub)` never starts (its startup code, its
lifespan state), and its handlers fail on state that was never made. aiva runs them,
in order, inside the parent's lifespan, and merges their state into the one state
dict every request's scope is copied from (mounted apps see the parent's scope).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any, cast

from starlette.routing import BaseRoute, Host, Mount, Router

Lifespan = Callable[[Any], AbstractAsyncContextManager[Mapping[str, Any] | None]]
# The attribute marking a router whose lifespan already runs its mounted apps' lifespans.
_RUNS_MOUNTED = "_aiva_runs_mounted_lifespans"


def compose(*parts: tuple[Lifespan, Any]) -> Lifespan:
    """One lifespan entering each (lifespan, app it is called with) in order, exiting in
    reverse; their states merged, a later part's keys over an earlier one's."""

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[dict[str, Any]]:
        state: dict[str, Any] = {}
        async with AsyncExitStack() as stack:
            for part, target in parts:
                got = await stack.enter_async_context(part(target))
                if got:
                    state.update(got)
            yield state

    return lifespan


def mounted_apps(routes: list[BaseRoute]) -> Iterator[Any]:
    """The Starlette applications and routers mounted below `routes`, outermost first.

    A router that runs its own mounted apps already (aiva instrumented it) is yielded
    and not descended into: its lifespan does that part.
    """
    for route in routes:
        if not isinstance(route, Mount | Host):
            continue
        sub = route.app
        router = router_of(sub)
        if router is None:
            continue
        yield sub
        if not getattr(router, _RUNS_MOUNTED, False):
            yield from mounted_apps(router.routes)


def router_of(app: Any) -> Router | None:
    """The Router behind a Starlette (or FastAPI) app, or the app itself when it is one."""
    if isinstance(app, Router):
        return app
    router = getattr(app, "router", None)
    return router if isinstance(router, Router) else None


def run_mounted_lifespans(app: Any, first: tuple[Lifespan, Any] | None = None) -> None:
    """Make `app`'s lifespan also run the lifespans of every app mounted below it.

    `first` (aiva's own lifespan, when instrumenting) is entered before the app's own.
    Call it once the routes are in place; mounts added later are not seen.
    """
    router = router_of(app)
    if router is None:
        raise TypeError(f"{app!r} is not a Starlette application or router")
    if getattr(router, _RUNS_MOUNTED, False):
        raise RuntimeError(f"the mounted lifespans of {app!r} are run already")
    parts: list[tuple[Lifespan, Any]] = [] if first is None else [first]
    parts.append((router.lifespan_context, app))
    parts.extend((_lifespan_of(sub), sub) for sub in mounted_apps(router.routes))
    # Starlette types lifespan_context by what the app's own lifespan yields; any works.
    router.lifespan_context = cast(Any, compose(*parts))
    setattr(router, _RUNS_MOUNTED, True)


def _lifespan_of(app: Any) -> Lifespan:
    router = router_of(app)
    assert router is not None  # mounted_apps yields routers' owners only
    return router.lifespan_context
