"""The event-type catalog: a description, an optional JSON Schema (2020-12) of `data`, an
example and a `deprecated` flag per event type, and the router's check of events against it.

Entries live in one hash, `notifier:event-types` (type -> msgspec JSON of EventType). Its
field `:version` (no event type can be spelled so) holds a token that every change replaces
in the same command, so a change and its announcement are one atomic step on one key, on a
Cluster too. Every router reads the token with the partner changes it already follows, once a
batch, and when it moved reloads the hash and compiles only the schemas whose text changed:
each schema is compiled once per change, never per event, and a change is seen without a
restart. Types without an entry, or without a schema, are routed as before.

Validation is jsonschema-rs (`docs/catalog.md` has the figures it was chosen by). Schemas are
read offline: a `$ref` to another document is refused when saved, never fetched. The reason
an event is dead-lettered with is notifier's own words, `schema: <path>: <rule>` (the path
into the event as filters write it, the rule the keyword and its value), so it does not change
with the library's wording.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Annotated, Any

import jsonschema_rs
import msgspec

from notifier import cursors, logs, rules
from notifier.errors import Invalid, NotFound
from notifier.models import Page, utc_now

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from notifier.subscriptions import EventView

log = logs.get("catalog")

KEY = "notifier:event-types"
VERSION = ":version"
SCHEMA_URI = "https://json-schema.org/draft/2020-12/schema"

_encode = msgspec.json.Encoder().encode


class EventTypeIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """An entry as PUT: `schema` is a JSON Schema (2020-12) of the event's `data`."""

    description: Annotated[str, msgspec.Meta(max_length=2000)]
    schema: dict[str, Any] | None = None
    example: dict[str, Any] | None = None
    deprecated: bool = False


class EventType(msgspec.Struct, kw_only=True):
    """An entry of the catalog, as stored and shown."""

    type: str
    description: str
    schema: dict[str, Any] | None = None
    example: dict[str, Any] | None = None
    deprecated: bool = False
    updated_at: str = ""


_decode_entry = msgspec.json.Decoder(EventType).decode


def compile_schema(schema: dict[str, Any]) -> jsonschema_rs.Draft202012Validator:
    """A validator of `data`, or Invalid naming what is wrong with the schema."""
    given = schema.get("$schema", SCHEMA_URI)
    if given not in (SCHEMA_URI, SCHEMA_URI + "#"):
        raise Invalid(f"schema: $schema must be {SCHEMA_URI} (or left out)")
    try:
        jsonschema_rs.meta.validate({**schema, "$schema": SCHEMA_URI})
    except jsonschema_rs.ValidationError as exc:
        where = _path("schema", exc.instance_path)
        raise Invalid(f"{where}: not a valid JSON Schema ({_rule(exc, None)})") from None
    try:
        return jsonschema_rs.Draft202012Validator(schema, offline=True)
    except (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError) as exc:
        first = str(exc).splitlines()[0][:200]
        raise Invalid(f"schema: cannot be used: {first}") from None


def reason(
    validator: jsonschema_rs.Draft202012Validator, schema: dict[str, Any], data: Any
) -> str | None:
    """`schema: <path>: <rule>` for the first way `data` breaks the schema, or None."""
    for error in validator.iter_errors(data):
        return f"schema: {_path('data', error.instance_path)}{_rule(error, schema)}"
    return None


def _path(root: str, steps: Any) -> str:
    text = root
    for step in steps:
        text += f"[{step}]" if isinstance(step, int) else f".{step}"
    return text


def _rule(error: jsonschema_rs.ValidationError, schema: dict[str, Any] | None) -> str:
    """`: <keyword> <its value>`, or for a property that must or must not be there the
    property in the path and the keyword alone."""
    kind = error.kind
    name = type(kind).__name__
    keyword = str(error.schema_path[-1]) if error.schema_path else name
    if name == "Required":
        return f".{getattr(kind, 'property', '?')}: required"
    if name in ("AdditionalProperties", "UnevaluatedProperties"):
        extra = ", ".join(str(p) for p in getattr(kind, "unexpected", ()))
        return f".{extra}: not allowed ({keyword})" if extra else f": {keyword}"
    if schema is None:
        return keyword
    value = _at(schema, error.schema_path)
    if value is None:
        return f": {keyword}"
    shown = _encode(value).decode()
    return f": {keyword} {shown if len(shown) <= 60 else shown[:57] + '...'}"


def _at(schema: Any, steps: Any) -> Any:
    for step in steps:
        in_object = isinstance(schema, dict) and step in schema
        in_list = isinstance(schema, list) and isinstance(step, int) and step < len(schema)
        if not (in_object or in_list):
            return None
        schema = schema[step]
    return schema


def checked(event_type: str, body: EventTypeIn) -> EventType:
    """The entry to store, or Invalid: a bad type, schema, or an example that breaks it."""
    problem = rules.event_type_problem(event_type)
    if problem:
        raise Invalid(problem)
    if event_type.startswith(rules.OWN_TYPES):
        raise Invalid(f"type {event_type!r}: notifier.* types are notifier's own events")
    if body.schema is not None:
        validator = compile_schema(body.schema)
        if body.example is not None:
            broken = reason(validator, body.schema, body.example)
            if broken:
                raise Invalid("example: breaks the schema: " + broken.removeprefix("schema: "))
    return EventType(
        type=event_type,
        description=body.description,
        schema=body.schema,
        example=body.example,
        deprecated=body.deprecated,
        updated_at=utc_now(),
    )


class EventTypes:
    """The catalog in Redis: what the admin API and the CLI call."""

    def __init__(self, redis: Redis) -> None:
        self.redis: Any = redis  # redis-py types replies as bytes | str; this client: bytes

    async def put(self, event_type: str, body: EventTypeIn) -> EventType:
        entry = checked(event_type, body)
        # one HSET: the entry and the new version token change together
        await self.redis.hset(KEY, mapping={event_type: _encode(entry), VERSION: _token()})
        return entry

    async def get(self, event_type: str) -> EventType:
        raw = await self.redis.hget(KEY, event_type) if event_type != VERSION else None
        if raw is None:
            raise NotFound(f"no event type {event_type[:200]!r} in the catalog")
        return _decode_entry(raw)

    async def page(self, after: str | None = None, limit: int = 100) -> Page[EventType]:
        """Entries by type name."""
        cursor = cursors.read(after, (str,))
        raw = await self.redis.hgetall(KEY)
        names = sorted(k.decode() for k in raw if k != VERSION.encode())
        if cursor is not None:
            names = [n for n in names if n > cursor[0]]
        shown, rest = names[:limit], names[limit:]
        return Page(
            data=[_decode_entry(raw[n.encode()]) for n in shown],
            next=cursors.make(shown[-1]) if shown and rest else None,
        )

    async def remove(self, event_type: str) -> None:
        await self.get(event_type)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(KEY, event_type)
            pipe.hset(KEY, VERSION, _token())
            await pipe.execute()


def _token() -> str:
    return secrets.token_hex(8)


class Catalog:
    """A process's compiled copy of the catalog, following its version token."""

    def __init__(self, off: bool = False) -> None:
        """`off`: a copy that never loads (the router of notifier's own events, whose
        `notifier.*` types the catalog cannot hold)."""
        self.off = off
        self.version: bytes | None = b"(not loaded)"
        self._entries: dict[str, tuple[bytes, EventType, jsonschema_rs.Draft202012Validator]] = {}

    def queue(self, pipe: Any) -> None:
        """Read the version in a pipeline the caller runs anyway; give its reply to `follow`."""
        pipe.hget(KEY, VERSION)

    async def follow(self, redis: Any, version: bytes | None) -> None:
        """Reload when the version moved (or Redis lost it)."""
        if version != self.version and not self.off:
            self.load(await redis.hgetall(KEY))

    def load(self, raw: dict[bytes, bytes]) -> None:
        entries = {}
        for field, value in raw.items():
            if field == VERSION.encode():
                continue
            name = field.decode(errors="replace")
            old = self._entries.get(name)
            if old is not None and old[0] == value:
                entries[name] = old
                continue
            try:
                entry = _decode_entry(value)
                if entry.schema is not None:
                    entries[name] = (value, entry, compile_schema(entry.schema))
            except (msgspec.DecodeError, msgspec.ValidationError, Invalid) as exc:
                log.error("event type unreadable, not validated", type=name, error=str(exc))
        self._entries = entries
        self.version = raw.get(VERSION.encode())

    def problem(self, event: EventView) -> str | None:
        """Why an event breaks its type's schema (`schema: <path>: <rule>`), or None."""
        return self.data_problem(event.message.type, event.body["data"])

    def data_problem(self, event_type: str, data: Any) -> str | None:
        found = self._entries.get(event_type)
        if found is None:
            return None
        _, entry, validator = found
        assert entry.schema is not None
        return reason(validator, entry.schema, data)

    async def check(self, redis: Any, event_type: str, data: Any) -> str | None:
        """What a publisher is told before it XADDs: the router's own schema reason, from a
        copy brought up to date first (one HGET while the catalog has not changed)."""
        await self.follow(redis, await redis.hget(KEY, VERSION))
        return self.data_problem(event_type, data)
