"""Reusable test infrastructure: real processes on free loopback ports, stopped by PID."""
