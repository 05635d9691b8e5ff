"""A primary, a replica and three sentinels; a router, two delivery processes and the api find
the primary through the sentinels. The primary is SIGKILLed while events stream in: delivery
resumes on the promoted replica within a bound, nothing Redis acknowledged more than a second
before the kill is lost, and no process exits or crash-loops."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import cast

import aiohttp
import pytest
from redis.asyncio import Redis

from notifier import config
from notifier.redis.connection import TRANSIENT, SentinelRedis, connect
from notifier.testing_sentinel import SentinelGroup
from notifier.testing_tls import make_certificates
from tests.helpers import (
    TOKEN,
    EndpointFactory,
    Received,
    Spawn,
    cli,
    eventually,
    free_port,
    idle,
    readme_acl_rules,
    register,
    stop_running,
)

pytestmark = pytest.mark.slow

#: From the SIGKILL to the first delivery of an event published after it: the sentinels take
#: 1 s to call the primary down and a second or two to promote the replica; the processes
#: then back off for at most a second before they try again.
RESUME_BOUND = 15.0
#: Published about this often, each with a producer id.
EVERY = 0.02


@pytest.fixture
def group(tmp_path: Path) -> Iterator[SentinelGroup]:
    sentinels = SentinelGroup(tmp_path)
    sentinels.start()
    yield sentinels
    sentinels.stop()


@pytest.fixture
async def client(group: SentinelGroup, env: dict[str, str]) -> AsyncIterator[Redis]:
    """The test's own client, through the sentinels as notifier's are."""
    env["REDIS_URL"] = group.url()
    env["NOTIFIER_CLAIM_IDLE"] = "5s"  # a send whose settle the failover lost goes again soon
    redis = connect(config.load(env), "notifier-test")
    yield redis
    await redis.aclose()


class Producer:
    """XADDs events with producer ids at a steady pace, each until Redis acknowledges it (as
    a producer would across a failover), noting when XADD returned."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.acked: dict[str, float] = {}
        self.stop = asyncio.Event()

    async def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            event_id = f"ord-{n}"
            fields = {"type": "order.created", "data": json.dumps({"n": n}), "id": event_id}
            while True:
                try:
                    await self.redis.xadd("notifier:events", fields)  # type: ignore[arg-type]
                    break
                except TRANSIENT:
                    await asyncio.sleep(0.05)  # Redis is away: the producer tries again
            self.acked[event_id] = time.monotonic()
            n += 1
            await asyncio.sleep(EVERY)  # the pace of publishing, not a wait for anything


class Tally:
    """What the endpoint got of what Redis acknowledged, around the moment of the kill."""

    def __init__(self, acked: dict[str, float], received: list[Received], killed: float) -> None:
        self.arrived = {r.headers["webhook-id"] for r in received}
        self.before = [i for i, t in acked.items() if t <= killed - 1]
        self.last_second = [i for i, t in acked.items() if killed - 1 < t <= killed]
        self.after = [i for i, t in acked.items() if t > killed]
        self.lost = self.missing(self.last_second)
        counts = Counter(r.headers["webhook-id"] for r in received)
        self.duplicates = sum(n - 1 for n in counts.values())

    def missing(self, ids: list[str]) -> list[str]:
        return [i for i in ids if i not in self.arrived]


async def api_answers(api: str) -> None:
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as http,
        http.get(f"http://{api}/v1/partners") as resp,
    ):
        assert resp.status == 200
        assert [p["name"] for p in (await resp.json())["data"]] == ["orders"]


async def test_delivery_follows_a_sentinel_failover(
    group: SentinelGroup,
    client: Redis,
    env: dict[str, str],
    spawn: Spawn,
    endpoint_factory: EndpointFactory,
) -> None:
    endpoint = await endpoint_factory()
    await register(client, config.load(env), "orders", endpoint.url, ["order.created"])
    api = f"127.0.0.1:{free_port()}"
    procs = [spawn("router"), spawn("deliver"), spawn("deliver")]
    procs.append(spawn("api", extra={"NOTIFIER_API_ADDR": api}))
    producer = Producer(client)
    producing = asyncio.create_task(producer.run())
    arrived: dict[str, float] = {}

    def delivered() -> dict[str, float]:
        for received in endpoint.received:
            arrived.setdefault(received.headers["webhook-id"], received.at)
        return arrived

    await endpoint.wait_for(100, 30)  # a steady stream, some of it older than a second
    killed = time.monotonic()
    group.kill_primary()
    promoted = await group.promoted()
    promoted_after = time.monotonic() - killed

    def resumed() -> bool:
        return any(producer.acked.get(i, 0) > killed for i in delivered())

    await eventually(resumed, 30, "a delivery of an event published after the kill")
    resumed_after = min(t for i, t in delivered().items() if producer.acked.get(i, 0) > killed)
    resumed_after -= killed
    await endpoint.wait_for(len(endpoint.received) + 50, 30)  # and it goes on
    producer.stop.set()
    await producing
    await idle(client, 30)

    tally = Tally(producer.acked, endpoint.received, killed)
    print(
        f"\nsentinel failover: {len(producer.acked)} events, promoted {promoted_after:.2f}s and "
        f"delivering again {resumed_after:.2f}s after the SIGKILL; acknowledged in the last "
        f"second before it: {len(tally.last_second)}, of which lost: {len(tally.lost)}; "
        f"duplicates: {tally.duplicates}"
    )
    assert tally.missing(tally.before) == [], "lost beyond the replication window"
    assert tally.missing(tally.after) == [], "lost after the failover"
    assert resumed_after < RESUME_BOUND
    assert group.primary.proc is None and promoted.proc is not None
    await api_answers(api)
    stop_running(procs)  # none exited over the failover, none logged a traceback


async def test_sentinels_and_data_nodes_over_tls_each_with_a_password(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """rediss+sentinel://: TLS to the sentinels and to the data nodes, the data nodes' password
    in the URL's user info and the sentinels' own as sentinel_password."""
    certs = make_certificates(tmp_path / "certs")
    data, sentinel = "data-" + secrets.token_urlsafe(12), "sentinel-" + secrets.token_urlsafe(12)
    tls_group = SentinelGroup(tmp_path / "ha", tls=certs, password=data, sentinel_password=sentinel)
    tls_group.start()
    try:
        # notifier asks the sentinels as the README's user there, with a password of its own
        asker = "asker-" + secrets.token_urlsafe(12)
        for port in tls_group.sentinel_ports:
            async with Redis(port=port, **tls_group.options(sentinel)) as watcher:
                await watcher.execute_command(*readme_acl_rules(asker)["sentinel"])  # type: ignore[no-untyped-call]
        url = tls_group.url(credentials=f":{data}@").replace(
            f"sentinel_password={sentinel}", f"sentinel_username=notifier&sentinel_password={asker}"
        )
        env.update({"REDIS_URL": url, **certs.client_env()})
        client = connect(config.load(env), "notifier-test")
        try:
            assert await client.set("notifier:probe", "over tls")
            packing = cast(SentinelRedis, client)
            assert packing.connection_pool.connection_class.__name__ == (
                "HiredisSentinelManagedSSLConnection"
            )
            assert packing.sentinels is not None
            assert {
                s.connection_pool.connection_class.__name__ for s in packing.sentinels.sentinels
            } == {"HiredisSSLConnection"}
        finally:
            await client.aclose()
        async with Redis(port=tls_group.primary.port, **tls_group.options(data)) as primary:
            assert await primary.get("notifier:probe") == b"over tls"  # it went to the primary
        listed = cli(env, "partners", "list", "--json")
        assert (listed.returncode, listed.stdout.strip()) == (0, "[]"), listed.stderr

        for port in tls_group.sentinel_ports:
            async with Redis(port=port, **tls_group.options(sentinel)) as watcher:
                assert await watcher.acl_log() == [], "commands the README's sentinel rule lacks"

        env["REDIS_URL"] = url.replace(asker, "wrong")
        refused = cli(env, "partners", "list").stderr.strip()
        assert "refused its sentinel credentials" in refused and "\n" not in refused, refused
        assert data not in refused and asker not in refused
    finally:
        tls_group.stop()
