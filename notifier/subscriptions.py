"""Which partners take which events: an index, kept up to date one partner at a time.

With thousands of partners registered and a few with work, checking every partner against every
event made routing cost O(partners registered) per event. The index maps an event type to its
subscribers, plus those subscribed to `*`, and an (owner, type) pair to that owner's, so
matching costs O(subscribers of that type, of that owner): an event of one of 10,000 owners
costs what it costs with 10. A change to one partner updates only that partner's entries and
compiles its filter once. Disabled partners stay in it: their messages are kept for when they
are enabled again.

`targets` answers the subscribed partners of the event's owner (when it has one; every
subscribed partner otherwise), then runs each one's filter on the event, once, and returns the
partners it filtered out apart, for `notifier_filtered_total`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import msgspec

from notifier import filters, logs
from notifier.models import Message, Partner
from notifier.rules import OWN_TYPES

log = logs.get("subscriptions")

#: Distinct (event type, owner) pairs whose candidate lists are kept ready; producers choose
#: types and owners, so the cache is bounded and simply starts over when full.
CACHED_TYPES = 4096

_decode = msgspec.json.Decoder().decode


class Targets(NamedTuple):
    partners: list[Partner]  # the event goes to these, by id (a stable order)
    filtered: list[str]  # subscribed, of its owner, but their filter does not match


class EventView:
    """An event as filters read it, `{"type", "timestamp", "data"}`, decoded at most once
    however many partners' filters (and the type's schema) look at it."""

    __slots__ = ("_body", "message")

    def __init__(self, message: Message) -> None:
        self.message = message
        self._body: dict[str, Any] | None = None

    @property
    def body(self) -> dict[str, Any]:
        if self._body is None:
            m = self.message
            self._body = {"type": m.type, "timestamp": m.timestamp, "data": _decode(m.data)}
        return self._body


def _nothing(event: dict[str, Any]) -> bool:
    return False


class Subscriptions:
    def __init__(self, partners: Iterable[Partner] = ()) -> None:
        self._partners: dict[str, Partner] = {}
        self._filters: dict[str, filters.Match] = {}
        self._by_type: dict[str, set[str]] = {}
        self._everything: set[str] = set()
        self._owned: dict[tuple[str, str], set[str]] = {}
        self._owned_everything: dict[str, set[str]] = {}
        self._candidates: dict[tuple[str, str | None], list[Partner]] = {}
        for partner in partners:
            self.put(partner)

    def __len__(self) -> int:
        return len(self._partners)

    def ids(self) -> list[str]:
        return list(self._partners)

    def partners(self) -> list[Partner]:
        return list(self._partners.values())

    def put(self, partner: Partner) -> None:
        """Add a partner, or replace what is known of it."""
        self.remove(partner.id)
        self._partners[partner.id] = partner
        if partner.filter is not None:
            self._filters[partner.id] = _compiled(partner)
        for pattern in partner.events:
            if pattern == "*":
                self._everything.add(partner.id)
                if partner.owner is not None:
                    self._owned_everything.setdefault(partner.owner, set()).add(partner.id)
            else:
                self._by_type.setdefault(pattern, set()).add(partner.id)
                if partner.owner is not None:
                    self._owned.setdefault((partner.owner, pattern), set()).add(partner.id)
        self._candidates.clear()

    def remove(self, partner_id: str) -> None:
        old = self._partners.pop(partner_id, None)
        if old is None:
            return
        self._filters.pop(partner_id, None)
        self._everything.discard(partner_id)
        if old.owner is not None:
            _discard(self._owned_everything, old.owner, partner_id)
        for pattern in old.events:
            _discard(self._by_type, pattern, partner_id)
            if old.owner is not None:
                _discard(self._owned, (old.owner, pattern), partner_id)
        self._candidates.clear()

    def candidates(self, event_type: str, owner: str | None = None) -> list[Partner]:
        """The partners subscribed to this type (of this owner, when given), before filters."""
        key = (event_type, owner)
        found = self._candidates.get(key)
        if found is None:
            if owner is None:
                ids = set(self._by_type.get(event_type, ()))
                everything = self._everything
            else:
                ids = set(self._owned.get((owner, event_type), ()))
                everything = self._owned_everything.get(owner, set())
            if not event_type.startswith(OWN_TYPES):
                # `*` is every event of the shop, not notifier's reports about other partners:
                # those go only to whoever names their type
                ids |= everything
            found = [self._partners[pid] for pid in sorted(ids)]
            if len(self._candidates) >= CACHED_TYPES:
                self._candidates.clear()
            self._candidates[key] = found
        return found

    def targets(
        self, event_type: str, owner: str | None = None, event: EventView | None = None
    ) -> Targets:
        """Where an event goes: its candidates whose filter matches it (all of them when no
        event is given to filter on), and apart the ids of those filtered out."""
        found = self.candidates(event_type, owner)
        if event is None or not self._filters:
            return Targets(found, [])
        kept: list[Partner] = []
        filtered: list[str] = []
        for partner in found:
            match = self._filters.get(partner.id)
            if match is None or match(event.body):
                kept.append(partner)
            else:
                filtered.append(partner.id)
        return Targets(kept, filtered)


def _compiled(partner: Partner) -> filters.Match:
    """A partner's filter, compiled; one that no longer compiles (saved by a version with other
    rules) matches nothing, loudly, rather than let through what it was meant to keep out."""
    try:
        return filters.compile_filter(partner.filter)
    except filters.FilterError as exc:
        log.error(
            "partner filter unreadable, routing it nothing", partner=partner.id, error=str(exc)
        )
        return _nothing


def _discard(index: dict[Any, set[str]], key: Any, partner_id: str) -> None:
    members = index.get(key)
    if members is not None:
        members.discard(partner_id)
        if not members:
            del index[key]
