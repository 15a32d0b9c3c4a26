"""Where and how each signal is exported over OTLP: the general settings and the signal's own,
resolved by the OpenTelemetry specification's rules."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal

from aiva.settings.model import OtlpCompression, OtlpProtocol, OtlpSettings

OtlpSignal = Literal["traces", "metrics", "logs"]


@dataclass(frozen=True)
class OtlpTarget:
    """One signal's effective OTLP exporter settings."""

    signal: OtlpSignal
    endpoint: str
    protocol: OtlpProtocol
    headers: Mapping[str, str]
    timeout_s: float
    compression: OtlpCompression
    certificate: str | None
    client_certificate: str | None
    client_key: str | None
    insecure: bool


def otlp_target(otlp: OtlpSettings, signal: OtlpSignal) -> OtlpTarget | None:
    """The signal's target, or None when neither its own nor the general endpoint is set.

    The specification's endpoint rules: a signal's own endpoint is used as given; the
    general one is a base URL, to which HTTP/protobuf appends `v1/<signal>` (gRPC takes
    it as it is). Every other value: the signal's own where set, else the general one.
    """
    own = getattr(otlp, signal)
    protocol = own.protocol or otlp.protocol
    if own.endpoint:
        endpoint = own.endpoint
    elif otlp.endpoint:
        base = otlp.endpoint
        endpoint = base if protocol == "grpc" else f"{base.rstrip('/')}/v1/{signal}"
    else:
        return None
    insecure = own.insecure if own.insecure is not None else otlp.insecure
    if endpoint.startswith(("http://", "https://")):
        # The specification: the scheme decides; `insecure` is for host:port (gRPC) only.
        insecure = endpoint.startswith("http://")
    return OtlpTarget(
        signal=signal,
        endpoint=endpoint,
        protocol=protocol,
        headers=own.headers if own.headers is not None else otlp.headers,
        timeout_s=own.timeout_s if own.timeout_s is not None else otlp.timeout_s,
        compression=own.compression or otlp.compression,
        certificate=own.certificate or otlp.certificate,
        client_certificate=own.client_certificate or otlp.client_certificate,
        client_key=own.client_key or otlp.client_key,
        insecure=bool(insecure),
    )


def any_target(otlp: OtlpSettings) -> bool:
    """Whether any signal is exported over OTLP (the collector is a dependency)."""
    return any(otlp_target(otlp, signal) is not None for signal in ("traces", "metrics", "logs"))


def within(target: OtlpTarget, export_timeout_s: float) -> OtlpTarget:
    """The target with its timeout bounded by a processor's or reader's export timeout
    (OTEL_BSP_EXPORT_TIMEOUT, OTEL_BLRP_EXPORT_TIMEOUT, OTEL_METRIC_EXPORT_TIMEOUT): the
    SDK's batch processors keep theirs unused, and its OTLP exporters do not bound a
    request by the timeout a reader passes (1.45), so the exporter applies it."""
    return replace(target, timeout_s=min(target.timeout_s, export_timeout_s))
