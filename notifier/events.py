"""Ingress entries: what a producer XADDs, checked against contract section 1.

Validation is a pure function so it can be fuzzed; anything it refuses is dead-lettered by the
router with the reason it returns, never dropped and never allowed to stop routing.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import msgspec

from notifier.models import Message

_TYPE = re.compile(r"^[a-z0-9_.-]+$")
MAX_TYPE_LENGTH = 200
MAX_ID_LENGTH = 128
_decode_object = msgspec.json.Decoder(dict[str, Any]).decode
encode = msgspec.json.Encoder().encode


def entry_timestamp(entry_id: str) -> str:
    """ISO-8601 UTC with milliseconds, from the ms part of a stream entry id."""
    ms = int(entry_id.split("-", 1)[0])
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def parse(entry_id: str, fields: dict[bytes, bytes], max_bytes: int) -> Message | str:
    """The Message an ingress entry carries, or the reason it is malformed."""
    raw_type = fields.get(b"type")
    raw_data = fields.get(b"data")
    if raw_type is None:
        return "missing field: type"
    if raw_data is None:
        return "missing field: data"
    try:
        event_type = raw_type.decode()
    except UnicodeDecodeError:
        return "type is not UTF-8"
    if len(event_type) > MAX_TYPE_LENGTH or not _TYPE.match(event_type):
        return f"type {event_type[:MAX_TYPE_LENGTH]!r} does not match [a-z0-9_.-]+"
    if len(raw_data) > max_bytes:
        return f"data is {len(raw_data)} bytes, over NOTIFIER_MAX_EVENT_BYTES ({max_bytes})"
    try:
        _decode_object(raw_data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return f"data is not a JSON object: {exc}"
    message_id = f"msg_{entry_id}"
    raw_id = fields.get(b"id")
    if raw_id is not None:
        try:
            message_id = raw_id.decode()
        except UnicodeDecodeError:
            return "id is not UTF-8"
        if not 0 < len(message_id) <= MAX_ID_LENGTH or not message_id.isprintable():
            return f"id must be 1 to {MAX_ID_LENGTH} printable characters"
    return Message(id=message_id, type=event_type, timestamp=entry_timestamp(entry_id),
                   data=msgspec.Raw(raw_data))


def describe(fields: dict[bytes, bytes]) -> str:
    """The whole entry as dead-letter text, so nothing a producer sent is lost."""
    shown = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in fields.items()}
    return encode(shown).decode()
