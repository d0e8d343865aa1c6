"""Shared fixtures."""

from prometheus_server import prometheus_factory  # noqa: F401  (a real Prometheus for integration tests)
