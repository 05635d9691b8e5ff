"""Scenario 8: what messages cost Redis's memory (INFO memory, used_memory).

(a) A backlog: events for 10 partners (evt.i to partner i) routed by the router with no
delivery process running: the growth over the messages. First every partner's attempt log is
filled to its cap (keys.ATTEMPTS_KEPT) by deliveries, so that later growth is the messages'.
(b) The same once a delivery process has delivered them all and stopped: what stays behind
per message once the message index has been trimmed, which should be about nothing (the
attempt logs, capped by count, are left out: their size follows batch sizes).
(d) What the message index (keys.py: `notifier:messages:<tenth>`, `notifier:ids:<n>`,
`notifier:{id}:messages`) holds
per delivered message until NOTIFIER_MESSAGE_RETENTION trims it: measured by removing those
keys, as the trimming would, after (b)'s first reading.
(c) One event of 100 KiB of data routed to 100 partners (no delivery): the growth per
partner's copy, beside a small event already in every stream (so the streams exist).
Peak RSS of the notifier processes is in scenarios 1 and 6.
"""

from __future__ import annotations

import asyncio
import json
import random
import string

from benchmarks import path
from benchmarks.bench import Bench, progress
from benchmarks.figures import (
    MIB,
    Figure,
    Goal,
    Results,
)
from benchmarks.measurement import expected
from benchmarks.meters import (
    used_memory,
)
from benchmarks.sizes import DATA, INGRESS
from notifier.redis import keys
from notifier.redis.keys import Keyspace

KS = Keyspace()

SECTIONS = (8,)
FIGURES = [
    Figure("8a", 8, "8a Redis memory per backlogged message", "bytes"),
    Figure("8b", 8, "8b Redis memory per message once delivered", "bytes", Goal("~", 10)),
    Figure("8c", 8, "8c Redis memory per partner copy of a 100 KiB event", "bytes"),
    Figure("8d", 8, "8d message index per delivered message, until retention", "bytes"),
    Figure("8e", 8, "8e index beyond the event, per message: producer ids", "bytes"),
    Figure("8f", 8, "8f index beyond the event, per message and partner: ids, 3 partners", "bytes"),
]
#: Events of 8e and 8f.
INDEXED = 20_000


async def run(bench: Bench, results: Results) -> None:
    s = bench.sizes
    results.headings[8] = (
        f"Redis memory: {s.memory_events:,} events backlogged for "
        f"{s.memory_partners} partners, each event to one; one "
        f"{s.big_bytes // 1024} KiB event to {s.big_partners} partners"
    )
    await backlog(bench, results)
    await fan_out(bench, results)
    for key, fan in (("8e", 1), ("8f", 3)):
        await index_cost(bench, results, key, fan)


async def backlog(bench: Bench, results: Results) -> None:
    s = bench.sizes
    await bench.fresh()
    partners = await bench.partners(s.memory_partners)
    names = list(partners)
    types = [f"evt.{i}" for i in range(len(names))]
    bench.notifier("router")
    deliver = bench.notifier("deliver")
    warm = (keys.ATTEMPTS_KEPT + 100) * len(names)
    progress(f"8a filling the attempt logs: {warm:,} deliveries")
    await bench.publish(types, warm)
    await bench.wait_delivered(expected(names, warm), "the warm-up deliveries")
    await empty(bench, partners)
    bench.stop(deliver)
    await drop_index(bench)  # the warm-up's, so that (d) measures the backlog's alone
    base = await used_memory(bench.redis)
    base_logs = await attempt_logs(bench, partners)

    progress(f"8a {s.memory_events:,} events backlogged")
    await bench.publish(types, s.memory_events, first=warm)
    backlogged = expected(names, s.memory_events, first=warm)
    await bench.wait_routed({partners[n]: count for n, count in backlogged.items()})
    held = await used_memory(bench.redis) - base
    results.put(
        "8a",
        held / s.memory_events,
        f"{held / MIB:,.1f} MiB for "
        f"{s.memory_events:,} messages, each event's data {len(DATA % (0, 0.0))} bytes",
    )

    progress(f"8b delivering the {s.memory_events:,} messages")
    deliver = bench.notifier("deliver")
    await bench.wait_delivered(
        {n: expected(names, warm)[n] + backlogged[n] for n in names}, "the backlog's deliveries"
    )
    await empty(bench, partners)
    bench.stop(deliver)
    indexed = await used_memory(bench.redis) - base
    await drop_index(bench)
    logs = await attempt_logs(bench, partners)
    left = await used_memory(bench.redis) - base - (logs - base_logs)
    results.put(
        "8b",
        left / s.memory_events,
        f"{left / 1024:,.0f} KiB in all, the delivery process stopped as before the backlog, "
        f"the message index trimmed; the attempt logs (about {keys.ATTEMPTS_KEPT:,} attempts "
        f"a partner, in batches) are left out: {logs / MIB:.1f} MiB, "
        f"{base_logs / MIB:.1f} MiB before",
    )
    results.put(
        "8d",
        (indexed - left) / s.memory_events,
        f"{(indexed - left) / MIB:,.1f} MiB for {s.memory_events:,} messages, kept for "
        "NOTIFIER_MESSAGE_RETENTION (7d by default; 0 keeps none) so that a message can be "
        "looked up, resent and recovered",
    )


async def attempt_logs(bench: Bench, partners: dict[str, str]) -> int:
    """The attempt logs' memory: capped by the attempts they hold, their size follows the
    batches those came in (and what failures say), not the number of messages."""
    total = 0
    for pid in partners.values():
        total += int(await bench.redis.memory_usage(KS.partner(pid).attempts, samples=0) or 0)
    return total


async def drop_index(bench: Bench) -> None:
    """Remove the message index, as NOTIFIER_MESSAGE_RETENTION's trimming would."""
    for pattern in (
        keys.PREFIX + "ids:*",
        keys.PREFIX + "messages:*",
        keys.PREFIX + "{*}:messages",
    ):
        batch: list[bytes] = []
        async for key in bench.redis.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                await bench.redis.unlink(*batch)
                batch.clear()
        if batch:
            await bench.redis.unlink(*batch)
    # Redis shrinks the keyspace's hash tables (a few MiB for 100,000 keys) in its cron, a
    # little each tick: wait until used_memory stops falling, as it would long before the
    # retention trims a real index.
    last = await used_memory(bench.redis)
    for _ in range(40):
        await asyncio.sleep(0.25)
        now = await used_memory(bench.redis)
        if now >= last:
            break
        last = now


async def empty(bench: Bench, partners: dict[str, str]) -> None:
    """Wait until every partner stream is empty: delivered messages are settled (acknowledged
    and deleted) just after they arrive."""

    async def settled() -> bool:
        bench.check_alive()
        async with bench.redis.pipeline(transaction=False) as pipe:
            for pid in partners.values():
                pipe.xlen(KS.partner(pid).stream)
            return not any(await pipe.execute())

    await bench.until(settled, "the delivered messages to be settled")


async def fan_out(bench: Bench, results: Results) -> None:
    s = bench.sizes
    progress(f"8c one {s.big_bytes // 1024} KiB event to {s.big_partners} partners")
    await bench.fresh()
    sink = (await bench.endpoints.make({"sink": "ok"}))["sink"]
    ids = [await bench.register(f"big{i}", sink, ["big.event"]) for i in range(s.big_partners)]
    bench.notifier("router")
    await bench.publish(["big.event"], 1)
    await bench.wait_routed(dict.fromkeys(ids, 1))
    base = await used_memory(bench.redis)
    blob = "".join(random.choices(string.ascii_letters, k=s.big_bytes))
    data = json.dumps({"blob": blob})
    await bench.redis.xadd(INGRESS, {"type": "big.event", "data": data})
    await bench.wait_routed(dict.fromkeys(ids, 2))
    grown = await used_memory(bench.redis) - base
    results.put(
        "8c",
        grown / s.big_partners,
        f"the event's data is {len(data):,} bytes: {grown / len(data):.1f} copies' worth in all",
    )


async def index_cost(bench: Bench, results: Results, key: str, fan: int) -> None:
    """What the message index keeps per message beyond its event, on the path of scenario 0
    (a producer id on every event), each event to `fan` partners: delivered, then measured
    by removing the index as its retention would."""
    events = INDEXED if bench.sizes.memory_events >= 100_000 else 2_000
    progress(f"{key} the index of {events:,} events with producer ids to {fan} partner(s)")
    await bench.fresh()
    names = [f"f{i}" for i in range(fan)]
    urls = await bench.endpoints.make(dict.fromkeys(names, "ok"))
    ids = {n: await bench.register(n, urls[n], ["evt.fan"]) for n in names}
    bench.notifier("router")
    deliver = bench.notifier("deliver")
    await path.publish(bench, ["evt.fan"], range(events), f"{key}-{fan}")
    await bench.wait_delivered(dict.fromkeys(names, events), "the indexed deliveries")
    await empty(bench, ids)
    bench.stop(deliver)
    event = await one_event(bench)
    held = await used_memory(bench.redis)
    await drop_index(bench)
    index = (held - await used_memory(bench.redis)) / events
    beyond = (index - event) / fan
    results.put(
        key,
        beyond,
        f"{index:,.0f} bytes a message in all, its event {event} bytes (kept once); "
        f"{events:,} events to {fan} partner(s); goal of issue 21: <= 120 a copy",
    )


async def one_event(bench: Bench) -> int:
    """The size of one event as the index keeps it (its encoded message)."""
    async for bucket in bench.redis.scan_iter(match=keys.PREFIX + "messages:*", count=100):
        async for _, value in bench.redis.hscan_iter(bucket, count=10):
            return len(value.partition(b"\n")[2])
    return 0
