"""Day-to-day operations against real Redis and real endpoints: look a message up, resend and
recover, replay by message id, publish over HTTP, test a partner, and lists as pages."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp
import aiohttp.test_utils
import pytest
import standardwebhooks
from aiohttp import web
from redis.asyncio import Redis

from notifier.admin import app as api
from notifier.config import Settings
from notifier.messages import Messages
from notifier.redis import keys
from tests.helpers import (
    TOKEN,
    Endpoint,
    EndpointFactory,
    cli,
    eventually,
    idle,
    publish,
    register,
    running,
)

AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Admin:
    def __init__(self, client: aiohttp.test_utils.TestClient[web.Request, web.Application]) -> None:
        self.client = client

    async def call(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        resp = await self.client.request(method, path, json=body, headers=AUTH)
        answer = await resp.json()
        assert resp.status == status, (resp.status, answer)
        return answer


pytestmark = pytest.mark.cluster


@pytest.fixture
async def admin(redis: Redis, settings: Settings) -> AsyncIterator[Admin]:
    server = aiohttp.test_utils.TestServer(api.create_app(redis, settings))
    async with aiohttp.test_utils.TestClient(server) as client:
        yield Admin(client)


async def failing(request: web.Request, n: int) -> web.StreamResponse:
    return web.Response(status=500, text="down")


async def test_a_message_shows_dead_for_one_partner_and_delivered_for_another(
    redis: Redis, settings: Settings, endpoint_factory: EndpointFactory, admin: Admin
) -> None:
    good: Endpoint = await endpoint_factory()
    bad: Endpoint = await endpoint_factory(failing)
    good_id, _ = await register(redis, settings, "good", good.url, ["order.created"])
    bad_id, _ = await register(redis, settings, "bad", bad.url, ["order.created"])
    tries = len(settings.retry_schedule) + 1
    async with running(settings):
        await publish(redis, "order.created", {"order_id": 42}, event_id="ord-42-created")
        await good.wait_for(1)
        await bad.wait_for(tries)
        await idle(redis)
    shown = await admin.call("GET", "/v1/messages/ord-42-created")
    assert (shown["id"], shown["type"], shown["data"]) == (
        "ord-42-created",
        "order.created",
        {"order_id": 42},
    )
    by_partner = {d["partner"]: d for d in shown["deliveries"]}
    assert by_partner[good_id]["state"] == "delivered"
    assert by_partner[good_id]["attempts"] == 1
    assert [a["status"] for a in by_partner[good_id]["history"]] == [200]
    dead = by_partner[bad_id]
    assert dead["state"] == "dead" and dead["attempts"] == tries
    assert [a["attempt"] for a in dead["history"]] == list(range(1, tries + 1))
    letters = await admin.call("GET", f"/v1/dead-letters?partner={bad_id}")
    assert [letter["id"] for letter in letters["data"]] == [dead["dead_letter_id"]]
    await admin.call("GET", "/v1/messages/nope", status=404)

    # the partner's list, filtered by state
    listed = await admin.call("GET", f"/v1/partners/{bad_id}/messages?status=dead")
    assert [m["id"] for m in listed["data"]] == ["ord-42-created"]
    assert (await admin.call("GET", f"/v1/partners/{bad_id}/messages?status=delivered"))[
        "data"
    ] == []


async def test_messages_notifier_named_share_an_index_hash_and_keep_apart(
    redis: Redis, settings: Settings, endpoint_factory: EndpointFactory, admin: Admin
) -> None:
    """Messages without a producer's id share a hash of the index per tenth of a second:
    each still shows exactly its own copies and states, one dead-lettered beside one
    delivered; a producer's id with glob characters is found as it is."""
    good: Endpoint = await endpoint_factory()
    bad: Endpoint = await endpoint_factory(failing)
    good_id, _ = await register(redis, settings, "good", good.url, ["order.created", "order.paid"])
    bad_id, _ = await register(redis, settings, "bad", bad.url, ["order.paid"])
    tries = len(settings.retry_schedule) + 1
    async with running(settings):
        async with redis.pipeline(transaction=False) as pipe:
            for n in range(10):
                kind = "order.paid" if n % 2 else "order.created"
                pipe.xadd("notifier:events", {"type": kind, "data": f'{{"n": {n}}}'})
            await pipe.execute()
        await publish(redis, "order.created", {"n": 10}, event_id="ord*[10]?")
        await good.wait_for(11)
        await bad.wait_for(5 * tries)
        await idle(redis)
    ids = {json.loads(r.body)["data"]["n"]: r.headers["webhook-id"] for r in good.received}
    assert ids[10] == "ord*[10]?"
    home = settings.keyspace().shard_of(good_id)
    named = [keys.named_entry(ids[n]) for n in range(10)]
    assert len({home.bucket(entry or "") for entry in named}) < 10  # some share one
    for n in range(11):
        shown = await admin.call("GET", f"/v1/messages/{quote(ids[n], safe='')}")
        assert shown["data"] == {"n": n}
        states = {d["partner"]: d["state"] for d in shown["deliveries"]}
        if n % 2 and n < 10:
            assert states == {good_id: "delivered", bad_id: "dead"}
        else:
            assert states == {good_id: "delivered"}
    dead = await admin.call("GET", f"/v1/partners/{bad_id}/messages?status=dead")
    assert sorted(m["id"] for m in dead["data"]) == sorted(ids[n] for n in range(1, 10, 2))


async def test_resend_delivers_a_delivered_message_again_with_the_same_webhook_id(
    redis: Redis, settings: Settings, endpoint_factory: EndpointFactory, admin: Admin
) -> None:
    endpoint: Endpoint = await endpoint_factory()
    pid, secret = await register(redis, settings, "p", endpoint.url, ["*"])
    async with running(settings):
        await publish(redis, "order.paid", {"order_id": 7}, event_id="ord-7-paid")
        await endpoint.wait_for(1)
        await idle(redis)
        await admin.call("POST", f"/v1/partners/{pid}/messages/ord-7-paid/resend", status=202)
        await endpoint.wait_for(2)
        await idle(redis)
    first, again = endpoint.received
    assert first.headers["webhook-id"] == again.headers["webhook-id"] == "ord-7-paid"
    assert json.loads(again.body) == json.loads(first.body)
    standardwebhooks.Webhook(secret).verify(again.body, again.headers)
    shown = await admin.call("GET", "/v1/messages/ord-7-paid")
    assert shown["deliveries"][0]["state"] == "delivered"
    await admin.call("POST", f"/v1/partners/{pid}/messages/nope/resend", status=404)
    await admin.call("POST", "/v1/partners/ptn_nope/messages/ord-7-paid/resend", status=404)


async def later_ms(than: int) -> int:
    """The wall clock in ms once it is past `than`."""
    await eventually(lambda: time.time() * 1000 >= than + 1, 1, "the clock to move on")
    return int(time.time() * 1000)


async def test_recover_resends_exactly_the_failures_in_its_range(
    redis: Redis, env: dict[str, str], endpoint_factory: EndpointFactory, admin: Admin
) -> None:
    from notifier import config

    env["NOTIFIER_RETRY_SCHEDULE"] = "100ms,60s"  # failures then wait a minute
    settings = config.load(env)
    down = True

    async def outage(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=503 if down else 200)

    endpoint: Endpoint = await endpoint_factory(outage)
    pid, _ = await register(redis, settings, "p", endpoint.url, ["*"])
    async with running(settings):
        await publish(redis, "order.created", {"n": "before"}, event_id="before")
        await endpoint.wait_for(2)  # first try and the quick retry
        # the range is inclusive and routing times are in ms: the clock must move on between
        # "before" and `since`, and between `until` and "after"
        since = await later_ms(int(time.time() * 1000))
        for n in range(3):
            await publish(redis, "order.created", {"n": n}, event_id=f"in-{n}")
        await endpoint.wait_for(2 + 3 * 2)
        until = int(time.time() * 1000)
        await later_ms(until)
        await publish(redis, "order.created", {"n": "after"}, event_id="after")
        await endpoint.wait_for(2 + 3 * 2 + 2)
        down = False
        seen = len(endpoint.received)
        recovered = await admin.call(
            "POST", f"/v1/partners/{pid}/recover", {"since": since, "until": until}, status=202
        )
        assert sorted(recovered["ids"]) == ["in-0", "in-1", "in-2"]
        await endpoint.wait_for(seen + 3)
    after = [r.headers["webhook-id"] for r in endpoint.received[seen:]]
    assert sorted(after) == ["in-0", "in-1", "in-2"]
    # an ISO-8601 range works too, and a bad one is a 400 naming the field
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since / 1000 - 3600))
    assert (await admin.call("POST", f"/v1/partners/{pid}/recover", {"since": iso}, status=202))[
        "ids"
    ] == ["after", "before"]
    bad = await admin.call(
        "POST", f"/v1/partners/{pid}/recover", {"since": "yesterday"}, status=400
    )
    assert bad["error"].startswith("since:")


async def test_replay_by_message_id_reports_what_it_did_not_find(
    redis: Redis, settings: Settings, endpoint_factory: EndpointFactory, admin: Admin
) -> None:
    calls = 0

    async def down_then_up(request: web.Request, n: int) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        return web.Response(status=500 if calls <= len(settings.retry_schedule) + 1 else 200)

    endpoint: Endpoint = await endpoint_factory(down_then_up)
    await register(redis, settings, "p", endpoint.url, ["*"])
    async with running(settings):
        await publish(redis, "order.created", {"n": 1}, event_id="ord-1")
        await eventually(lambda: _dead(redis, settings), 20, "the message to be dead-lettered")
        answer = await admin.call(
            "POST", "/v1/dead-letters/replay", {"ids": ["ord-1", "no-such-thing"]}
        )
        assert answer == {"replayed": 1, "not_found": ["no-such-thing"]}
        await endpoint.wait_for(len(settings.retry_schedule) + 2)
        await idle(redis)
    assert endpoint.received[-1].headers["webhook-id"] == "ord-1"
    assert (await admin.call("GET", "/v1/messages/ord-1"))["deliveries"][0]["state"] == (
        "delivered"
    )
    refused = await admin.call("POST", "/v1/dead-letters/replay", {}, status=400)
    assert '"all": true' in refused["error"]
    assert await admin.call("POST", "/v1/dead-letters/replay", {"all": True}) == {
        "replayed": 0,
        "not_found": [],
    }


async def _dead(redis: Redis, settings: Settings) -> bool:
    return any([await redis.xlen(stream) for stream in settings.keyspace().dead_streams])


async def test_publishing_over_http_checks_as_the_router_does(
    redis: Redis, settings: Settings, endpoint_factory: EndpointFactory, admin: Admin
) -> None:
    endpoint: Endpoint = await endpoint_factory()
    await register(redis, settings, "p", endpoint.url, ["order.created"])
    body = {"type": "order.created", "data": {"order_id": 9}, "id": "ord-9"}
    first = await admin.call("POST", "/v1/events", body, status=202)
    again = await admin.call("POST", "/v1/events", body, status=202)
    assert first["id"] == again["id"] == "ord-9"
    for bad, reason in (
        ({"type": "Order.Created", "data": {}}, "may only contain lower-case letters"),
        ({"type": "order.created", "data": [1, 2]}, "data is not a JSON object"),
        ({"type": "order.created", "data": {}, "id": "x" * 200}, "id must be 1 to 128"),
        ({"type": "notifier.partner.disabled", "data": {}}, "notifier's own"),
        ({"type": "order.created", "data": {}, "traceparent": "bogus"}, "traceparent"),
        ({"data": {}}, "type"),
    ):
        assert reason in (await admin.call("POST", "/v1/events", bad, status=400))["error"]
    async with running(settings):
        await endpoint.wait_for(1)
        await idle(redis)
    assert len(endpoint.received) == 1  # the same id twice: delivered once
    assert endpoint.bodies()[0]["data"] == {"order_id": 9}


async def test_a_test_ping_is_signed_and_answers_the_outcome(
    redis: Redis, settings: Settings, endpoint_factory: EndpointFactory, admin: Admin
) -> None:
    async def answer(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=200, text="thanks " + "x" * 2000)

    good: Endpoint = await endpoint_factory(answer)
    bad: Endpoint = await endpoint_factory(failing)
    good_id, secret = await register(
        redis, settings, "good", good.url, ["*"], headers={"x-api-key": "k1"}
    )
    bad_id, _ = await register(redis, settings, "bad", bad.url, ["*"])
    outcome = await admin.call("POST", f"/v1/partners/{good_id}/test")
    assert outcome["ok"] is True and outcome["status"] == 200 and outcome["error"] is None
    assert outcome["excerpt"].startswith("thanks") and len(outcome["excerpt"]) <= 500
    assert outcome["latency_ms"] >= 0
    [received] = good.received
    payload = standardwebhooks.Webhook(secret).verify(received.body, received.headers)
    assert payload["type"] == "notifier.test" and payload["data"]["partner"] == good_id
    assert received.headers["x-api-key"] == "k1"
    failed = await admin.call("POST", f"/v1/partners/{bad_id}/test")
    assert failed["ok"] is False and failed["status"] == 500 and "down" in failed["error"]
    await admin.call("POST", "/v1/partners/ptn_nope/test", status=404)
    assert (
        await redis.xlen(settings.keyspace().partner(good_id).stream) == 0
    )  # outside the partner's stream


async def test_every_list_is_a_page_with_a_cursor(
    redis: Redis, settings: Settings, endpoint_factory: EndpointFactory, admin: Admin
) -> None:
    endpoint: Endpoint = await endpoint_factory()
    ids = [(await register(redis, settings, f"p{n}", endpoint.url, ["*"]))[0] for n in range(5)]
    seen: list[str] = []
    after = ""
    while True:
        page = await admin.call("GET", f"/v1/partners?limit=2&after={after}")
        seen += [p["id"] for p in page["data"]]
        if page["next"] is None:
            break
        after = page["next"]
    assert sorted(seen) == sorted(ids) and len(seen) == len(set(seen))
    async with running(settings):
        for n in range(5):
            await publish(redis, "order.created", {"n": n}, event_id=f"e{n}")
        await endpoint.wait_for(25)
        await idle(redis)
    for path in (f"/v1/partners/{ids[0]}/attempts", f"/v1/partners/{ids[0]}/messages"):
        first = await admin.call("GET", f"{path}?limit=3")
        rest = await admin.call("GET", f"{path}?limit=3&after={first['next']}")
        assert len(first["data"]) == 3 and len(rest["data"]) == 2 and rest["next"] is None
    messages = await admin.call("GET", f"/v1/partners/{ids[0]}/messages?limit=5")
    assert [m["id"] for m in messages["data"]] == ["e4", "e3", "e2", "e1", "e0"]
    bad = await admin.call("GET", "/v1/partners?after=garbage", status=400)
    assert bad["error"].startswith("after:")

    # times before 1970 (before any stream id): from the start, or nothing
    await redis.xadd("notifier:dead", {"reason": "r", "partner": ids[0]})
    for path in (f"/v1/partners/{ids[0]}/messages", "/v1/dead-letters"):
        since = await admin.call("GET", f"{path}?since=1900-01-01T00:00:00Z")
        assert since["data"] and since["next"] is None
        until = await admin.call("GET", f"{path}?until=1900-01-01T00:00:00Z")
        assert until == {"data": [], "next": None}


async def test_the_cli_looks_up_resends_recovers_and_tests(
    redis: Redis, env: dict[str, str], settings: Settings, endpoint_factory: EndpointFactory
) -> None:
    endpoint: Endpoint = await endpoint_factory()
    pid, _ = await register(redis, settings, "p", endpoint.url, ["*"])
    async with running(settings):
        await publish(redis, "order.created", {"n": 1}, event_id="cli-1")
        await endpoint.wait_for(1)
        await idle(redis)
        shown = json.loads(cli(env, "messages", "show", "cli-1").stdout)
        assert shown["deliveries"][0]["state"] == "delivered"
        resent = cli(env, "messages", "resend", pid, "cli-1")
        assert resent.returncode == 0, resent.stderr
        await endpoint.wait_for(2)
        listed = json.loads(cli(env, "messages", "list", pid).stdout)
        assert [m["id"] for m in listed] == ["cli-1"]
        recovered = json.loads(cli(env, "recover", pid, "--since", "2020-01-01T00:00:00Z").stdout)
        assert recovered["resent"] == 0  # nothing failed
        # in a thread: the endpoint answering it runs on this test's event loop
        tested = await asyncio.to_thread(cli, env, "partners", "test", pid)
        assert tested.returncode == 0, tested.stderr
        assert json.loads(tested.stdout)["status"] == 200
    assert endpoint.received[-1].headers["webhook-id"].startswith("test_")
    missing = cli(env, "messages", "show", "nope")
    assert missing.returncode == 1 and "no message 'nope'" in missing.stderr


async def test_the_message_index_is_bounded_by_its_retention(
    redis: Redis, env: dict[str, str], endpoint_factory: EndpointFactory
) -> None:
    from notifier import config

    env["NOTIFIER_MESSAGE_RETENTION"] = "2s"
    settings = config.load(env)
    endpoint: Endpoint = await endpoint_factory()
    pid, _ = await register(redis, settings, "p", endpoint.url, ["*"])
    async with running(settings):
        await publish(redis, "order.created", {"n": 0}, event_id="old")
        await publish(redis, "order.created", {"n": 1})  # notifier names this one
        await endpoint.wait_for(2)
        [named] = {r.headers["webhook-id"] for r in endpoint.received} - {"old"}
        # every message is in the hash of its ingress entry's tenth of a second; one a
        # producer named is found through the generation of its id
        home = settings.keyspace().shard_of(pid)
        where = await Messages(redis, settings).index.buckets(home, ["old", named])
        assert set(where) == {"old", named}
        assert all(key.startswith(f"{home.home}messages:") for key in where.values())
        for message_id in ("old", named):
            ttl = await redis.pttl(where[message_id])
            assert 0 < ttl <= 2000
        await eventually(lambda: _gone(redis, *where.values()), 5, "the old messages to expire")
        await publish(redis, "order.created", {"n": 2}, event_id="new")
        await endpoint.wait_for(3)
        await idle(redis)
    # the partner's index was trimmed of the old ones when the new one came
    listed: Any = await redis.xrange(settings.keyspace().partner(pid).messages)
    assert [fields[b"m"] for _, fields in listed] == [b"new"]


async def _gone(redis: Redis, *index_keys: str) -> bool:
    return not await redis.exists(*index_keys)


async def test_the_janitor_unlinks_generations_of_producer_ids_past_the_retention(
    redis: Redis, settings: Settings
) -> None:
    """The map of producers' ids is a hash per generation: once past the retention (no look-up
    reads it), the hourly janitor UNLINKs it, freed in the background, before its TTL would
    free it while Redis waits."""
    from notifier.engine.housekeeping import Housekeeping
    from notifier.engine.router import Router

    router = Router(redis, settings)
    span = keys.ids_generation_ms(router.retention_ms)
    oldest = (int(time.time() * 1000) - router.retention_ms) // span
    home = router.keyspace.homes[0]
    for gen in (oldest - 2, oldest - 1, oldest, oldest + 1):
        await redis.hset(home.generation(gen), "ord-1", "1-0")
    await redis.delete(keys.JANITOR)
    await Housekeeping(router).run()
    assert [await redis.exists(home.generation(g)) for g in range(oldest - 2, oldest + 2)] == [
        0,
        0,
        1,
        1,
    ]
