"""The one OpenTelemetry Resource every signal carries."""

from __future__ import annotations

import os
import socket
import uuid

from opentelemetry.sdk.resources import Resource

from aiva.settings import Settings


def build_resource(settings: Settings) -> Resource:
    """The contract's attributes over `OTEL_RESOURCE_ATTRIBUTES` (already in the settings).

    Resource.create() is not used: it reads OTEL_* variables itself, and settings are
    parsed once at the edge (they already hold OTEL_RESOURCE_ATTRIBUTES and
    OTEL_SERVICE_NAME with their precedence applied).
    """
    service = settings.service
    attributes: dict[str, str | int] = {
        **settings.telemetry.resource_attributes,
        "service.name": service.name,
        "service.version": service.version,
        "service.instance.id": str(uuid.uuid4()),
        "deployment.environment.name": service.environment,
        "host.name": socket.gethostname(),
        "process.pid": os.getpid(),
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "opentelemetry",
    }
    return Resource(attributes)
