"""Per-request context carried through contextvars: the request id and bound log fields."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

# contextvars, not globals: each request and task sees its own value.
request_id_var: ContextVar[str | None] = ContextVar("aiva_request_id", default=None)
log_fields_var: ContextVar[dict[str, Any] | None] = ContextVar("aiva_log_fields", default=None)
