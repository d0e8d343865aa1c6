"""release-monitor: checks a new release in production and decides its verdict."""

__version__ = "0.1.0"
