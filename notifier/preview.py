"""Preview: what a partner would receive, without sending anything.

For an event (or a message already routed, by its id) and a partner (saved, or only
described), it answers whether the partner would receive it and, if not, why (it does not
subscribe to the type, the event belongs to another owner, its filter keeps it out, the event
breaks its type's schema, its transform cannot be applied), the exact body and the headers,
signatures included. Everything is decided by the code routing and delivery run, never a copy:
`events.parse` reads the event, the subscriptions index and the catalog judge it,
`sender.render` and `sender.request_headers` make the body and headers. So for a message that
was routed to the partner the body is byte for byte what it received (with its transform as
it is now).
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from notifier import catalog, events, filters, rules
from notifier.engine.sender import render, request_headers
from notifier.errors import Invalid, NotFound
from notifier.message_index import IndexReader
from notifier.models import Message, Partner, PartnerIn, now_ms
from notifier.store import Store
from notifier.subscriptions import EventView, Subscriptions
from notifier.transforms import TransformError

Text = Annotated[str, msgspec.Meta(max_length=1000)]


class PreviewEvent(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """An event to preview: the fields a producer publishes."""

    type: Text
    data: msgspec.Raw
    id: Text | None = None
    owner: Text | None = None


class PreviewIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """An event, or the id of a message routed already: one of the two."""

    event: PreviewEvent | None = None
    message_id: Text | None = None

    def __post_init__(self) -> None:
        if (self.event is None) == (self.message_id is None):
            raise ValueError('give either "event" or "message_id"')


class UnsavedPreviewIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A partner not saved yet, and an event."""

    partner: PartnerIn
    event: PreviewEvent


class PreviewOut(msgspec.Struct, kw_only=True):
    delivered: bool
    reason: str | None
    body: str  # the exact body it would receive ("" when it cannot be made)
    headers: dict[str, str]


async def answer(store: Store, partner: Partner, wanted: PreviewIn) -> PreviewOut:
    """What `wanted` asks about: a routed message by its id, or an event."""
    if wanted.message_id is not None:
        return await of_message(store, partner, wanted.message_id)
    assert wanted.event is not None  # a PreviewIn holds one of the two
    return await of_event(store, partner, wanted.event)


async def of_event(store: Store, partner: Partner, event: PreviewEvent) -> PreviewOut:
    now = now_ms()
    fields = {b"type": event.type.encode(errors="surrogateescape"), b"data": bytes(event.data)}
    for name, value in ((b"id", event.id), (b"owner", event.owner)):
        if value is not None:
            fields[name] = value.encode(errors="surrogateescape")
    message = events.parse(f"{now}-0", fields, store.settings.max_event_bytes)
    if isinstance(message, str):
        raise Invalid(f"event: {message}")
    return await _judged(store, partner, message, routed=False)


async def of_message(store: Store, partner: Partner, message_id: str) -> PreviewOut:
    home = store.keyspace.shard_of(partner.id)
    retention_ms = int(store.settings.message_retention * 1000)
    found = await IndexReader(store.redis, retention_ms).entries(home, [message_id])
    if message_id not in found:
        raise NotFound(
            f"no message {message_id[:200]!r} (messages are kept for "
            "NOTIFIER_MESSAGE_RETENTION after they were routed)"
        )
    copies, raw = found[message_id]
    message = msgspec.json.decode(raw, type=Message)
    return await _judged(store, partner, message, routed=partner.id in copies)


def unsaved(store: Store, body: PartnerIn) -> Partner:
    """The partner a body describes, checked as if it were saved (its URL too)."""
    partner = store.unsaved(body)
    try:
        partner.url = rules.check_url(partner.url, allow_http=store.settings.allow_http)
    except ValueError as exc:
        raise Invalid(f"partner.url: {exc}") from None
    return partner


async def _judged(store: Store, partner: Partner, message: Message, routed: bool) -> PreviewOut:
    view = EventView(message)
    reason = None if routed else await _why_not(store, partner, view)
    try:
        body = render(partner, message)
    except TransformError as exc:
        return PreviewOut(
            delivered=False, reason=reason or f"transform: {exc}", body="", headers={}
        )
    headers = request_headers(partner, message, body, store.signing_keys(partner))
    return PreviewOut(delivered=reason is None, reason=reason, body=body.decode(), headers=headers)


async def _why_not(store: Store, partner: Partner, view: EventView) -> str | None:
    """The first reason the router would not route the event to the partner, in the order an
    operator checks them: subscription, owner, filter, schema."""
    message = view.message
    if not partner.subscribes(message.type):
        return f"not subscribed: it takes {', '.join(partner.events)}, not {message.type}"
    if message.owner is not None and partner.owner != message.owner:
        theirs = f"to {partner.owner!r}" if partner.owner else "to no owner"
        return f"owner: the event belongs to {message.owner!r}, the partner {theirs}"
    found = Subscriptions([partner]).targets(message.type, message.owner, view)
    if found.filtered:
        return filters.explain(partner.filter, view.body) or "filter: the event does not match"
    known = catalog.Catalog()
    known.load(await store.redis.hgetall(catalog.KEY))
    broken = known.problem(view)
    if broken:
        return broken
    if not found.partners:
        return "not routed: it was routed before this partner took it"
    return None
