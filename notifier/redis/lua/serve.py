"""The builders of the scripts a delivery process serves partners with: `lease.lua` and
`unlease.lua` (which partners), `take.lua` (which messages, with their rate-limit slots),
`settle.lua` (what the attempts came to) and `release.lua` (the partner given back)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import msgspec

from notifier.models import Message, Taken
from notifier.redis import keys
from notifier.redis.keys import PartnerKeys, Shard
from notifier.redis.lua.scripts import Call, as_int

_message_decoder = msgspec.json.Decoder(Message)


class Leased(msgspec.Struct, frozen=True):
    next_due_ms: int | None  # None: nothing in the shard's `ready`
    partners: list[tuple[str, bytes]]  # (id, its stored record)


def _leased(reply: Any) -> Leased:
    found = reply[1]
    first = int(reply[0])
    return Leased(
        None if first < 0 else first,
        [(found[i].decode(), found[i + 1]) for i in range(0, len(found), 2)],
    )


def lease(*, shard: Shard, now_ms: int, lease_until: int, count: int) -> Call[Leased]:
    """Lease up to `count` due partners of a shard until `lease_until`, earliest due first."""
    return Call(
        "lease",
        [shard.ready, shard.leases, shard.partners],
        [now_ms, lease_until, count],
        _leased,
    )


def unlease(*, shard: Shard, now_ms: int, lease_until: int) -> Call[int]:
    """Give back the partners leased by a `lease` call whose reply was lost (found by its
    `lease_until`); replies how many."""
    return Call("unlease", [shard.ready, shard.leases], [now_ms, lease_until], as_int)


class TakeReply(msgspec.Struct, frozen=True):
    #: 0, or the ms before which the partner may not send (rate limit, pace, pause, ordered
    #: head).
    blocked_until: int
    gone: bool  # the partner's stream is gone (partner removed, or Redis lost its data)
    messages: list[Taken]
    #: The partner's paced concurrency, 0 when it is not paced; None: the take did not say.
    paced: int | None = None
    #: ms of the partner's last success its pace knows (0: none); None: the take did not say.
    last_ok_ms: int | None = None


def take(
    *,
    shard: Shard,
    partner: PartnerKeys,
    consumer: str,
    now_ms: int,
    want: int,
    limit: int,
    window_ms: int,
    ordered: bool,
    lease_until: int,
    visible_ms: int,
    pacing: bool = True,
    most: int = 0,
    open_ms: int = 0,
) -> Call[TakeReply]:
    """Take up to `want` messages that may be sent now, with their rate-limit slots;
    `lease_until` renews the partner's lease (0 keeps the current one). With `pacing`, a
    paced partner's pace holds the take below `want` and `limit` (and `window_ms` is the
    window of a pace when there is no limit). `most` (0: not counted) holds the partner's
    requests open in every process (those taken within `open_ms`, 0: within `visible_ms`)
    to its max_in_flight."""
    return Call(
        "take",
        [
            partner.stream,
            partner.due,
            partner.inflight,
            partner.slices,
            shard.ready,
            shard.leases,
            partner.pace,
            partner.spared,
        ],
        [
            keys.DELIVERY_GROUP,
            consumer,
            now_ms,
            want,
            limit,
            window_ms,
            "1" if ordered else "0",
            lease_until,
            partner.id,
            visible_ms,
            "1" if pacing else "0",
            most,
            open_ms,
        ],
        lambda found: _took(found, now_ms, pacing),
    )


def _took(found: Any, now_ms: int, pacing: bool) -> TakeReply:
    first = int(found[0])
    if len(found) < 3:
        return TakeReply(max(first, 0), first < 0, [])
    return TakeReply(
        max(first, 0),
        False,
        [
            Taken(
                found[i].decode(),
                _message_decoder.decode(found[i + 1]),
                int(found[i + 2]),
                now_ms,
                int(found[i + 3]),
            )
            for i in range(3, len(found), 4)
        ],
        # a take that did not read the pace says nothing of it
        int(found[1]) if pacing else None,
        int(found[2]) if pacing else None,
    )


class Retry(msgspec.Struct, frozen=True):
    entry_id: str
    due_ms: int
    record: bytes  # the encoded Attempt
    spared: bool = False  # pacing absorbed the attempt: it takes no step of the schedule


class Dead(msgspec.Struct, frozen=True):
    entry_id: str
    reason: str
    message: bytes  # the encoded Message
    record: bytes
    at: str


class IndexUpdate(msgspec.Struct, frozen=True):
    """One settled message whose state the message index is told."""

    message_id: str
    entry_id: str
    outcome: Literal["d", "r", "x"]  # delivered, retrying, dead
    attempt: int


class Told(msgspec.Struct, frozen=True):
    """What a settled batch tells its partner's pace (`lua/pace.lua`)."""

    max_in_flight: int
    ceiling: float  # the partner's rate limit in requests/s; 0: none
    throttles: int  # answers of the batch that ask to slow down (429, 502-504, timeouts)
    latest_sent_ms: int  # when the latest of those requests was sent
    pause_until_ms: int  # when a Retry-After of one of them ends; 0: none asked
    accepted: int  # the most successes in one second lately (as far as the caller saw)
    seen_ok_ms: int  # the last success the caller saw; 0: none
    why: str  # the latest throttle, one word: 429, 503, timeout...
    #: without a rate limit, the pace ends only once nothing shrank it for this long
    quiet_ms: int = 0

    def encoded(self) -> str:
        return (
            f"{self.max_in_flight} {self.ceiling:.6g} {self.throttles} {self.latest_sent_ms} "
            f"{self.pause_until_ms} {self.accepted} {self.seen_ok_ms} "
            f"{self.why or '-'} {self.quiet_ms}"
        )


PaceChange = Literal["none", "started", "shrunk", "grown", "ended"]
_CHANGES: tuple[PaceChange, ...] = ("none", "started", "shrunk", "grown", "ended")


class Settled(msgspec.Struct, frozen=True):
    failing_since_ms: int  # 0: one of the batch succeeded
    breaker_closed: bool  # a success closed an open breaker
    pace: PaceChange = "none"  # what became of the partner's pace
    paced_rate: float = 0.0  # requests/s, while paced
    paced: int = 0  # the paced concurrency, 0 when not paced (or not told)
    paused_until_ms: int = 0  # a pause the partner asked for ends then; 0: none


def _settled(reply: Any) -> Settled:
    change = _CHANGES[int(reply[2])]
    paced = 0 if change in ("none", "ended") else int(reply[4])
    return Settled(
        int(reply[0]), bool(int(reply[1])), change, int(reply[3]) / 1000, paced, int(reply[5])
    )


def settle(
    *,
    shard: Shard,
    partner: PartnerKeys,
    now_ms: int,
    delivered: Sequence[str],
    retries: Sequence[Retry],
    dead: Sequence[Dead],
    moved: Sequence[tuple[str, int, int]],
    window_ms: int,
    records: Sequence[bytes],
    index: Sequence[IndexUpdate] = (),
    retention_ms: int = 0,
    retried: bool = True,
    maybe_failing: bool = True,
    endpoint_failed: bool = True,
    told: Told | None = None,
) -> Call[Settled]:
    """Record a batch of outcomes; replies the ms since which every attempt has failed (0 when
    one of these succeeded). `moved`: (entry id, ms taken, ms answered) of requests answered
    in a later slice of the rate limit's window (`window_ms`, 0: no limit) than taken in;
    `index` updates the message index (kept `retention_ms`; empty when off). `retried` (some
    message had failed before), `maybe_failing` (a failing run or breaker may be set) and
    `endpoint_failed` (a failure says something of the endpoint, unlike a transform's) each
    save, when false, commands that would find nothing. `told`: what the pace hears (None:
    nothing, when pacing is off or the partner is neither paced nor throttling)."""
    args: list[Any] = [
        keys.DELIVERY_GROUP,
        keys.ATTEMPTS_KEPT,
        keys.DEAD_KEPT,
        partner.id,
        now_ms,
        _flags(o=bool(delivered), r=retried, f=maybe_failing, e=endpoint_failed),
        *map(len, (delivered, retries, dead, moved)),
        window_ms,
        told.encoded() if told is not None else "",
        *delivered,
        *_settle_items(retries, dead, moved, index),
        *_index_items(shard, retention_ms, index),
        *records,
    ]
    return Call(
        "settle",
        [
            partner.stream,
            partner.due,
            partner.inflight,
            partner.history,
            partner.attempts,
            partner.failing,
            shard.dead,
            partner.slices,
            partner.breaker,
            partner.pace,
            partner.spared,
        ],
        args,
        _settled,
    )


def _flags(**given: bool) -> str:
    """The letters of the flags that hold, as `settle.lua` reads them."""
    return "".join(letter for letter, held in given.items() if held)


def _settle_items(
    retries: Sequence[Retry],
    dead: Sequence[Dead],
    moved: Sequence[tuple[str, int, int]],
    index: Sequence[IndexUpdate],
) -> list[Any]:
    """The ARGV of `settle.lua` after its counts and delivered ids: each list's items flat, in
    the order the script reads them (the index update's count last, as the others' counts
    lead the ARGV)."""
    args: list[Any] = []
    for r in retries:
        args += [r.entry_id, r.due_ms, r.record, "1" if r.spared else "0"]
    for d in dead:
        args += [d.entry_id, d.reason, d.message, d.record, d.at]
    for entry_id, taken_ms, answered_ms in moved:
        args += [entry_id, taken_ms, answered_ms]
    args.append(len(index))
    return args


def _index_items(shard: Shard, retention_ms: int, index: Sequence[IndexUpdate]) -> list[Any]:
    """Where the message index is (the home's prefix, the generation of producer ids, the
    retention) and its updates, flat, as `settle.lua` reads them."""
    args: list[Any] = [shard.home, keys.ids_generation_ms(retention_ms), retention_ms]
    for item in index:
        args += [item.message_id, item.entry_id, item.outcome, item.attempt]
    return args


class Released(msgspec.Struct, frozen=True):
    #: `scheduled` at `next_due_ms`; `idle` (left `ready`: nothing to do, or disabled);
    #: `held` by another process (this one's lease had run out).
    state: Literal["scheduled", "idle", "held"]
    next_due_ms: int
    woke: bool  # due sooner than anything else: a delivery process is to be roused


def _released(reply: Any) -> Released:
    due, woke = int(reply[0]), bool(int(reply[1]))
    if due == -1:
        return Released("idle", 0, woke)
    if due == -2:
        return Released("held", 0, woke)
    return Released("scheduled", due, woke)


def release(
    *,
    shard: Shard,
    partner: PartnerKeys,
    now_ms: int,
    blocked_until: int,
    active: bool,
    held_until: int,
    lost_visible: Sequence[int] = (),
    retention_ms: int = 0,
) -> Call[Released]:
    """Give a served partner back, scored by when it next has work. `held_until` is the latest
    lease end this process set (a later one is another holder's); `lost_visible` are the
    `inflight` scores of takes whose replies never came, whose messages become visible at
    once."""
    return Call(
        "release",
        [
            shard.ready,
            shard.leases,
            partner.stream,
            partner.due,
            partner.inflight,
            partner.messages,
        ],
        [
            partner.id,
            now_ms,
            blocked_until,
            "1" if active else "0",
            held_until,
            retention_ms,
            *lost_visible,
        ],
        _released,
    )
