"""Ingress entries: what a producer XADDs, checked against the rules of README: Publishing.

Validation is a pure function so it can be fuzzed; anything it refuses is dead-lettered by the
router with the reason it returns, never dropped and never allowed to stop routing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import msgspec

from notifier import rules
from notifier.models import Message

_decode_object = msgspec.json.Decoder(dict[str, Any]).decode
encode = msgspec.json.Encoder().encode


def entry_timestamp(entry_id: str) -> str:
    """ISO-8601 UTC with milliseconds, from the ms part of a stream entry id."""
    ms = int(entry_id.split("-", 1)[0])
    return f"{_second(ms // 1000)}{ms % 1000:03d}Z"


@lru_cache(maxsize=256)
def _second(seconds: int) -> str:
    """The text of a second up to its milliseconds: a batch's entries share a few seconds, and
    strftime was an eighth of the router's CPU when run for each."""
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.")


def _text(
    fields: dict[bytes, bytes], name: str, problem_of: Callable[[str], str | None]
) -> tuple[str | None, str | None]:
    """An optional text field of an entry, and what is wrong with it (None when all is well)."""
    raw = fields.get(name.encode())
    if raw is None:
        return None, None
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        return None, f"{name} is not UTF-8 text"
    return text, problem_of(text)


def parse(
    entry_id: str, fields: dict[bytes, bytes], max_bytes: int, own: bool = False
) -> Message | str:
    """The Message an ingress entry carries, or the reason it is malformed.

    Producers are other teams' code and sometimes hostile: any byte string may arrive in any
    field, so nothing here may raise; whatever cannot be read is a reason, not an exception.
    `notifier.*` types are notifier's own operational events (`own`: the ops stream); a
    producer may not send them, so a partner that subscribes to them can trust them.
    """
    raw_type = fields.get(b"type")
    raw_data = fields.get(b"data")
    if raw_type is None:
        return "missing field: type"
    if raw_data is None:
        return "missing field: data"
    try:
        event_type = raw_type.decode()
    except UnicodeDecodeError:
        return "type is not UTF-8 text"
    problem = rules.event_type_problem(event_type)
    if problem:
        return problem
    if not own and event_type.startswith(rules.OWN_TYPES):
        return f"type {event_type!r}: notifier.* types are notifier's own operational events"
    raw_parent = fields.get(b"traceparent")
    if raw_parent is not None and not rules.TRACEPARENT.fullmatch(raw_parent):
        return "traceparent is not a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>)"
    problem = data_problem(raw_data, max_bytes)
    if problem:
        return problem
    given_id, problem = _text(fields, "id", rules.event_id_problem)
    if problem:
        return problem
    owner, problem = _text(fields, "owner", rules.owner_problem)
    if problem:
        return problem
    return Message(
        id=given_id or rules.message_id_of(entry_id),
        type=event_type,
        timestamp=entry_timestamp(entry_id),
        data=msgspec.Raw(raw_data),
        owner=owner,
    )


def problem(fields: dict[bytes, bytes], max_bytes: int) -> str | None:
    """Why the router would dead-letter these fields, or None: for publishers that check
    before they XADD (the CLI, `POST /v1/events`), with exactly the router's words."""
    parsed = parse("0-0", fields, max_bytes)
    return parsed if isinstance(parsed, str) else None


def data_problem(raw: bytes, max_bytes: int) -> str | None:
    """Why `raw` is not an event's `data` (a JSON object of at most `max_bytes`), or None.

    The reasons are notifier's own words, one per kind of problem, never a decoder's message:
    a producer reads them in the dead letters, and they must not change with a library's
    release (msgspec 0.23 began to word invalid UTF-8 its own way)."""
    if len(raw) > max_bytes:
        return f"data is {len(raw)} bytes, over NOTIFIER_MAX_EVENT_BYTES ({max_bytes})"
    try:
        raw.decode()
    except UnicodeDecodeError as exc:
        return f"data is not a JSON object: it is not UTF-8 text (byte {exc.start})"
    try:
        _decode_object(raw)
    except msgspec.ValidationError:
        return f"data is not a JSON object: it is {_json_kind(raw)}"
    except msgspec.DecodeError:
        return "data is not a JSON object: it is not valid JSON"
    except RecursionError:
        return "data is not a JSON object notifier can read: it nests too deeply"
    return None


_KINDS = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}


def _json_kind(raw: bytes) -> str:
    """What a valid JSON document that is not an object is, in words."""
    try:
        value = msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return "not valid JSON"
    if value is None:
        return "null"
    return _KINDS.get(type(value), "a number")


def describe(fields: dict[bytes, bytes]) -> str:
    """The whole entry as dead-letter text, so nothing a producer sent is lost."""
    shown = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in fields.items()}
    return encode(shown).decode()
