"""The Lua scripts of `lua/`, each behind exactly one typed function.

A script's KEYS and ARGV are positional, so their order must agree between the `.lua` file and
its caller. Here each script has one function that takes named parameters and builds the call
(`Call`: the script's name, its keys and arguments, and how to read its reply into a small
typed value), so that order lives in one place, beside the script's own header comment. How a
call travels is the caller's choice: `Scripts.run` sends it alone, `Scripts.send` auto-pipelines
it with the other calls of the same moment (`autopipeline.py`), `Scripts.queue` adds it to an
explicit pipeline.

Scripts share code through `--@include <name>`: the loader pastes `lua/<name>.lua` in its place,
so the rule for waking a partner is written once (`lua/wake_partners.lua`).

The wheel ships the scripts as `notifier/lua/`; a source checkout reads the top-level `lua/`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Generic, TypeVar

import msgspec
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript

from notifier.models import Message, Taken
from notifier.redis import keys
from notifier.redis.autopipeline import AutoPipeline

_HERE = Path(__file__).resolve().parent
# the wheel ships the scripts as notifier/lua/; a source checkout has them at the top
_CANDIDATES = (_HERE.parent / "lua", _HERE.parent.parent / "lua")
_INCLUDE = re.compile(r"^--@include (\w+)$", re.MULTILINE)
NAMES = (
    "hold",
    "resend",
    "route",
    "route_batch",
    "lease",
    "unlease",
    "take",
    "release",
    "settle",
    "wake",
    "prune_consumers",
)

R = TypeVar("R")
_message_decoder = msgspec.json.Decoder(Message)


@cache
def source(name: str) -> str:
    for folder in _CANDIDATES:
        path = folder / f"{name}.lua"
        if path.is_file():
            return _INCLUDE.sub(lambda m: source(m.group(1)), path.read_text())
    raise FileNotFoundError(f"lua script {name}.lua not found in {_CANDIDATES}")


@dataclass(frozen=True, slots=True)
class Call(Generic[R]):
    """One script call, ready to send: built by the functions below, never by hand."""

    script: str
    keys: Sequence[str]
    args: Sequence[Any]
    read: Callable[[Any], R]


class Scripts:
    """The scripts registered on one client (EVALSHA, loaded again on NOSCRIPT)."""

    def __init__(self, redis: Redis) -> None:
        self._scripts: dict[str, AsyncScript] = {
            name: redis.register_script(source(name)) for name in NAMES
        }
        self._auto = AutoPipeline(redis)

    async def run(self, call: Call[R]) -> R:
        """Send one call on its own and read its reply."""
        script = self._scripts[call.script]
        return call.read(await script(keys=call.keys, args=call.args))

    def send(self, call: Call[R]) -> asyncio.Future[R]:
        """Queue `call` now, auto-pipelined with the other calls of this moment (order kept);
        the future holds its reply."""
        raw = self._auto.call(self._scripts[call.script], call.keys, call.args)
        read: asyncio.Future[R] = asyncio.get_running_loop().create_future()

        def done(reply: asyncio.Future[Any]) -> None:
            if read.cancelled():
                return
            if reply.cancelled():
                read.cancel()
            elif (exc := reply.exception()) is not None:
                read.set_exception(exc)
            else:
                try:
                    read.set_result(call.read(reply.result()))
                except Exception as bad:  # a reply of an unexpected shape
                    read.set_exception(bad)

        raw.add_done_callback(done)
        return read

    async def queue(self, pipe: Pipeline, call: Call[Any]) -> None:
        """Add `call` to an explicit pipeline; read its reply with `call.read`."""
        await self._scripts[call.script](keys=call.keys, args=call.args, client=pipe)


def _int(reply: Any) -> int:
    return int(reply)


# route.lua ------------------------------------------------------------------------------------


def route(
    *,
    ingress: str,
    group: str,
    entry_id: str,
    now_ms: int,
    message: bytes = b"",
    partners: Sequence[tuple[str, bool]] = (),
    event_id: str = "",
    dedupe_ttl: int = 0,
    dead_reason: str = "",
    entry: str = "",
    chunk: int = 0,
    last: bool = True,
    retention_ms: int = 0,
    keep: bool = False,
) -> Call[int]:
    """Fan one ingress entry out to `partners` ((id, enabled) pairs) and acknowledge it; or,
    with `dead_reason`, move it to the dead letters as `entry`. A large fan-out is sent as
    several calls, `chunk` 0, 1, ... with `last` on the final one. With `retention_ms`, the
    message index keeps it that long. Replies how many partner streams got it (-1: another
    router did it already)."""
    route_keys = [
        ingress,
        keys.READY,
        keys.LEASES,
        keys.DEAD,
        keys.fanout(entry_id),
        keys.WAKE,
        keys.message_index(event_id),
    ]
    for partner_id, _ in partners:
        route_keys += [
            keys.stream(partner_id),
            keys.seen(partner_id, event_id),
            keys.messages(partner_id),
        ]
    wake = "".join("1" if enabled else "0" for _, enabled in partners)
    payload = entry if dead_reason else message
    return Call(
        "route",
        route_keys,
        [
            group,
            entry_id,
            now_ms,
            dedupe_ttl,
            payload,
            wake,
            dead_reason,
            keys.DEAD_KEPT,
            chunk,
            "1" if last else "0",
            keys.FANOUT_TTL,
            retention_ms,
            event_id,
            "1" if keep else "0",
            *(pid for pid, _ in partners),
        ],
        _int,
    )


# route_batch.lua ------------------------------------------------------------------------------


class Routing(msgspec.Struct, frozen=True):
    """One whole entry of a batch: its message, to these (id, enabled) partners."""

    entry_id: str
    message: bytes
    message_id: str
    dedupe_ttl: int
    partners: Sequence[tuple[str, bool]]


def route_batch(
    *,
    ingress: str,
    group: str,
    now_ms: int,
    entries: Sequence[Routing],
    retention_ms: int = 0,
    keep: bool = False,
) -> Call[list[int]]:
    """Route several whole entries in one call, each atomically with its acknowledgement.
    Replies per entry how many partner streams got it (-1: another router did it)."""
    batch_keys = [ingress, keys.READY, keys.LEASES, keys.DEAD, keys.WAKE]
    args: list[Any] = [group, now_ms, keys.DEAD_KEPT, retention_ms, "1" if keep else "0"]
    for entry in entries:
        batch_keys.append(keys.message_index(entry.message_id))
        for partner_id, _ in entry.partners:
            batch_keys += [
                keys.stream(partner_id),
                keys.seen(partner_id, entry.message_id),
                keys.messages(partner_id),
            ]
        args += [
            entry.entry_id,
            entry.dedupe_ttl,
            entry.message,
            "".join("1" if enabled else "0" for _, enabled in entry.partners),
            entry.message_id,
            len(entry.partners),
            *(pid for pid, _ in entry.partners),
        ]
    return Call("route_batch", batch_keys, args, lambda reply: [int(n) for n in reply])


# lease.lua ------------------------------------------------------------------------------------


class Leased(msgspec.Struct, frozen=True):
    next_due_ms: int  # -1: nothing in `ready`
    partners: list[tuple[str, bytes]]  # (id, its stored record)


def _leased(reply: Any) -> Leased:
    found = reply[1]
    return Leased(
        int(reply[0]), [(found[i].decode(), found[i + 1]) for i in range(0, len(found), 2)]
    )


def lease(*, now_ms: int, lease_until: int, count: int) -> Call[Leased]:
    """Lease up to `count` due partners until `lease_until`, earliest due first."""
    return Call(
        "lease", [keys.READY, keys.LEASES, keys.PARTNERS], [now_ms, lease_until, count], _leased
    )


# unlease.lua ----------------------------------------------------------------------------------


def unlease(*, now_ms: int, lease_until: int) -> Call[int]:
    """Give back the partners leased by a `lease` call whose reply was lost (found by its
    `lease_until`); replies how many."""
    return Call("unlease", [keys.READY, keys.LEASES, keys.WAKE], [now_ms, lease_until], _int)


# take.lua -------------------------------------------------------------------------------------


class Took(msgspec.Struct, frozen=True):
    #: 0, or the ms before which the partner may not send (rate limit, ordered head); -1 when
    #: the partner's stream is gone.
    blocked_until: int
    messages: list[Taken]


def take(
    *,
    partner_id: str,
    consumer: str,
    now_ms: int,
    want: int,
    limit: int,
    window_ms: int,
    ordered: bool,
    lease_until: int,
    visible_ms: int,
    token: str,
) -> Call[Took]:
    """Take up to `want` messages that may be sent now, with their rate-limit slots;
    `lease_until` renews the partner's lease (0 keeps the current one)."""

    def read(found: Any) -> Took:
        return Took(
            int(found[0]),
            [
                Taken(
                    found[i].decode(),
                    _message_decoder.decode(found[i + 1]),
                    int(found[i + 2]),
                    f"{token}:{n}",
                )
                for n, i in enumerate(range(1, len(found), 3), 1)
            ],
        )

    return Call(
        "take",
        [
            keys.stream(partner_id),
            keys.due(partner_id),
            keys.inflight(partner_id),
            keys.window(partner_id),
            keys.READY,
            keys.LEASES,
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
            partner_id,
            visible_ms,
            token,
        ],
        read,
    )


# settle.lua -----------------------------------------------------------------------------------


class Retry(msgspec.Struct, frozen=True):
    entry_id: str
    due_ms: int
    record: bytes  # the encoded Attempt


class Dead(msgspec.Struct, frozen=True):
    entry_id: str
    reason: str
    message: bytes  # the encoded Message
    record: bytes
    at: str


class Indexed(msgspec.Struct, frozen=True):
    """One settled message, for the message index."""

    message_id: str
    entry_id: str
    outcome: str  # "d" delivered, "r" retrying, "x" dead
    attempt: int


class Settled(msgspec.Struct, frozen=True):
    failing_since_ms: int  # 0: one of the batch succeeded
    breaker_closed: bool  # a success closed an open breaker


def _settled(reply: Any) -> Settled:
    return Settled(int(reply[0]), bool(int(reply[1])))


def settle(
    *,
    partner_id: str,
    now_ms: int,
    delivered: Sequence[str],
    retries: Sequence[Retry],
    dead: Sequence[Dead],
    sent: Sequence[tuple[str, int]],
    records: Sequence[bytes],
    index: Sequence[Indexed] = (),
    retried: bool = True,
    maybe_failing: bool = True,
) -> Call[Settled]:
    """Record a batch of outcomes; replies the ms since which every attempt has failed (0 when
    one of these succeeded). `sent` moves rate-limit slots to when their requests left;
    `index` brings the message index up to date (empty when it is off). `retried` says some
    message had failed before (its retry time and history are forgotten), `maybe_failing` that
    the partner's failing run or breaker may be recorded (a success clears them); each left
    out saves the commands that would find nothing."""
    args: list[Any] = [
        keys.DELIVERY_GROUP,
        keys.ATTEMPTS_KEPT,
        keys.DEAD_KEPT,
        partner_id,
        now_ms,
        ("o" if delivered else "") + ("r" if retried else "") + ("f" if maybe_failing else ""),
        len(delivered),
        len(retries),
        len(dead),
        len(sent),
        *delivered,
    ]
    for r in retries:
        args += [r.entry_id, r.due_ms, r.record]
    for d in dead:
        args += [d.entry_id, d.reason, d.message, d.record, d.at]
    for slot, sent_ms in sent:
        args += [slot, sent_ms]
    args.append(len(index))
    for item in index:
        args += [item.message_id, item.entry_id, item.outcome, item.attempt]
    args += records
    return Call(
        "settle",
        [
            keys.stream(partner_id),
            keys.due(partner_id),
            keys.inflight(partner_id),
            keys.history(partner_id),
            keys.attempts(partner_id),
            keys.failing(partner_id),
            keys.DEAD,
            keys.window(partner_id),
            keys.breaker(partner_id),
            *(keys.message_index(item.message_id) for item in index),
        ],
        args,
        _settled,
    )


# release.lua ----------------------------------------------------------------------------------


def release(
    *,
    partner_id: str,
    now_ms: int,
    blocked_until: int,
    active: bool,
    held_until: int,
    lost_visible: Sequence[int] = (),
    retention_ms: int = 0,
) -> Call[int]:
    """Give a served partner back, scored by when it next has work. `held_until` is the latest
    lease end this process set (a later one is another holder's); `lost_visible` are the
    `inflight` scores of takes whose replies never came, whose messages become visible at
    once. Replies the next due ms, -1 when it left `ready`, -2 when another process holds
    it."""
    return Call(
        "release",
        [
            keys.READY,
            keys.LEASES,
            keys.stream(partner_id),
            keys.due(partner_id),
            keys.inflight(partner_id),
            keys.WAKE,
            keys.messages(partner_id),
        ],
        [
            partner_id,
            now_ms,
            blocked_until,
            "1" if active else "0",
            held_until,
            retention_ms,
            *lost_visible,
        ],
        _int,
    )


# wake.lua -------------------------------------------------------------------------------------


def wake(*, now_ms: int, partner_ids: Sequence[str]) -> Call[int]:
    """Mark partners that have messages as having work now, unless leased or parked at their
    rate limit."""
    return Call(
        "wake",
        [keys.READY, keys.LEASES, keys.WAKE, *(keys.stream(pid) for pid in partner_ids)],
        [now_ms, *partner_ids],
        _int,
    )


# prune_consumers.lua ---------------------------------------------------------------------------


def prune_consumers(
    *, stream: str, group: str, min_idle_ms: int = 0, consumer: str = ""
) -> Call[int]:
    """Remove consumers holding nothing (only `consumer`, when given) that have been idle
    `min_idle_ms`; replies how many."""
    return Call("prune_consumers", [stream], [group, min_idle_ms, consumer], _int)


# hold.lua -------------------------------------------------------------------------------------


def hold(*, lock: str, me: str, ttl_ms: int) -> Call[bool]:
    """Take `lock` when free or renew it when `me` holds it; replies whether `me` holds it."""
    return Call("hold", [lock], [me, ttl_ms], lambda reply: bool(int(reply)))


# resend.lua -----------------------------------------------------------------------------------


def resend(*, partner_id: str, message_id: str, now_ms: int) -> Call[str | None]:
    """Send a message to a partner again, same webhook-id, fresh schedule; replies the new
    entry id, or None when the index does not know the message for this partner."""
    return Call(
        "resend",
        [
            keys.stream(partner_id),
            keys.due(partner_id),
            keys.inflight(partner_id),
            keys.history(partner_id),
            keys.message_index(message_id),
            keys.DEAD,
            keys.READY,
            keys.LEASES,
            keys.WAKE,
        ],
        [keys.DELIVERY_GROUP, partner_id, now_ms, message_id],
        lambda reply: reply[1].decode() if int(reply[0]) == 1 else None,
    )
