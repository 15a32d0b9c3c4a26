"""uvicorn's server: where the lifespan's state is found when a signal arrives.

uvicorn ends the lifespan only after the requests in flight finish; readiness must turn
503 the moment SIGTERM arrives, so that Kubernetes stops sending new requests while the
old ones drain. aiva's state lives in the lifespan state (`state["aiva"]`), which uvicorn
keeps on its server's lifespan object (`Server.lifespan.state`, uvicorn 0.54), set in
`Server.startup` and handed to the app in the lifespan scope; no public API reaches it
from the server's signal handler.
"""

from __future__ import annotations

from typing import Any


def lifespan_state(server: Any) -> dict[str, Any] | None:
    """The lifespan state of a started uvicorn server, None before its start-up."""
    state = getattr(getattr(server, "lifespan", None), "state", None)
    return state if isinstance(state, dict) else None


def lifespan_state_works() -> str | None:
    """uvicorn's server sets `lifespan` at start-up, and its lifespan keeps the state it
    hands to the app in the lifespan scope as `state`."""
    import uvicorn
    from uvicorn.lifespan.on import LifespanOn

    startup = getattr(uvicorn.Server.startup, "__code__", None)
    if startup is None or "lifespan" not in startup.co_names:
        return "uvicorn.Server.startup no longer sets self.lifespan"
    main = getattr(LifespanOn.main, "__code__", None)
    if main is None or "state" not in main.co_names:
        return "uvicorn's lifespan no longer hands self.state to the app"

    async def app(scope: Any, receive: Any, send: Any) -> None:
        """Never called: the lifespan object is only built."""

    config = uvicorn.Config(app, lifespan="on", log_config=None)
    if not isinstance(getattr(LifespanOn(config), "state", None), dict):
        return "uvicorn's lifespan keeps no state dict"
    return None
