"""Partners, attempts and dead letters in Redis: what the admin API and the CLI both call.

Partners are one hash of msgspec JSON. Every change appends the partner's id to
`partners:changes`, which routers follow to update their index of subscriptions one partner at a
time, and delivery reads a partner's record at every lease, so a change takes effect for the
next delivery without a restart.
"""

from __future__ import annotations

import secrets as pysecrets
import time
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from notifier import events, rules, signing
from notifier.config import Settings
from notifier.crypto import SecretBox
from notifier.errors import Invalid, NotFound
from notifier.models import (
    Attempt,
    DeadLetter,
    Message,
    Partner,
    PartnerIn,
    PartnerPatch,
    Secret,
    decode_partner,
    utc_now,
)
from notifier.redis import keys, lua
from notifier.redis.lua import Scripts

_attempt_decoder = msgspec.json.Decoder(Attempt)
_message_decoder = msgspec.json.Decoder(Message)
_attempts_decoder = msgspec.json.Decoder(list[Attempt])
_encode = msgspec.json.Encoder().encode


def _now_ms() -> int:
    return int(time.time() * 1000)


class Store:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        # Any: redis-py types every reply as bytes | str, we always talk bytes
        self.redis: Any = redis
        self.settings = settings
        self.box = SecretBox(settings.secret_key)
        self.scripts = Scripts(redis)

    # partners

    async def create(self, body: PartnerIn) -> tuple[Partner, str]:
        """Register a partner; returns it and its plain secret (shown this once)."""
        secret = _checked_secret(body.secret)
        partner = Partner(
            id="ptn_" + pysecrets.token_hex(8),
            name=body.name,
            url=body.url,
            events=body.events,
            rate_limit=body.rate_limit,
            max_in_flight=body.max_in_flight,
            headers=body.headers,
            transform=body.transform,
            enabled=body.enabled,
            ordered=body.ordered,
            created_at=utc_now(),
            secrets=[Secret(self.box.seal(secret))],
        )
        self._validate(partner)
        await self._save(partner)
        return partner, secret

    async def get(self, partner_id: str) -> Partner:
        raw = await self.redis.hget(keys.PARTNERS, partner_id)
        if raw is None:
            raise NotFound(f"no partner {partner_id!r}")
        return decode_partner(raw)

    async def partners(self) -> list[Partner]:
        raw = await self.redis.hgetall(keys.PARTNERS)
        return sorted((decode_partner(v) for v in raw.values()), key=lambda p: (p.created_at, p.id))

    async def update(self, partner_id: str, patch: PartnerPatch) -> Partner:
        partner = await self.get(partner_id)
        changes = patch.changes()
        was_enabled = partner.enabled
        updated = msgspec.structs.replace(partner, **changes)
        if updated.enabled and not was_enabled:
            updated.disabled_reason = None
        self._validate(updated)
        await self._save(updated)
        if updated.enabled and not was_enabled:
            await self.redis.delete(keys.failing(partner_id), keys.breaker(partner_id))
        return updated

    async def remove(self, partner_id: str) -> None:
        await self.get(partner_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(keys.PARTNERS, partner_id)
            pipe.zrem(keys.READY, partner_id)
            pipe.zrem(keys.LEASES, partner_id)
            pipe.srem(keys.DISABLED, partner_id)
            pipe.delete(*keys.all_of(partner_id))
            _changed(pipe, partner_id)
            await pipe.execute()

    async def rotate_secret(self, partner_id: str, secret: str | None = None) -> str:
        """A new secret signs from now on; the previous ones keep signing for the overlap."""
        secret = _checked_secret(secret)
        partner = await self.get(partner_id)
        now = _now_ms()
        overlap_end = now + int(self.settings.secret_overlap * 1000)
        kept = [
            s if s.expires_ms is not None else Secret(s.value, overlap_end)
            for s in partner.secrets
            if s.expires_ms is None or s.expires_ms > now
        ]
        partner.secrets = [Secret(self.box.seal(secret)), *kept]
        await self._save(partner)
        return secret

    async def disable(self, partner_id: str, reason: str) -> None:
        try:
            partner = await self.get(partner_id)
        except NotFound:
            return
        partner.enabled = False
        partner.disabled_reason = reason
        await self._save(partner)

    async def _save(self, partner: Partner) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.PARTNERS, partner.id, _encode(partner))
            _changed(pipe, partner.id)
            if partner.enabled:
                pipe.srem(keys.DISABLED, partner.id)
                # it may have messages waiting (new, or kept while it was disabled)
                await self._wake(pipe, partner.id)
            else:
                pipe.sadd(keys.DISABLED, partner.id)
            await pipe.execute()

    async def _wake(self, pipe: Any, partner_id: str) -> None:
        await self.scripts.queue(pipe, lua.wake(now_ms=_now_ms(), partner_ids=[partner_id]))

    def _validate(self, partner: Partner) -> None:
        try:
            partner.url = rules.check_url(partner.url, allow_http=self.settings.allow_http)
        except ValueError as exc:
            raise Invalid(f"url: {exc}") from None

    # attempts and dead letters

    async def attempts(self, partner_id: str, limit: int = 100) -> list[Attempt]:
        await self.get(partner_id)
        rows = await self.redis.xrevrange(keys.attempts(partner_id), count=limit)
        return [_attempt_decoder.decode(fields[b"a"]) for _, fields in rows]

    async def dead_letters(
        self,
        partner: str | None = None,
        limit: int = 100,
    ) -> list[DeadLetter]:
        if partner is not None:
            await self.get(partner)  # an unknown partner is an error, not an empty list
        found: list[DeadLetter] = []
        last = "+"
        while len(found) < limit:
            rows = await self.redis.xrevrange(keys.DEAD, max=last, count=500)
            if not rows:
                break
            for entry_id, fields in rows:
                letter = _dead_letter(entry_id.decode(), fields)
                if partner is None or letter.partner == partner:
                    found.append(letter)
            last = "(" + rows[-1][0].decode()
        return found[:limit]

    async def replay(self, partner: str | None = None, ids: list[str] | None = None) -> int:
        """Put dead-lettered messages back in their partner's stream, keeping their webhook-id.

        Malformed events are not replayable (they have no partner) and stay where they are.
        """
        if ids:
            rows = await self._entries(list(dict.fromkeys(ids)))
        else:
            rows = await self.redis.xrange(keys.DEAD)
        replayed = 0
        known = {pid.decode() for pid in await self.redis.hkeys(keys.PARTNERS)}
        async with self.redis.pipeline(transaction=True) as pipe:
            for entry_id, fields in rows:
                target = fields.get(b"partner", b"").decode()
                if not target or b"message" not in fields:
                    continue
                if partner is not None and target != partner:
                    continue
                if target not in known:
                    continue
                pipe.xadd(keys.stream(target), {"m": fields[b"message"]})
                await self._wake(pipe, target)
                pipe.xdel(keys.DEAD, entry_id)
                replayed += 1
            await pipe.execute()
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

    # producers

    async def publish(self, event_type: str, data: bytes, event_id: str | None = None) -> str:
        """XADD an event, refused first (Invalid) with the router's own reason if the router
        would dead-letter it."""
        fields = {b"type": event_type.encode(errors="surrogateescape"), b"data": data}
        if event_id is not None:
            fields[b"id"] = event_id.encode(errors="surrogateescape")
        problem = events.problem(fields, self.settings.max_event_bytes)
        if problem:
            raise Invalid(problem)
        entry_id: bytes = await self.redis.xadd(self.settings.ingress_stream, fields)
        return entry_id.decode()


def _changed(pipe: Any, partner_id: str) -> None:
    pipe.xadd(
        keys.PARTNER_CHANGES, {"id": partner_id}, maxlen=keys.PARTNER_CHANGES_KEPT, approximate=True
    )


def _checked_secret(secret: str | None) -> str:
    """The partner's own secret once checked, or a new one."""
    if secret is None:
        return signing.generate_secret()
    if not signing.is_valid_secret(secret):
        raise Invalid("secret: must be whsec_ followed by base64 of at least 24 bytes")
    return secret


def _dead_letter(entry_id: str, fields: dict[bytes, bytes]) -> DeadLetter:
    text = {k.decode(): v for k, v in fields.items()}
    message = text.get("message")
    attempts = text.get("attempts")
    entry = text.get("entry")
    return DeadLetter(
        id=entry_id,
        reason=text.get("reason", b"").decode(errors="replace"),
        partner=text["partner"].decode() if "partner" in text else None,
        message=_message_decoder.decode(message) if message else None,
        attempts=_attempts_decoder.decode(attempts) if attempts else [],
        entry=msgspec.json.decode(entry) if entry else None,
        at=text.get("at", b"").decode(),
    )
