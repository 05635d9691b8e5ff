"""notifier: webhook delivery on Redis Streams."""

__version__ = "0.1.0"
