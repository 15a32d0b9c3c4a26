"""Telemetry: logs, traces and metrics through one OpenTelemetry SDK pipeline."""
