"""Partners, attempts and dead letters in Redis: what the admin API and the CLI both call.

A partner's record is msgspec JSON in its shard's hash of partners. Every change of it (an
operator's PATCH, a rotation, notifier disabling it) reads the record, builds the new one and
saves it only if the record is still the one read (`lua/save_partner.lua`), else starts over,
so two changes made at once both land. The save appends the partner's id to the change log
routers follow to update their index of subscriptions, and delivery reads a partner's record at
every lease, so a change takes effect for the next delivery without a restart.
"""

from __future__ import annotations

import asyncio
import random
import secrets as pysecrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError

if TYPE_CHECKING:
    from notifier.engine.sender import Sender

from notifier import cursors, events, ops, rules, signing
from notifier.catalog import Catalog
from notifier.config import Settings
from notifier.crypto import SecretBox
from notifier.errors import Conflict, Invalid, NotFound
from notifier.models import (
    Attempt,
    Message,
    Page,
    Partner,
    PartnerIn,
    PartnerOut,
    PartnerPatch,
    Secret,
    TestOut,
    decode_partner,
    iso_ms,
    now_ms,
    public,
)
from notifier.redis import lua
from notifier.redis.lua import Scripts

_attempts_decoder = msgspec.json.Decoder(list[Attempt])
_encode = msgspec.json.Encoder().encode


#: Tries at saving a change while other changes of the same partner keep landing first, and
#: the most a try waits before the next (a random part of it, doubling from a millisecond).
SAVE_TRIES = 50
SAVE_BACKOFF = 0.05


class Store:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        # Any: redis-py types every reply as bytes | str, we always talk bytes
        self.redis: Any = redis
        self.settings = settings
        self.keyspace = settings.keyspace()
        self.box = SecretBox(settings.secret_key)
        self.scripts = Scripts(redis)
        self.catalog = Catalog()

    # partners

    async def create(self, body: PartnerIn) -> tuple[Partner, str | None]:
        """Register a partner; returns it and its plain secret (shown this once), or None for
        a v1a partner, whose private key is never shown (its public key is on the record)."""
        partner = self.unsaved(body)
        self._validate(partner)
        if not await self._save(partner, b""):
            raise Invalid("a partner with this id exists already")
        return partner, self._shown_secret(partner)

    def unsaved(self, body: PartnerIn) -> Partner:
        """The partner a body describes, with its new key, not saved (create, and previews of a
        partner not saved yet)."""
        return Partner(
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
            created_at=iso_ms(now_ms()),
            secrets=[self._new_key(body.signature, body.secret)],
            owner=body.owner,
            filter=body.filter,
            signature=body.signature,
        )

    def _new_key(self, signature: str, secret: str | None = None) -> Secret:
        """A new signing key of this scheme, sealed: a `whsec_` secret (the one given, or a new
        one) or a v1a key pair."""
        if signature == "v1a":
            if secret is not None:
                raise Invalid("secret: a v1a partner's key pair is made by notifier; leave it out")
            private, public_key = signing.generate_key_pair()
            return Secret(self.box.seal(private), public=public_key)
        return Secret(self.box.seal(signing.checked_secret(secret)))

    def _shown_secret(self, partner: Partner) -> str | None:
        """The plain newest secret of a v1 key, for the one answer that shows it."""
        newest = partner.secrets[0]
        return None if newest.public else self.box.open(newest.value)

    async def get(self, partner_id: str) -> Partner:
        return decode_partner(await self._record(partner_id))

    async def _record(self, partner_id: str) -> bytes:
        raw = await self.redis.hget(self.keyspace.shard_of(partner_id).partners, partner_id)
        if raw is None:
            raise NotFound(f"no partner {partner_id[:200]!r}")
        return raw  # type: ignore[no-any-return]

    async def partners(self) -> list[Partner]:
        found: list[Partner] = []
        for home in self.keyspace.homes:
            raw = await self.redis.hgetall(home.partners)
            found += (decode_partner(v) for v in raw.values())
        return sorted(found, key=lambda p: (p.created_at, p.id))

    async def partner_page(
        self, after: str | None = None, limit: int = 100, owner: str | None = None
    ) -> Page[PartnerOut]:
        """Partners in the order they were created, as the API shows them (no secrets); with
        `owner`, only that owner's."""
        cursor = cursors.read(after, (str, str))
        problem = None if owner is None else rules.owner_problem(owner)
        if problem:
            raise Invalid(problem)
        listed = await self.partners()
        if owner is not None:
            listed = [p for p in listed if p.owner == owner]
        if cursor is not None:
            listed = [p for p in listed if (p.created_at, p.id) > (cursor[0], cursor[1])]
        page, rest = listed[:limit], listed[limit:]
        last = page[-1] if page and rest else None
        return Page(
            data=[public(p) for p in page],
            next=cursors.make(last.created_at, last.id) if last else None,
        )

    async def update(self, partner_id: str, patch: PartnerPatch) -> Partner:
        return (await self.change(partner_id, patch))[0]

    async def change(self, partner_id: str, patch: PartnerPatch) -> tuple[Partner, str | None]:
        """Change the fields `patch` gives, and only those: a change made meanwhile by someone
        else (another PATCH, notifier disabling the partner) is kept. A change of `signature`
        rotates to a key of the new scheme (the old keys keep signing for the overlap); to v1,
        its new secret is returned, the only time it is shown."""
        changes = patch.changes()

        def change(partner: Partner) -> Partner:
            updated = msgspec.structs.replace(partner, **changes)
            if updated.signature != partner.signature:
                updated.secrets = self._rotated(partner, self._new_key(updated.signature))
            if updated.enabled and not partner.enabled:
                updated.disabled_reason = None
            elif partner.enabled and not updated.enabled:
                updated.disabled_reason = "disabled by an operator"
            self._validate(updated)
            return updated

        before, updated = await self._change(partner_id, change)
        new_secret = self._shown_secret(updated) if updated.signature != before.signature else None
        await self._announce(before, updated)
        return updated, new_secret

    async def _announce(self, before: Partner, after: Partner) -> None:
        """The operational event of a change that enabled or disabled the partner, once it is
        saved."""
        about = {"partner": after.id, "name": after.name}
        if after.enabled and not before.enabled:
            await ops.emit(self.redis, ops.PARTNER_ENABLED, about)
        elif before.enabled and not after.enabled:
            reason = after.disabled_reason
            await ops.emit(self.redis, ops.PARTNER_DISABLED, {**about, "reason": reason})

    async def remove(self, partner_id: str) -> None:
        shard = self.keyspace.shard_of(partner_id)
        if not await self.scripts.run(lua.remove_partner(shard=shard, partner_id=partner_id)):
            raise NotFound(f"no partner {partner_id[:200]!r}")

    async def rotate_secret(self, partner_id: str, secret: str | None = None) -> str:
        """A new secret (v1) or key pair (v1a) signs from now on; the previous ones keep
        signing for the overlap. Returns the new secret, or the new `whpk_` public key."""
        made: list[Secret] = []

        def change(partner: Partner) -> Partner:
            # one new key, however many times the change is made again, of the partner's scheme
            if not made or (made[0].public is not None) != (partner.signature == "v1a"):
                made[:] = [self._new_key(partner.signature, secret)]
            return msgspec.structs.replace(partner, secrets=self._rotated(partner, made[0]))

        await self._change(partner_id, change)
        return made[0].public or self.box.open(made[0].value)

    def _rotated(self, partner: Partner, newest: Secret) -> list[Secret]:
        """`newest` first, then the keys still valid, each ending after the overlap."""
        now = now_ms()
        overlap_end = now + int(self.settings.secret_overlap * 1000)
        kept = [
            s if s.expires_ms is not None else msgspec.structs.replace(s, expires_ms=overlap_end)
            for s in partner.secrets
            if s.signs_at(now)
        ]
        return [newest, *kept]

    async def disable(self, partner_id: str, reason: str) -> None:
        """Disable a partner notifier cannot deliver to (an operator's changes made meanwhile
        are kept); an operational event says so, once."""

        def change(partner: Partner) -> Partner:
            return msgspec.structs.replace(partner, enabled=False, disabled_reason=reason)

        try:
            await self._announce(*await self._change(partner_id, change))
        except NotFound:
            return

    async def _change(
        self, partner_id: str, change: Callable[[Partner], Partner]
    ) -> tuple[Partner, Partner]:
        """Apply `change` to the partner's record as it is in Redis, atomically: the record is
        saved only if it is still the one `change` saw, else read and changed again. Returns
        the record before and after."""
        for tried in range(SAVE_TRIES):
            raw = await self._record(partner_id)
            before = decode_partner(raw)
            updated = change(decode_partner(raw))
            if await self._save(updated, raw, enabling=updated.enabled and not before.enabled):
                return before, updated
            # Changes that keep colliding in step would collide again: a random pause spreads
            # them, so each lands within a few tries however many are made at once.
            await asyncio.sleep(random.uniform(0, min(SAVE_BACKOFF, 0.001 * 2**tried)))
        raise Conflict(f"partner {partner_id!r} changed too often meanwhile; try again")

    async def _save(self, partner: Partner, expected: bytes, enabling: bool = False) -> bool:
        shard = self.keyspace.shard_of(partner.id)
        saved = await self.scripts.run(
            lua.save_partner(
                shard=shard,
                partner_id=partner.id,
                expected=expected,
                record=_encode(partner),
                enabled=partner.enabled,
                enabling=enabling,
                now_ms=now_ms(),
            )
        )
        if saved.woke:
            await self.scripts.run(lua.rouse(shards=[shard.number]))
        return saved.saved

    def _validate(self, partner: Partner) -> None:
        try:
            partner.url = rules.check_url(partner.url, allow_http=self.settings.allow_http)
        except ValueError as exc:
            raise Invalid(f"url: {exc}") from None

    # attempts and dead letters

    async def attempts(self, partner_id: str, limit: int = 100) -> list[Attempt]:
        return (await self.attempt_page(partner_id, limit=limit)).data

    async def attempt_page(
        self, partner_id: str, after: str | None = None, limit: int = 100
    ) -> Page[Attempt]:
        """A partner's attempts, newest first (its log keeps about the last ATTEMPTS_KEPT)."""
        await self.get(partner_id)
        # the entry the last page ended in (inclusive), and how many of its attempts it showed
        cursor = cursors.read(after, (str, int))
        top, skip = ("+", 0) if cursor is None else (cursor[0], cursor[1])
        found: list[Attempt] = []
        while True:
            try:
                rows = await self.redis.xrevrange(
                    self.keyspace.partner(partner_id).attempts, max=top, count=100
                )
            except ResponseError:
                raise Invalid(
                    "after: not a cursor this API gave (use the `next` of a page)"
                ) from None
            for n, (entry_id, fields) in enumerate(rows):
                batch = attempts_of(fields)[::-1]  # newest first
                taken = batch[skip : skip + limit - len(found)]
                found += taken
                shown, skip = skip + len(taken), 0
                if len(found) == limit:
                    more = shown < len(batch) or n < len(rows) - 1 or len(rows) == 100
                    return Page(
                        data=found,
                        next=cursors.make(entry_id.decode(), shown) if more else None,
                    )
            if len(rows) < 100:
                return Page(data=found, next=None)
            top = "(" + rows[-1][0].decode()

    async def keep_ops_webhook(self) -> None:
        """Make `ptn_ops` what NOTIFIER_OPS_WEBHOOK_URL and _SECRET say: a partner subscribed to
        every operational event, or none when the URL is not set."""
        url, secret = self.settings.ops_webhook_url, self.settings.ops_webhook_secret
        try:
            expected = await self._record(ops.WEBHOOK_PARTNER)
        except NotFound:
            expected = b""
        current = decode_partner(expected) if expected else None
        if not url or not secret:
            if current is not None:
                await self.remove(ops.WEBHOOK_PARTNER)
            return
        if current is not None and current.url == url and current.enabled:
            same = [self.box.open(s.value) for s in current.secrets] == [secret]
            if same and list(current.events) == list(ops.TYPES):
                return
        partner = Partner(
            id=ops.WEBHOOK_PARTNER,
            name="ops webhook (NOTIFIER_OPS_WEBHOOK_URL)",
            url=url,
            events=list(ops.TYPES),
            created_at=current.created_at if current else iso_ms(now_ms()),
            secrets=[Secret(self.box.seal(secret))],
        )
        self._validate(partner)
        # another router may be doing the same at this moment: whichever saves first wins,
        # and they save the same
        await self._save(partner, expected, enabling=current is not None and not current.enabled)

    async def test(self, partner_id: str, sender: Sender) -> TestOut:
        """Send the partner a signed `notifier.test` event now, as any delivery is sent; how it
        went, as the API and the CLI show it."""
        partner = await self.get(partner_id)
        now = now_ms()
        signing_keys = self.signing_keys(partner)
        data = {
            "partner": partner.id,
            "name": partner.name,
            "message": "A test from notifier: no action needed.",
        }
        message = Message(
            id="test_" + pysecrets.token_hex(8),
            type="notifier.test",
            timestamp=iso_ms(now),
            data=msgspec.Raw(_encode(data)),
        )
        return TestOut.of(await sender.send(partner, message, signing_keys))

    def signing_keys(self, partner: Partner) -> list[signing.Key]:
        """What signs the partner's requests now: each key still valid, newest first."""
        try:
            return self.box.signing_keys(partner, now_ms())
        except ValueError as exc:
            raise Invalid(f"cannot sign for this partner: {exc}") from None

    # producers

    async def publish(
        self,
        event_type: str,
        data: bytes,
        event_id: str | None = None,
        traceparent: str | None = None,
        owner: str | None = None,
    ) -> str:
        """XADD an event, refused first (Invalid) with the router's own reason if the router
        would dead-letter it."""
        fields = {b"type": event_type.encode(errors="surrogateescape"), b"data": data}
        if event_id is not None:
            fields[b"id"] = event_id.encode(errors="surrogateescape")
        if traceparent is not None:
            fields[b"traceparent"] = traceparent.encode(errors="surrogateescape")
        if owner is not None:
            fields[b"owner"] = owner.encode(errors="surrogateescape")
        problem = events.problem(fields, self.settings.max_event_bytes) or (
            await self.catalog.check(self.redis, event_type, msgspec.json.decode(data))
        )
        if problem:
            raise Invalid(problem)
        entry_id: bytes = await self.redis.xadd(self.settings.ingress_stream, fields)
        return entry_id.decode()


def attempts_of(fields: dict[bytes, bytes]) -> list[Attempt]:
    """The attempts of one entry of a partner's attempt log (a settled batch), oldest first."""
    return _attempts_decoder.decode(fields.get(b"b", b"[]"))
