"""The service's identity taken from OTEL_RESOURCE_ATTRIBUTES where no explicit setting names it.

The OpenTelemetry specification orders a resource's sources: detected values lowest,
then `OTEL_RESOURCE_ATTRIBUTES`, then `OTEL_SERVICE_NAME`; aiva's explicit settings (a
settings file, an `AIVA_*` variable) come last. `service.name`, `service.version` and
`service.environment` have package values (`aiva`, the package version, the active
environment) that are defaults, not statements: a deployment that names the service,
its version or its environment in `OTEL_RESOURCE_ATTRIBUTES` (the OpenTelemetry
Operator, a Helm chart) wins over them. The layers already put `OTEL_SERVICE_NAME`
(layer 5) below `AIVA_SERVICE__NAME` (layer 6).

Adopted once, while the settings load, so that every reader agrees: the resource on
every signal, /info, the health reports and `aiva config show --sources`, which names
`OTEL_RESOURCE_ATTRIBUTES` as the source.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from aiva.settings.layers import DEFAULTS_SOURCE, join_key, source_of

# (the `service` key, the resource attribute naming the same thing)
IDENTITY_ATTRIBUTES = (
    ("name", "service.name"),
    ("version", "service.version"),
    ("environment", "deployment.environment.name"),
)


def adopt_resource_identity(data: dict[str, Any], origins: MutableMapping[str, str]) -> None:
    """Fill the `service` keys no one set explicitly from `telemetry.resource_attributes`.

    `data` is the merged settings before derivation: a key still None is derived later
    (the package version, the active environment), one from the package defaults is
    the default `aiva`; neither is explicit.
    """
    service = data.get("service")
    telemetry = data.get("telemetry")
    attributes = telemetry.get("resource_attributes") if isinstance(telemetry, dict) else None
    if not isinstance(service, dict) or not isinstance(attributes, dict):
        return  # malformed tables: validation reports them
    for name, attribute in IDENTITY_ATTRIBUTES:
        value = attributes.get(attribute)
        # Only a non-empty string: anything else stays for validation to report.
        if not isinstance(value, str) or not value:
            continue
        key = f"service.{name}"
        if service.get(name) is not None and source_of(key, origins) != DEFAULTS_SOURCE:
            continue  # explicit: a settings file, OTEL_SERVICE_NAME or an AIVA_* variable
        service[name] = value
        origins[key] = source_of(join_key(["telemetry", "resource_attributes", attribute]), origins)
