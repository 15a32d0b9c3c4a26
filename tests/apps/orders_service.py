"""The orders API as its users would ship it with aiva: instrumented at import, for
`uvicorn tests.apps.orders_service:app` (no aiva command involved)."""

from __future__ import annotations

import aiva
from tests.apps.orders_api import build

app = aiva.instrument(build())
