"""What tests share besides fixtures: the test environment, and short ways to register
partners, publish events, run notifier's parts in this process and wait for it to be idle.
The real-world parts (redis-server, recording endpoints) are `notifier.testing`'s."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, cast

import msgspec
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError
from redis.typing import EncodableT, FieldT, KeyT

from notifier import service
from notifier.config import Settings
from notifier.models import Attempt, Message, PartnerIn, public_key
from notifier.redis import keys
from notifier.redis.keys import Keyspace
from notifier.store import Store
from notifier.testing import Endpoint, Received, RedisServer, eventually, free_port

__all__ = [
    "BASE_ENV",
    "KS",
    "TOKEN",
    "Endpoint",
    "EndpointFactory",
    "Received",
    "RedisServer",
    "Spawn",
    "StreamEntry",
    "cli",
    "entries",
    "eventually",
    "free_port",
    "held_by",
    "idle",
    "last_first_arrival",
    "pending_by_consumer",
    "publish",
    "readme_acl_rules",
    "register",
    "running",
    "stop_running",
    "taken_again",
]

# The `endpoint_factory` fixture: `await endpoint_factory(responder=ok)` starts an Endpoint.
EndpointFactory = Callable[..., Awaitable[Endpoint]]
# The `spawn` fixture: `spawn("deliver", extra={...})` starts `notifier deliver`.
Spawn = Callable[..., subprocess.Popen[bytes]]

# A stream entry as the tests' client reads it: redis-py types replies as bytes | str (and
# XRANGE's as Optional), but a client without decode_responses answers bytes.
StreamEntry = tuple[bytes, dict[bytes, bytes]]

#: The key map of the tests' Redis (one Redis, one shard), for tests that look at keys.
KS = Keyspace()

TOKEN = "test-admin-token"
BASE_ENV = {
    "NOTIFIER_ADMIN_TOKEN": TOKEN,
    "NOTIFIER_ALLOWED_NETWORKS": "127.0.0.0/8",
    "NOTIFIER_ALLOW_HTTP": "1",
    "NOTIFIER_RETRY_SCHEDULE": "200ms,400ms,600ms",
    "NOTIFIER_REQUEST_TIMEOUT": "2s",
    # Twice as long as any wait in a test (20 s unless it says, 30 s at most): a lease or
    # message left to expire fails the test instead of passing late. A test about that expiry
    # gives a short one to the process whose expiry it is about, the others keeping this one
    # where they can, and asserts how soon what that process held came back.
    "NOTIFIER_CLAIM_IDLE": "60s",
    "NOTIFIER_LOG_LEVEL": "warning",
    # tests that look at /metrics choose a free port; the others serve none
    "NOTIFIER_METRICS_ADDR": "none",
}


@contextlib.asynccontextmanager
async def running(
    settings: Settings, *, route: bool = True, deliver: bool = True, serve_api: bool = False
) -> AsyncIterator[asyncio.Event]:
    """notifier's parts in this process, stopped (gracefully) on exit."""
    stop = asyncio.Event()
    task = asyncio.create_task(
        service.run(settings, route=route, deliver=deliver, serve_api=serve_api, stop=stop)
    )
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def register(
    redis: Redis, settings: Settings, name: str, url: str, events: list[str], **extra: Any
) -> tuple[str, str]:
    """Register a partner through the store; returns (id, secret), or (id, public key) for a
    v1a partner."""
    body = msgspec.convert({"name": name, "url": url, "events": events, **extra}, PartnerIn)
    partner, secret = await Store(redis, settings).create(body)
    return partner.id, secret or public_key(partner) or ""


async def publish(
    redis: Redis,
    event_type: str,
    data: dict[str, Any] | str,
    event_id: str | None = None,
    stream: str = "notifier:events",
) -> str:
    fields: dict[FieldT, EncodableT] = {
        "type": event_type,
        "data": data if isinstance(data, str) else json.dumps(data),
    }
    if event_id:
        fields["id"] = event_id
    entry = await redis.xadd(stream, fields)
    assert isinstance(entry, bytes)
    return entry.decode()


async def dead_letter(
    redis: Redis, partner_id: str, message_id: str, entry_id: str, **fields: str
) -> None:
    """A dead letter of an `order.created` message `{"n": 1}` to the partner, written as the
    delivery process writes one (with `reason` and any other `fields` given)."""
    message = Message(
        id=message_id,
        type="order.created",
        timestamp="2026-01-01T00:00:00.000Z",
        data=msgspec.Raw(b'{"n": 1}'),
    )
    letter: dict[FieldT, EncodableT] = {"reason": "gave up", "partner": partner_id}
    letter.update(fields)
    letter["message"] = msgspec.json.encode(message)
    await redis.xadd(keys.DEAD, letter, id=entry_id)


async def entries(redis: Redis, key: KeyT) -> list[StreamEntry]:
    """Every entry of the stream at `key` (none when it does not exist), oldest first."""
    return cast(list[StreamEntry], await redis.xrange(key))


async def idle(redis: Redis, timeout: float = 20.0) -> None:
    """Wait until every event is routed and every partner stream is empty."""

    # a Cluster client sends KEYS to one node only unless told to ask every primary: the
    # partner streams of the other primaries went unseen, and a test went on before its
    # deliveries were settled
    every: dict[str, Any] = (
        {"target_nodes": RedisCluster.PRIMARIES} if isinstance(redis, RedisCluster) else {}
    )

    async def settled() -> bool:
        if await redis.xlen("notifier:events"):
            return False
        for key in await redis.keys("notifier:*:stream", **every):
            if await redis.xlen(key):
                return False
        return True

    await eventually(settled, timeout, "notifier to finish its work")


async def pending_by_consumer(redis: Redis, partner_ids: Sequence[str]) -> Counter[str]:
    """How many messages each delivery consumer holds unsettled, over those partners."""
    held: Counter[str] = Counter()
    for pid in partner_ids:
        try:
            summary = await redis.xpending(KS.partner(pid).stream, keys.DELIVERY_GROUP)
        except ResponseError:  # NOGROUP: no delivery process has read this stream yet
            continue
        for consumer in summary["consumers"]:
            held[consumer["name"].decode()] += int(consumer["pending"])
    return held


async def held_by(redis: Redis, partner_ids: Sequence[str], consumer: str) -> set[str]:
    """The ids of the messages one delivery consumer holds unsettled, over those partners."""
    held: set[str] = set()
    for pid in partner_ids:
        stream = KS.partner(pid).stream
        try:
            rows = await redis.xpending_range(
                stream, keys.DELIVERY_GROUP, "-", "+", 10_000, consumername=consumer
            )
        except ResponseError:  # NOGROUP: no delivery process has read this stream yet
            continue
        for row in rows:
            entry_id = row["message_id"]
            found = cast(list[StreamEntry], await redis.xrange(stream, entry_id, entry_id))
            held.update(msgspec.json.decode(fields[b"m"], type=Message).id for _, fields in found)
    return held


async def taken_again(store: Store, partner_ids: Sequence[str]) -> set[str]:
    """The messages some process took again once their visibility timeout ran out: those
    attempted more than once though no attempt of theirs failed (their partners' attempt
    logs, which keep about the last 1,000 each). What a dead process held is taken again;
    anything else is a message a living process stranded."""
    again: set[str] = set()
    for pid in partner_ids:
        attempts: list[Attempt] = []
        after = None
        while True:
            page = await store.attempt_page(pid, after=after, limit=1000)
            attempts.extend(page.data)
            if page.next is None:
                break
            after = page.next
        failed = {attempt.message_id for attempt in attempts if not attempt.ok}
        again.update(a.message_id for a in attempts if a.attempt > 1 and a.message_id not in failed)
    return again


def last_first_arrival(endpoints: Sequence[Endpoint]) -> float:
    """When (monotonic) the last message to reach `endpoints` first arrived: a recovery test
    asserts how soon after the failure that was (copies sent again do not count)."""
    latest = 0.0
    for endpoint in endpoints:
        seen: set[str] = set()
        for received in endpoint.received:
            webhook_id = received.headers["webhook-id"]
            if webhook_id not in seen:
                seen.add(webhook_id)
                latest = max(latest, received.at)
    return latest


def stop_running(procs: list[subprocess.Popen[bytes]]) -> list[str]:
    """SIGTERM each of `procs`, which must all still run; each must stop cleanly (status 0)
    without logging a traceback. What each wrote on stderr, in order."""
    for proc in procs:
        assert proc.poll() is None, f"{proc.args!r} exited with {proc.returncode}"
        proc.send_signal(signal.SIGTERM)
    logged = []
    for proc in procs:
        assert proc.wait(30) == 0
        assert proc.stderr is not None
        logged.append(proc.stderr.read().decode())
        assert "Traceback" not in logged[-1], logged[-1]
    return logged


def readme_acl_rules(password: str) -> dict[str, list[str]]:
    """The README's `ACL SETUSER notifier ...` lines, as words, with `password` put in: the
    rule on the data nodes (`redis`), what a cluster adds to it (`cluster`), and the rule on
    the sentinels (`sentinel`)."""
    readme = Path(__file__).resolve().parents[1] / "README.md"
    lines = [line for line in readme.read_text().splitlines() if line.startswith("ACL SETUSER ")]
    assert all(line.startswith("ACL SETUSER notifier ") for line in lines)
    rules = {}
    for line in lines:
        words = [f">{password}" if word == ">PASSWORD" else word for word in line.split()]
        assert "+@all" not in words and ">PASSWORD" not in words
        if "~notifier:*" in words:
            rules["redis"] = words
        elif "+cluster|slots" in words:
            rules["cluster"] = words
        else:
            assert "+sentinel|masters" in words, line
            rules["sentinel"] = words
    assert set(rules) == {"redis", "cluster", "sentinel"} and len(lines) == 3
    return rules


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`notifier <args>` as a user runs it, with `env` over this process's environment."""
    return subprocess.run(
        [sys.executable, "-m", "notifier", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )
