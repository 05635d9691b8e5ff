"""Messages as first-class objects: look one up by its `webhook-id`, list a partner's, send one
again, recover what failed in a time range.

What the message index holds of each message is read by `message_index.py` (one index per
shard on a Cluster, so a look-up asks each). Live states come from where the entry is now:
in `inflight` it is being sent, in `due` it waits for a retry, otherwise it waits its turn.
Listing a partner's messages reads its list (`messages`, a
stream) newest first, a page's look-ups in a few round trips whatever its size.
"""

from __future__ import annotations

from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from notifier import cursors
from notifier.config import Settings
from notifier.errors import Invalid, NotFound
from notifier.message_index import CopyRecord, IndexReader
from notifier.models import (
    Delivery,
    Message,
    MessageView,
    Page,
    PartnerMessage,
    RecoverOut,
    ResendOut,
    decode_partner,
    iso_ms,
    now_ms,
)
from notifier.redis import keys, lua
from notifier.redis.lua import Scripts
from notifier.store import attempts_of
from notifier.types import COPY_STATES

#: Most index entries one list request reads looking for `limit` matches of a status filter:
#: a page may come back short, with a `next` to go on from.
SCAN_MOST = 5000
#: Most messages one recover resends, and how many one script call resends.
RECOVER_MOST = 10_000
RECOVER_BATCH = 200

message_decoder = msgspec.json.Decoder(Message).decode


class Messages:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis: Any = redis  # redis-py types replies as bytes | str; this client: bytes
        self.settings = settings
        self.keyspace = settings.keyspace()
        self.scripts = Scripts(redis)
        self.retention_ms = int(settings.message_retention * 1000)
        self.index = IndexReader(redis, self.retention_ms)

    async def get(self, message_id: str) -> MessageView:
        event: Message | None = None
        copies: dict[str, CopyRecord] = {}
        for home in self.keyspace.homes:
            found = await self.index.entries(home, [message_id])
            if message_id in found:
                mine, raw = found[message_id]
                event = event or message_decoder(raw)
                copies.update(mine)
        if event is None:
            raise NotFound(
                f"no message {message_id[:200]!r} (messages are kept for "
                "NOTIFIER_MESSAGE_RETENTION after they were routed)"
            )
        deliveries = await self._live(list(copies.items()))
        await self._histories(message_id, copies, deliveries)
        return MessageView(
            id=event.id,
            type=event.type,
            timestamp=event.timestamp,
            data=event.data,
            deliveries=sorted(deliveries, key=lambda d: d.partner),
        )

    async def _histories(
        self, message_id: str, copies: dict[str, CopyRecord], deliveries: list[Delivery]
    ) -> None:
        """Each copy's attempts still in its partner's attempt log: the log from when the copy
        was routed on (a batch an entry), in one round trip; only the entries that name the
        message are decoded."""
        needle = b'{"message_id":' + msgspec.json.encode(message_id) + b","
        async with self.redis.pipeline(transaction=False) as pipe:
            for pid, copy in copies.items():
                since = copy.e.partition("-")[0] if copy.e else str(copy.t)
                log = self.keyspace.partner(pid).attempts
                pipe.xrange(log, min=since, count=keys.ATTEMPTS_KEPT)
            logs = await pipe.execute()
        for delivery, log in zip(deliveries, logs, strict=True):
            found = (
                a for _, entry in log if needle in entry.get(b"b", b"") for a in attempts_of(entry)
            )
            delivery.history = sorted(
                (a for a in found if a.message_id == message_id), key=lambda a: a.attempt
            )
            if delivery.history:
                last = delivery.history[-1]
                delivery.attempts = max(delivery.attempts, last.attempt)
                if delivery.state == "delivered":
                    delivery.updated_at = last.at

    async def _live(self, copies: list[tuple[str, CopyRecord]]) -> list[Delivery]:
        """Each copy as it stands now: two ZMSCOREs per partner (in flight? waiting for a
        retry?) in one round trip, then whether the rest are still in their streams in one
        more; a page of 1,000 is a few commands and the XRANGEs of the copies in neither."""
        waiting: dict[str, list[tuple[int, str]]] = {}
        for n, (pid, f) in enumerate(copies):
            if f.s in ("pending", "retrying"):
                waiting.setdefault(pid, []).append((n, f.e or "0-0"))
        async with self.redis.pipeline(transaction=False) as pipe:
            for pid, items in waiting.items():
                partner = self.keyspace.partner(pid)
                pipe.zmscore(partner.inflight, [entry for _, entry in items])
                pipe.zmscore(partner.due, [entry for _, entry in items])
            scores = await pipe.execute(raise_on_error=False)
        live: dict[int, tuple[float | None, float | None, bool]] = {}
        unknown: list[tuple[int, str, str]] = []
        for i, (pid, items) in enumerate(waiting.items()):
            flying, due = scores[2 * i], scores[2 * i + 1]
            for k, (n, entry) in enumerate(items):
                in_flight = flying[k] if isinstance(flying, list) else None
                next_due = due[k] if isinstance(due, list) else None
                live[n] = (in_flight, next_due, True)
                if in_flight is None and next_due is None:
                    unknown.append((n, pid, entry))
        if unknown:
            async with self.redis.pipeline(transaction=False) as pipe:
                for _, pid, entry in unknown:
                    stream = self.keyspace.partner(pid).stream
                    pipe.xrange(stream, min=entry, max=entry, count=1)
                held = await pipe.execute(raise_on_error=False)
            for (n, _, _), entry_found in zip(unknown, held, strict=True):
                live[n] = (None, None, bool(entry_found) and isinstance(entry_found, list))
        deliveries = []
        for n, (pid, f) in enumerate(copies):
            state, next_at = f.s, None
            if n in live:
                in_flight, due, in_stream = live[n]
                if in_flight is not None:
                    state = "in_flight"
                elif due is not None:
                    state, next_at = "retrying", iso_ms(due)
                elif in_stream:
                    state = "pending"
                else:
                    # it left the stream without being dead-lettered: it was delivered (settle
                    # writes nothing for a success, to keep a delivery cheap)
                    state = "delivered"
            deliveries.append(
                Delivery(
                    partner=pid,
                    state=state,
                    # a first-try delivery writes nothing to the index (settle keeps it cheap)
                    attempts=max(f.n, 1) if state == "delivered" else f.n,
                    updated_at=iso_ms(f.t),
                    next_attempt_at=next_at,
                    dead_letter_id=f.x,
                )
            )
        return deliveries

    async def of_partner(
        self,
        partner_id: str,
        *,
        status: str | None = None,
        after: str | None = None,
        limit: int = 100,
        since_ms: int | None = None,
        until_ms: int | None = None,
    ) -> Page[PartnerMessage]:
        """A partner's messages, newest first, optionally only those in `status` or routed
        in [since, until]."""
        await self.partner(partner_id)
        if status is not None and status not in COPY_STATES:
            raise Invalid(f"status: must be one of {', '.join(COPY_STATES)}")
        bounds = newest_first(cursors.read(after, (str,)), since_ms, until_ms)
        if bounds is None:
            return Page(data=[], next=None)
        top, bottom = bounds
        found: list[PartnerMessage] = []
        scanned = 0
        last: str | None = None
        listed = self.keyspace.partner(partner_id).messages
        while len(found) < limit and scanned < SCAN_MOST:
            try:
                # a page at once (at least 200, more read past rows a status filter skips)
                rows = await self.redis.xrevrange(
                    listed, max=top, min=bottom, count=min(max(limit, 200), 1000)
                )
            except ResponseError:
                raise Invalid(
                    "after: not a cursor this API gave (use the `next` of a page)"
                ) from None
            if not rows:
                last = None
                break
            for entry_id, item in await self._summaries(partner_id, rows):
                scanned += 1
                last = entry_id
                if item is not None and (status is None or item.state == status):
                    found.append(item)
                    if len(found) == limit:
                        break
            top = f"({last}"
        more = last is not None and (len(found) == limit or scanned >= SCAN_MOST)
        return Page(data=found, next=cursors.make(last) if more and last else None)

    async def _summaries(
        self, partner_id: str, rows: list[tuple[bytes, dict[bytes, bytes]]]
    ) -> list[tuple[str, PartnerMessage | None]]:
        """A page of a partner's list as messages (None: past its retention), read with a
        round trip for where they are (more for producers' ids), one for the index and one
        for the live states."""
        home = self.keyspace.shard_of(partner_id)
        ids = [fields.get(b"m", b"").decode() for _, fields in rows]
        found = await self.index.entries(home, ids)
        known = []
        for n, message_id in enumerate(ids):
            entry = found.get(message_id)
            copy = entry[0].get(partner_id) if entry else None
            if entry is not None and copy is not None:
                known.append((n, message_decoder(entry[1]), copy))
        deliveries = await self._live([(partner_id, copy) for _, _, copy in known])
        items: dict[int, PartnerMessage] = {
            n: PartnerMessage(
                id=message.id,
                type=message.type,
                timestamp=message.timestamp,
                routed_at=iso_ms(int(rows[n][0].decode().partition("-")[0])),
                state=delivery.state,
                attempts=delivery.attempts,
                next_attempt_at=delivery.next_attempt_at,
                dead_letter_id=delivery.dead_letter_id,
            )
            for (n, message, _), delivery in zip(known, deliveries, strict=True)
        }
        return [(entry_id.decode(), items.get(n)) for n, (entry_id, _) in enumerate(rows)]

    async def resend(self, partner_id: str, message_id: str) -> ResendOut:
        """Send it again: same webhook-id, a fresh retry schedule, whatever its state."""
        await self.partner(partner_id)
        [entry_id] = await self._resend(partner_id, [message_id])
        if entry_id is None:
            raise NotFound(
                f"no message {message_id[:200]!r} for partner {partner_id!r} (messages are "
                "kept for NOTIFIER_MESSAGE_RETENTION after they were routed)"
            )
        return ResendOut(id=message_id, partner=partner_id, entry_id=entry_id)

    async def _resend(self, partner_id: str, message_ids: list[str]) -> list[str | None]:
        """Resend messages of one partner (at most RECOVER_BATCH) in one script call: their
        new entry ids (None: not known for this partner)."""
        shard = self.keyspace.shard_of(partner_id)
        resent = await self.scripts.run(
            lua.resend(
                shard=shard,
                partner_id=partner_id,
                message_ids=message_ids,
                now_ms=now_ms(),
                retention_ms=self.retention_ms,
            )
        )
        if resent.woke:
            await self.scripts.run(lua.rouse(shards=[shard.number]))
        return resent.entries

    async def recover(
        self, partner_id: str, since_ms: int, until_ms: int | None = None
    ) -> RecoverOut:
        """Resend every message routed to the partner in [since, until] that failed: waiting
        for a retry, or dead-lettered; read a page of 1,000 at a time, resent RECOVER_BATCH a
        script call (a few milliseconds of Redis each), RECOVER_MOST at most."""
        if until_ms is not None and until_ms < since_ms:
            raise Invalid("until: must not be before since")
        resent: list[str] = []
        after: str | None = None
        while len(resent) < RECOVER_MOST:
            page = await self.of_partner(
                partner_id, after=after, limit=1000, since_ms=since_ms, until_ms=until_ms
            )
            failed = [item.id for item in page.data if item.state in ("retrying", "dead")]
            failed = failed[: RECOVER_MOST - len(resent)]
            for start in range(0, len(failed), RECOVER_BATCH):
                await self._resend(partner_id, failed[start : start + RECOVER_BATCH])
            resent += failed
            if page.next is None:
                break
            after = page.next
        return RecoverOut(resent=len(resent), ids=resent, complete=len(resent) < RECOVER_MOST)

    async def partner(self, partner_id: str) -> None:
        """Raise NotFound unless the partner exists (and its record reads)."""
        home = self.keyspace.shard_of(partner_id)
        record = await self.redis.hget(home.partners, partner_id)
        if record is None:
            raise NotFound(f"no partner {partner_id[:200]!r}")
        decode_partner(record)


def newest_first(
    cursor: list[Any] | None, since_ms: int | None, until_ms: int | None
) -> tuple[str, str] | None:
    """The XREVRANGE bounds of a page of a stream, newest first: from just before the cursor's
    entry, or the whole of `until`'s ms (a bare ms as the top is up to its last entry), down to
    `since`. Stream ids start at 0-0: a time before 1970 is the start, and a range that ends
    before it is empty (None) rather than an id Redis refuses."""
    if until_ms is not None and until_ms < 0:
        return None
    top = f"({cursor[0]}" if cursor else ("+" if until_ms is None else str(until_ms))
    bottom = "-" if since_ms is None or since_ms <= 0 else str(since_ms)
    return top, bottom
