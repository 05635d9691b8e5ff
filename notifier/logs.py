"""structlog JSON logs. Callers bind partner, event id and attempt; never secrets or payloads.

A line logged while a span is current carries its `trace_id` and `span_id`, so a log line and
its trace find each other in Grafana; lines about one attempt carry that attempt's span's ids
when the caller passes them (the attempt's span is over by then).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog
from opentelemetry import trace


def _trace_ids(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if "trace_id" not in event:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            event["trace_id"] = format(context.trace_id, "032x")
            event["span_id"] = format(context.span_id, "016x")
    return event


#: What no line may show: the Redis passwords of this process, put here when it connects.
#: Nothing notifier logs should hold one (URLs are masked where they are shown), so this is
#: the last guard, for a message of a library that repeats more than it should.
_HIDDEN: set[str] = set()


def hide(*secrets: str | None) -> None:
    """Never show these in a log line or in what `redacted` gives."""
    _HIDDEN.update(secret for secret in secrets if secret)


def redacted(text: str) -> str:
    for secret in _HIDDEN:
        text = text.replace(secret, "***")
    return text


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if _HIDDEN:
        for key, value in event.items():
            if isinstance(value, str):
                event[key] = redacted(value)
            elif not isinstance(value, int | float | bool | None):
                shown = str(value)
                if redacted(shown) != shown:  # else keep its shape (a list stays a list)
                    event[key] = redacted(shown)
    return event


class _Redacting(logging.Filter):
    """The same guard on the standard library's log records (aiohttp's, redis-py's)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _HIDDEN:
            record.msg, record.args = redacted(record.getMessage()), None
        return True


def configure(level: str = "info") -> None:
    logging.basicConfig(stream=sys.stderr, format="%(message)s", level=level.upper())
    for handler in logging.getLogger().handlers:
        handler.addFilter(_Redacting())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _trace_ids,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redact,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


def get(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(component=name)  # type: ignore[no-any-return]
