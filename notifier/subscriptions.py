"""Which partners take which event types: an index, kept up to date one partner at a time.

With thousands of partners registered and a few with work, checking every partner against every
event made routing cost O(partners registered) per event. The index maps an event type to its
subscribers, plus those subscribed to `*`, so matching costs O(subscribers of that type); a
change to one partner updates only that partner's entries. Disabled partners stay in it: their
messages are kept for when they are enabled again.
"""

from __future__ import annotations

from collections.abc import Iterable

from notifier.models import Partner
from notifier.rules import OWN_TYPES

#: Distinct event types whose subscriber lists are kept ready; producers choose types, so the
#: cache is bounded and simply starts over when full.
CACHED_TYPES = 4096


class Subscriptions:
    def __init__(self, partners: Iterable[Partner] = ()) -> None:
        self._partners: dict[str, Partner] = {}
        self._by_type: dict[str, set[str]] = {}
        self._everything: set[str] = set()
        self._targets: dict[str, list[Partner]] = {}
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
        for pattern in partner.events:
            if pattern == "*":
                self._everything.add(partner.id)
            else:
                self._by_type.setdefault(pattern, set()).add(partner.id)
        self._targets.clear()

    def remove(self, partner_id: str) -> None:
        old = self._partners.pop(partner_id, None)
        if old is None:
            return
        self._everything.discard(partner_id)
        for pattern in old.events:
            subscribers = self._by_type.get(pattern)
            if subscribers is not None:
                subscribers.discard(partner_id)
                if not subscribers:
                    del self._by_type[pattern]
        self._targets.clear()

    def targets(self, event_type: str) -> list[Partner]:
        """The partners an event of this type goes to, by id (a stable order)."""
        found = self._targets.get(event_type)
        if found is None:
            ids = set(self._by_type.get(event_type, set()))
            if not event_type.startswith(OWN_TYPES):
                # `*` is every event of the shop, not notifier's reports about other partners:
                # those go only to whoever names their type
                ids |= self._everything
            found = [self._partners[pid] for pid in sorted(ids)]
            if len(self._targets) >= CACHED_TYPES:
                self._targets.clear()
            self._targets[event_type] = found
        return found
