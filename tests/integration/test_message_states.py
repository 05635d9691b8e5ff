"""A message's copy as the API shows it while it waits (`pending`), is being sent (`in_flight`)
and waits for a retry (`retrying`, with `next_attempt_at`), each found by `?status=`; and a
resend of a pending or retrying copy replaces it: one copy is sent, the old retry never is."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp.test_utils
import pytest
from aiohttp import web
from redis.asyncio import Redis

from notifier import config
from notifier.admin import app as api
from notifier.models import iso_ms
from tests.helpers import KS, EndpointFactory, eventually, idle, publish, register, running
from tests.integration.test_operations import AUTH, Admin

RETRY = 2.0  # the one delay of the schedule: long enough to resend before it comes


@pytest.fixture
async def admin(redis: Redis, env: dict[str, str]) -> AsyncIterator[Admin]:
    settings = config.load(env)
    server = aiohttp.test_utils.TestServer(api.create_app(redis, settings))
    async with aiohttp.test_utils.TestClient(server) as client:
        yield Admin(client)


async def test_states_and_resend_of_pending_and_retrying_copies(
    redis: Redis, env: dict[str, str], endpoint_factory: EndpointFactory, admin: Admin
) -> None:
    settings = config.load({**env, "NOTIFIER_RETRY_SCHEDULE": f"{RETRY:g}s"})
    release = asyncio.Event()

    async def respond(request: web.Request, n: int) -> web.Response:
        webhook_id = request.headers["webhook-id"]
        if webhook_id == "m-retrying" and sent("m-retrying") == 1:
            return web.Response(status=500)  # its first try fails
        if webhook_id == "m-held":
            await release.wait()
        return web.Response()

    endpoint = await endpoint_factory(respond)

    def sent(webhook_id: str) -> int:
        return sum(r.headers["webhook-id"] == webhook_id for r in endpoint.received)

    pid, _ = await register(redis, settings, "p", endpoint.url, ["order.created"])

    async def state(message_id: str) -> dict[str, Any]:
        shown = await admin.call("GET", f"/v1/messages/{message_id}")
        [copy] = shown["deliveries"]
        assert copy["partner"] == pid
        return dict(copy)

    async def listed(status: str) -> list[str]:
        page = await admin.call("GET", f"/v1/partners/{pid}/messages?status={status}")
        return [m["id"] for m in page["data"]]

    async def in_state(message_id: str, wanted: str) -> bool:
        resp = await admin.client.get(f"/v1/messages/{message_id}", headers=AUTH)
        if resp.status == 404:  # not routed yet
            return False
        shown = await resp.json()
        return [d["state"] for d in shown["deliveries"]] == [wanted]

    # pending: routed, no delivery process yet; a resend replaces the waiting copy
    async with running(settings, deliver=False):
        await publish(redis, "order.created", {"n": 1}, event_id="m-pending")
        await eventually(lambda: in_state("m-pending", "pending"), 20, "m-pending pending")
    assert await listed("pending") == ["m-pending"]
    await admin.call("POST", f"/v1/partners/{pid}/messages/m-pending/resend", status=202)
    assert (await state("m-pending"))["state"] == "pending"
    assert await redis.xlen(KS.partner(pid).stream) == 1  # replaced, not added

    async with running(settings):
        await eventually(lambda: in_state("m-pending", "delivered"), 20, "m-pending delivered")
        assert sent("m-pending") == 1

        # retrying: failed once, due again RETRY later; a resend is sent at once instead
        await publish(redis, "order.created", {"n": 2}, event_id="m-retrying")
        await eventually(lambda: in_state("m-retrying", "retrying"), 20, "m-retrying retrying")
        copy = await state("m-retrying")
        now = time.time() * 1000
        assert iso_ms(now) < copy["next_attempt_at"] <= iso_ms(now + RETRY * 1.1 * 1000)
        assert copy["attempts"] == 1
        assert await listed("retrying") == ["m-retrying"]
        await admin.call("POST", f"/v1/partners/{pid}/messages/m-retrying/resend", status=202)
        await eventually(lambda: in_state("m-retrying", "delivered"), 20, "the resent copy")
        assert sent("m-retrying") == 2  # the failed try and the resent copy

        # in flight: its request is open
        await publish(redis, "order.created", {"n": 3}, event_id="m-held")
        await eventually(lambda: in_state("m-held", "in_flight"), 20, "m-held in flight")
        assert await listed("in_flight") == ["m-held"]
        release.set()
        await eventually(lambda: in_state("m-held", "delivered"), 20, "m-held delivered")
        await idle(redis)
        # Absence cannot be polled for: the old retry's time is waited out, by a margin.
        due = time.mktime(time.strptime(copy["next_attempt_at"][:19], "%Y-%m-%dT%H:%M:%S"))
        await asyncio.sleep(max(0.0, due - time.timezone - time.time()) + 0.5)
    assert sent("m-retrying") == 2, "the replaced retry was sent too"
    assert sorted(await listed("delivered")) == ["m-held", "m-pending", "m-retrying"]
    assert await listed("retrying") == [] and await listed("pending") == []


async def test_a_partners_list_counts_the_attempts_of_delivered_and_retrying_copies(
    redis: Redis, env: dict[str, str], endpoint_factory: EndpointFactory, admin: Admin
) -> None:
    """The list reads the index, not the attempt log: a copy delivered at its first try shows
    one attempt, one delivered at its third shows three, and one waiting for a retry shows
    the attempts it has had; the message's own view says the same."""
    settings = config.load({**env, "NOTIFIER_RETRY_SCHEDULE": "100ms,100ms,60s"})
    tries: dict[str, int] = {}

    async def respond(request: web.Request, n: int) -> web.Response:
        webhook_id = request.headers["webhook-id"]
        tries[webhook_id] = tries.get(webhook_id, 0) + 1
        fails = {"m-once": 0, "m-thrice": 2, "m-waiting": 3}[webhook_id]
        return web.Response(status=500 if tries[webhook_id] <= fails else 200)

    endpoint = await endpoint_factory(respond)
    pid, _ = await register(redis, settings, "p", endpoint.url, ["order.created"])
    async with running(settings):
        for n, event_id in enumerate(("m-once", "m-thrice", "m-waiting")):
            await publish(redis, "order.created", {"n": n}, event_id=event_id)
        await endpoint.wait_for(1 + 3 + 3)  # the waiting one's third try fails, due in 60 s

        async def listed() -> dict[str, tuple[str, int]]:
            page = await admin.call("GET", f"/v1/partners/{pid}/messages")
            return {m["id"]: (m["state"], m["attempts"]) for m in page["data"]}

        async def settled() -> bool:
            return (await listed()).get("m-waiting") == ("retrying", 3)

        await eventually(settled, 20, "the third failure to be settled")
        expected = {
            "m-once": ("delivered", 1),
            "m-thrice": ("delivered", 3),
            "m-waiting": ("retrying", 3),
        }
        assert await listed() == expected
    for message_id, (state, attempts) in expected.items():
        [copy] = (await admin.call("GET", f"/v1/messages/{message_id}"))["deliveries"]
        assert (copy["state"], copy["attempts"]) == (state, attempts)
