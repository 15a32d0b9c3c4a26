"""The one OpenTelemetry Resource every signal carries, its sources in the specification's order."""

from __future__ import annotations

import os
import socket
import uuid
from functools import cached_property

from opentelemetry.sdk.resources import (
    HOST_NAME,
    PROCESS_PID,
    SERVICE_INSTANCE_ID,
    SERVICE_NAME,
    SERVICE_VERSION,
    TELEMETRY_SDK_LANGUAGE,
    TELEMETRY_SDK_NAME,
    TELEMETRY_SDK_VERSION,
    Resource,
)
from opentelemetry.sdk.version import __version__ as sdk_version

from aiva.settings import Settings

# The current convention's name (the SDK's DEPLOYMENT_ENVIRONMENT is the deprecated
# `deployment.environment`).
DEPLOYMENT_ENVIRONMENT_NAME = "deployment.environment.name"


class _HashOnceResource(Resource):
    """A Resource that computes its hash once.

    The OTLP encoders group every span and log record by resource, and the SDK's
    Resource.__hash__ serialises all attributes to JSON each time: about 7 µs a
    span or log record here, for a value that never changes (resources are
    immutable).
    """

    @cached_property
    def _hash(self) -> int:
        return super().__hash__()

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return other is self or super().__eq__(other)


def build_resource(settings: Settings) -> Resource:
    """Detected values, then `OTEL_RESOURCE_ATTRIBUTES`, then the service's identity.

    The identity (`service.name`, `service.version`, `deployment.environment.name`)
    comes from the settings, which already applied the specification's order to it:
    `OTEL_RESOURCE_ATTRIBUTES` over the package defaults, `OTEL_SERVICE_NAME` over
    that, explicit aiva settings over all (aiva.settings.identity). A pod's
    `service.instance.id` or `host.name` given in `OTEL_RESOURCE_ATTRIBUTES` replaces
    the detected one.

    Resource.create() is not used: it reads OTEL_* variables itself, and settings are
    parsed once at the edge.
    """
    service = settings.service
    attributes: dict[str, str | int] = {
        **detected_attributes(),
        **settings.telemetry.resource_attributes,
        SERVICE_NAME: service.name,
        SERVICE_VERSION: service.version,
        DEPLOYMENT_ENVIRONMENT_NAME: service.environment,
    }
    given = settings.telemetry.resource_attributes.get(SERVICE_INSTANCE_ID)
    if given and settings.server.workers > 1:
        # Each worker process is an instance of its own (the conventions: unique per
        # instance; and each pushes its own cumulative series): the pod's id, then the pid.
        attributes[SERVICE_INSTANCE_ID] = f"{given}-{os.getpid()}"
    return _HashOnceResource(attributes)


def detected_attributes() -> dict[str, str | int]:
    """What this process finds out about itself: the lowest source of the resource.

    `telemetry.sdk.*` sits here too, as in the SDK's own Resource.create(), which lets
    OTEL_RESOURCE_ATTRIBUTES override its defaults.
    """
    return {
        TELEMETRY_SDK_LANGUAGE: "python",
        TELEMETRY_SDK_NAME: "opentelemetry",
        TELEMETRY_SDK_VERSION: sdk_version,
        SERVICE_INSTANCE_ID: str(uuid.uuid4()),
        HOST_NAME: socket.gethostname(),
        PROCESS_PID: os.getpid(),
    }
