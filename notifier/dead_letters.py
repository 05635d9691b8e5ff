"""Dead letters: what could not be delivered, listed newest first and replayed.

On one Redis every dead letter is in `notifier:dead`. On a Cluster a message dead-lettered by
delivery lands in its shard's stream (written in one step with its partner's keys, so in their
slot), and a malformed ingress entry in `notifier:dead`: lists merge the streams newest first.
"""

from __future__ import annotations

from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from notifier import cursors
from notifier.config import Settings
from notifier.errors import Invalid
from notifier.events import entry_timestamp
from notifier.messages import Messages, message_decoder, newest_first
from notifier.models import Attempt, DeadLetter, Page, ReplayOut, now_ms
from notifier.redis import lua
from notifier.redis.lua import Scripts
from notifier.rules import STREAM_ID

#: Most dead letters one list request reads looking for `limit` of one partner's.
SCAN_MOST = 5000

Row = tuple[bytes, dict[bytes, bytes]]
_attempts = msgspec.json.Decoder(list[Attempt]).decode


class DeadLetters:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis: Any = redis  # redis-py types replies as bytes | str; this client: bytes
        self.keyspace = settings.keyspace()
        self.scripts = Scripts(redis)
        self.messages = Messages(redis, settings)

    async def page(
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
            await self.messages.partner(partner)  # an unknown partner is an error, not empty
        bounds = newest_first(cursors.read(after, (str,)), since_ms, until_ms)
        if bounds is None:
            return Page(data=[], next=None)
        top, bottom = bounds
        found: list[DeadLetter] = []
        scanned = 0
        last: str | None = None
        while len(found) < limit and scanned < SCAN_MOST:
            rows = await self._newest(top, bottom, 500)
            if not rows:
                last = None
                break
            for _, (entry_id, fields) in rows:
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

    async def _newest(self, top: str, bottom: str, count: int) -> list[tuple[str, Row]]:
        """Up to `count` dead letters of every stream in [bottom, top], newest first, with the
        stream each is in."""
        merged: list[tuple[str, Row]] = []
        for stream in self.keyspace.dead_streams:
            try:
                rows = await self.redis.xrevrange(stream, max=top, min=bottom, count=count)
            except ResponseError:
                raise Invalid(
                    "after: not a cursor this API gave (use the `next` of a page)"
                ) from None
            merged += ((stream, row) for row in rows)
        merged.sort(key=lambda item: _order(item[1][0]), reverse=True)
        return merged[:count]

    async def replay(
        self, *, everything: bool = False, partner: str | None = None, ids: list[str] | None = None
    ) -> ReplayOut:
        """Send dead-lettered messages again, keeping their webhook-id, with a fresh schedule:
        those given by id (a dead-letter entry id, or a message id), those of one partner, or
        all of them, which must be asked for. Malformed events have no partner to go to and
        stay where they are."""
        if ids:
            replayed, not_found = 0, []
            for given in dict.fromkeys(ids):
                found = await self._entries([given]) if STREAM_ID.fullmatch(given) else []
                if not found:
                    found = await self._entries(await self._dead_letters_of(given))
                if found:
                    replayed += await self._replay_rows(found)
                else:
                    not_found.append(given)
            return ReplayOut(replayed=replayed, not_found=not_found)
        if partner is None and not everything:
            raise Invalid('say what to replay: {"ids": [...]}, {"partner": id} or {"all": true}')
        if partner is not None:
            await self.messages.partner(partner)
        replayed = 0
        for stream in self.keyspace.dead_streams:
            start = "-"
            while rows := await self.redis.xrange(stream, min=start, count=500):
                start = "(" + rows[-1][0].decode()
                chosen = [
                    (stream, (entry_id, fields))
                    for entry_id, fields in rows
                    if partner is None or fields.get(b"partner", b"").decode() == partner
                ]
                replayed += await self._replay_rows(chosen)
        return ReplayOut(replayed=replayed, not_found=[])

    async def _replay_rows(self, rows: list[tuple[str, Row]]) -> int:
        known = set()
        for home in self.keyspace.homes:
            known |= {pid.decode() for pid in await self.redis.hkeys(home.partners)}
        replayed = 0
        for _, (entry_id, fields) in rows:
            target = fields.get(b"partner", b"").decode()
            if target not in known or b"message" not in fields:
                continue  # a malformed event (no partner), or a partner since removed
            message = message_decoder(fields[b"message"])
            shard = self.keyspace.shard_of(target)
            # Taken and sent again in one step, so of replays running at once one sends it. A
            # message's dead letters are in its partner's shard (a malformed event's, in
            # `notifier:dead` on a Cluster, have no message and were left out above).
            resent = await self.scripts.run(
                lua.resend(
                    shard=shard,
                    partner_id=target,
                    message_ids=[message.id],
                    now_ms=now_ms(),
                    retention_ms=self.messages.retention_ms,
                    dead_letter=entry_id.decode(),
                )
            )
            if resent.taken or resent.entries[0] is None:
                continue
            if resent.woke:
                await self.scripts.run(lua.rouse(shards=[shard.number]))
            replayed += 1
        return replayed

    async def _entries(self, ids: list[str]) -> list[tuple[str, Row]]:
        """The dead letters with exactly these entry ids, each once, with their streams.

        XRANGE reads a bare millisecond id like "1700000000000" as the range of every entry in
        that millisecond, and XDEL reads it as one entry ("-0"): taken as given, such an id
        replayed a message and then deleted nothing, so the next replay sent it again.
        """
        found: list[tuple[str, Row]] = []
        for entry_id in ids:
            for stream in self.keyspace.dead_streams:
                try:
                    rows = await self.redis.xrange(stream, min=entry_id, max=entry_id, count=1)
                except ResponseError:  # not a stream id: nothing to replay under it
                    continue
                if rows and rows[0][0] == entry_id.encode():
                    found.append((stream, rows[0]))
                    break
        return found

    async def _dead_letters_of(self, message_id: str) -> list[str]:
        """The dead-letter entries of a message's copies (for replay by message id)."""
        letters = []
        for home in self.keyspace.homes:
            copies = await self.messages.index.copies(home, message_id)
            letters += [f.x for f in copies.values() if f.s == "dead" and f.x]
        return letters


def _order(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)


def _dead_letter(entry_id: str, fields: dict[bytes, bytes]) -> DeadLetter:
    text = {k.decode(errors="replace"): v for k, v in fields.items()}
    message = text.get("message")
    attempts = text.get("attempts")
    entry = text.get("entry")
    return DeadLetter(
        id=entry_id,
        reason=text.get("reason", b"").decode(errors="replace"),
        partner=text["partner"].decode() if "partner" in text else None,
        message=message_decoder(message) if message else None,
        attempts=_attempts(attempts) if attempts else [],
        entry=msgspec.json.decode(entry) if entry else None,
        # a malformed event's letter has no `at` of its own: it was written when its entry id
        # says
        at=text.get("at", b"").decode() or entry_timestamp(entry_id),
    )
