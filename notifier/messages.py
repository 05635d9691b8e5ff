"""Messages as first-class objects: look one up by its `webhook-id`, list a partner's, send one
again, recover what failed in a time range.

The message index (written by `lua/fan_out.lua` and `lua/settle.lua`, kept for
NOTIFIER_MESSAGE_RETENTION) holds each message's event and, per partner it went to, the entry
of its copy in the partner's stream and the last settled state, as fields of a hash that
`keys.message_index` names (shared by the messages of a tenth of a second when notifier gave
the id). Live states come from where the entry is now: in `inflight` it is being sent, in
`due` it waits for a retry, otherwise it waits its turn. Looking up costs a few commands per
partner of the message; listing a partner's messages reads its index
(`notifier:{id}:messages`, a stream) newest first.
"""

from __future__ import annotations

import re
import time
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from notifier import cursors
from notifier.config import Settings
from notifier.errors import Invalid, NotFound
from notifier.models import (
    Attempt,
    DeadLetter,
    Delivery,
    Message,
    MessageView,
    Page,
    PartnerMessage,
    decode_partner,
    iso_ms,
)
from notifier.redis import keys, lua
from notifier.redis.lua import Scripts
from notifier.store import attempts_of

STATES = ("pending", "in_flight", "retrying", "delivered", "dead")
#: Most index entries one list request reads looking for `limit` matches of a status filter:
#: a page may come back short, with a `next` to go on from.
SCAN_MOST = 5000
#: Most messages one recover resends.
RECOVER_MOST = 10_000

_message = msgspec.json.Decoder(Message).decode
_attempt = msgspec.json.Decoder(Attempt).decode
_attempts = msgspec.json.Decoder(list[Attempt]).decode
_STREAM_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
_GLOB = re.compile(rb"([*?\[\]\\])")  # what HSCAN MATCH reads as a pattern


class Indexed(msgspec.Struct):
    """A partner's field in a message's index entry (see lua/fan_out.lua, lua/settle.lua)."""

    s: str  # pending | retrying | delivered | dead
    t: int  # ms of the last change
    e: str | None = None  # the entry in the partner stream
    n: int = 0  # attempts made
    x: str | None = None  # the dead letter


_indexed_json = msgspec.json.Decoder(Indexed).decode


def _indexed(value: bytes) -> Indexed:
    """A partner's field: a JSON object, or for a copy still pending just its entry id (which
    starts with the ms it was routed), the cheapest thing for lua/fan_out.lua to write."""
    if value.startswith(b"{"):
        return _indexed_json(value)
    entry = value.decode()
    return Indexed(s="pending", t=int(entry.partition("-")[0]), e=entry)


class Messages:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis: Any = redis  # redis-py types replies as bytes | str; this client: bytes
        self.settings = settings
        self.scripts = Scripts(redis)

    async def get(self, message_id: str) -> MessageView:
        index = keys.message_index(message_id)
        raw = await self.redis.hget(index, message_id)
        if raw is None:
            raise NotFound(
                f"no message {message_id[:200]!r} (messages are kept for "
                "NOTIFIER_MESSAGE_RETENTION after they were routed)"
            )
        event = _message(raw)
        fields = await self._copies(index, message_id)
        deliveries = await self._live(fields)
        async with self.redis.pipeline(transaction=False) as pipe:
            for pid in fields:
                pipe.xrevrange(keys.attempts(pid), count=keys.ATTEMPTS_KEPT)
            logs = await pipe.execute()
        for delivery, log in zip(deliveries, logs, strict=True):
            found = (a for _, entry in log for a in attempts_of(entry))
            delivery.history = sorted(
                (a for a in found if a.message_id == message_id), key=lambda a: a.attempt
            )
            if delivery.history:
                last = delivery.history[-1]
                delivery.attempts = max(delivery.attempts, last.attempt)
                if delivery.state == "delivered":
                    delivery.updated_at = last.at
        return MessageView(
            id=event.id,
            type=event.type,
            timestamp=event.timestamp,
            data=event.data,
            deliveries=sorted(deliveries, key=lambda d: d.partner),
        )

    async def _copies(self, index: str, message_id: str) -> dict[str, Indexed]:
        """The message's copies, by partner, as its index hash records them."""
        prefix = keys.index_field(message_id, "").encode()  # how every copy's field starts
        match = _GLOB.sub(rb"\\\1", prefix) + b"*"
        return {
            field[len(prefix) :].decode(): _indexed(value)
            async for field, value in self.redis.hscan_iter(index, match=match, count=1000)
            if field.startswith(prefix)
        }

    async def _live(self, fields: dict[str, Indexed]) -> list[Delivery]:
        """Each partner's copy as it stands now."""
        waiting = [
            (pid, f.e or "0-0") for pid, f in fields.items() if f.s in ("pending", "retrying")
        ]
        async with self.redis.pipeline(transaction=False) as pipe:
            for pid, entry in waiting:
                pipe.zscore(keys.inflight(pid), entry)
                pipe.zscore(keys.due(pid), entry)
                pipe.xrange(keys.stream(pid), min=entry, max=entry, count=1)
            found = await pipe.execute(raise_on_error=False)
        live = {pid: found[3 * n : 3 * n + 3] for n, (pid, _) in enumerate(waiting)}
        deliveries = []
        for pid, f in fields.items():
            state, next_at = f.s, None
            if pid in live:
                in_flight, due, entry = live[pid]
                if isinstance(in_flight, float):
                    state = "in_flight"
                elif isinstance(due, float):
                    state, next_at = "retrying", iso_ms(due)
                elif entry:
                    state = "pending"
                else:
                    # it left the stream without being dead-lettered: it was delivered (settle
                    # writes nothing for a success, to keep a delivery cheap)
                    state = "delivered"
            deliveries.append(
                Delivery(
                    partner=pid,
                    state=state,
                    attempts=f.n,
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
        await self._partner(partner_id)
        if status is not None and status not in STATES:
            raise Invalid(f"status: must be one of {', '.join(STATES)}")
        bounds = _newest_first(cursors.read(after, (str,)), since_ms, until_ms)
        if bounds is None:
            return Page(data=[], next=None)
        top, bottom = bounds
        found: list[PartnerMessage] = []
        scanned = 0
        last: str | None = None
        index = keys.messages(partner_id)
        while len(found) < limit and scanned < SCAN_MOST:
            try:
                rows = await self.redis.xrevrange(index, max=top, min=bottom, count=200)
            except ResponseError:
                raise Invalid(
                    "after: not a cursor this API gave (use the `next` of a page)"
                ) from None
            if not rows:
                last = None
                break
            for entry_id, fields in rows:
                scanned += 1
                last = entry_id.decode()
                routed = int(last.partition("-")[0])
                item = await self._summary(partner_id, fields.get(b"m", b"").decode(), routed)
                if item is not None and (status is None or item.state == status):
                    found.append(item)
                    if len(found) == limit:
                        break
            top = f"({last}"
        more = last is not None and (len(found) == limit or scanned >= SCAN_MOST)
        return Page(data=found, next=cursors.make(last) if more and last else None)

    async def _summary(
        self, partner_id: str, message_id: str, routed: int
    ) -> PartnerMessage | None:
        event, field = await self.redis.hmget(
            keys.message_index(message_id), [message_id, keys.index_field(message_id, partner_id)]
        )
        if event is None or field is None:
            return None  # past its retention
        message = _message(event)
        [delivery] = await self._live({partner_id: _indexed(field)})
        return PartnerMessage(
            id=message.id,
            type=message.type,
            timestamp=message.timestamp,
            routed_at=iso_ms(routed),
            state=delivery.state,
            attempts=delivery.attempts,
            next_attempt_at=delivery.next_attempt_at,
            dead_letter_id=delivery.dead_letter_id,
        )

    async def resend(self, partner_id: str, message_id: str) -> dict[str, str]:
        """Send it again: same webhook-id, a fresh retry schedule, whatever its state."""
        await self._partner(partner_id)
        entry = await self.scripts.run(
            lua.resend(partner_id=partner_id, message_id=message_id, now_ms=_now_ms())
        )
        if entry is None:
            raise NotFound(
                f"no message {message_id[:200]!r} for partner {partner_id!r} (messages are "
                "kept for NOTIFIER_MESSAGE_RETENTION after they were routed)"
            )
        return {"id": message_id, "partner": partner_id, "entry_id": entry}

    async def recover(
        self, partner_id: str, since_ms: int, until_ms: int | None = None
    ) -> dict[str, Any]:
        """Resend every message routed to the partner in [since, until] that failed: waiting
        for a retry, or dead-lettered."""
        if until_ms is not None and until_ms < since_ms:
            raise Invalid("until: must not be before since")
        resent: list[str] = []
        after: str | None = None
        while len(resent) < RECOVER_MOST:
            page = await self.of_partner(
                partner_id, after=after, limit=500, since_ms=since_ms, until_ms=until_ms
            )
            for item in page.data:
                if item.state in ("retrying", "dead") and len(resent) < RECOVER_MOST:
                    await self.resend(partner_id, item.id)
                    resent.append(item.id)
            if page.next is None:
                break
            after = page.next
        return {"resent": len(resent), "ids": resent, "complete": len(resent) < RECOVER_MOST}

    # dead letters

    async def dead_letters(
        self,
        partner: str | None = None,
        *,
        after: str | None = None,
        limit: int = 100,
        since_ms: int | None = None,
        until_ms: int | None = None,
    ) -> Page[DeadLetter]:
        """Dead letters newest first: of one partner, or all (malformed events included)."""
        if partner is not None:
            await self._partner(partner)  # an unknown partner is an error, not an empty list
        bounds = _newest_first(cursors.read(after, (str,)), since_ms, until_ms)
        if bounds is None:
            return Page(data=[], next=None)
        top, bottom = bounds
        found: list[DeadLetter] = []
        scanned = 0
        last: str | None = None
        while len(found) < limit and scanned < SCAN_MOST:
            try:
                rows = await self.redis.xrevrange(keys.DEAD, max=top, min=bottom, count=500)
            except ResponseError:
                raise Invalid(
                    "after: not a cursor this API gave (use the `next` of a page)"
                ) from None
            if not rows:
                last = None
                break
            for entry_id, fields in rows:
                scanned += 1
                last = entry_id.decode()
                letter = _dead_letter(last, fields)
                if partner is None or letter.partner == partner:
                    found.append(letter)
                    if len(found) == limit:
                        break
            top = f"({last}"
        more = last is not None and (len(found) == limit or scanned >= SCAN_MOST)
        return Page(data=found, next=cursors.make(last) if more and last else None)

    async def replay(
        self, *, everything: bool = False, partner: str | None = None, ids: list[str] | None = None
    ) -> dict[str, Any]:
        """Send dead-lettered messages again, keeping their webhook-id, with a fresh schedule:
        those given by id (a dead-letter entry id, or a message id), those of one partner, or
        all of them, which must be asked for. Malformed events have no partner to go to and
        stay where they are."""
        if ids:
            rows: list[tuple[bytes, dict[bytes, bytes]]] = []
            not_found: list[str] = []
            for given in dict.fromkeys(ids):
                found = await self._entries([given]) if _STREAM_ID.fullmatch(given) else []
                if not found:
                    found = await self._entries(await self._dead_letters_of(given))
                if found:
                    rows += found
                else:
                    not_found.append(given)
            return {"replayed": await self._replay_rows(rows), "not_found": not_found}
        if partner is None and not everything:
            raise Invalid('say what to replay: {"ids": [...]}, {"partner": id} or {"all": true}')
        if partner is not None:
            await self._partner(partner)
        replayed, start = 0, "-"
        while True:
            rows = await self.redis.xrange(keys.DEAD, min=start, count=500)
            if not rows:
                break
            start = "(" + rows[-1][0].decode()
            chosen = [
                (entry_id, fields)
                for entry_id, fields in rows
                if partner is None or fields.get(b"partner", b"").decode() == partner
            ]
            replayed += await self._replay_rows(chosen)
        return {"replayed": replayed, "not_found": []}

    async def _replay_rows(self, rows: list[tuple[bytes, dict[bytes, bytes]]]) -> int:
        known = {pid.decode() for pid in await self.redis.hkeys(keys.PARTNERS)}
        replayed = 0
        for entry_id, fields in rows:
            target = fields.get(b"partner", b"").decode()
            if target not in known or b"message" not in fields:
                continue  # a malformed event (no partner), or a partner since removed
            message = _message(fields[b"message"])
            # through the index when it knows the message (it keeps its state there too)
            resent = await self.scripts.run(
                lua.resend(partner_id=target, message_id=message.id, now_ms=_now_ms())
            )
            async with self.redis.pipeline(transaction=True) as pipe:
                if resent is None:
                    pipe.xadd(keys.stream(target), {"m": fields[b"message"]})
                    await self.scripts.queue(pipe, lua.wake(now_ms=_now_ms(), partner_ids=[target]))
                pipe.xdel(keys.DEAD, entry_id)
                await pipe.execute()
            replayed += 1
        return replayed

    async def _entries(self, ids: list[str]) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """The dead letters with exactly these entry ids, each once.

        XRANGE reads a bare millisecond id like "1700000000000" as the range of every entry in
        that millisecond, and XDEL reads it as one entry ("-0"): taken as given, such an id
        replayed a message and then deleted nothing, so the next replay sent it again.
        """
        found: list[tuple[bytes, dict[bytes, bytes]]] = []
        for entry_id in ids:
            try:
                rows = await self.redis.xrange(keys.DEAD, min=entry_id, max=entry_id, count=1)
            except ResponseError:  # not a stream id: nothing to replay under it
                continue
            if rows and rows[0][0] == entry_id.encode():
                found.append(rows[0])
        return found

    async def _dead_letters_of(self, message_id: str) -> list[str]:
        """The dead-letter entries of a message's copies (for replay by message id)."""
        copies = await self._copies(keys.message_index(message_id), message_id)
        return [f.x for f in copies.values() if f.s == "dead" and f.x]

    async def _partner(self, partner_id: str) -> None:
        record = await self.redis.hget(keys.PARTNERS, partner_id)
        if record is None:
            raise NotFound(f"no partner {partner_id[:200]!r}")
        decode_partner(record)


def _newest_first(
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


def _now_ms() -> int:
    return int(time.time() * 1000)


def _dead_letter(entry_id: str, fields: dict[bytes, bytes]) -> DeadLetter:
    text = {k.decode(errors="replace"): v for k, v in fields.items()}
    message = text.get("message")
    attempts = text.get("attempts")
    entry = text.get("entry")
    return DeadLetter(
        id=entry_id,
        reason=text.get("reason", b"").decode(errors="replace"),
        partner=text["partner"].decode() if "partner" in text else None,
        message=_message(message) if message else None,
        attempts=_attempts(attempts) if attempts else [],
        entry=msgspec.json.decode(entry) if entry else None,
        at=text.get("at", b"").decode(),
    )
