"""A split deployment, each process observable: /metrics and /healthz on every one, and the
numbers they give are what the endpoints received and what waits in Redis."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from notifier import config
from notifier.config import Settings
from notifier.engine.router import Router
from notifier.models import PartnerPatch
from notifier.store import Store
from notifier.telemetry import observer
from tests.helpers import (
    KS,
    TOKEN,
    Endpoint,
    EndpointFactory,
    RedisServer,
    Spawn,
    eventually,
    free_port,
    publish,
    register,
    running,
)

pytestmark = pytest.mark.slow

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(http: aiohttp.ClientSession, addr: str) -> Samples:
    async with http.get(f"http://{addr}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, metric: str, **labels: str) -> float:
    """The sum of `metric`'s samples whose labels include `labels`."""
    return sum(
        v for (n, found), v in samples.items() if n == metric and set(labels.items()) <= set(found)
    )


async def test_every_process_of_a_split_deployment_is_observable(
    redis: Redis,
    env: dict[str, str],
    settings: Settings,
    endpoint_factory: EndpointFactory,
    spawn: Spawn,
) -> None:
    # after a quick first retry, the failing partner's messages wait a minute for the next
    env["NOTIFIER_RETRY_SCHEDULE"] = "200ms,60s"
    healthy: Endpoint = await endpoint_factory()

    async def fail(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=503)

    failing: Endpoint = await endpoint_factory(fail)
    limited: Endpoint = await endpoint_factory()
    kept: Endpoint = await endpoint_factory()
    ids = {}
    for name, endpoint, extra in (
        ("healthy", healthy, {}),
        ("failing", failing, {}),
        ("limited", limited, {"rate_limit": "2/second"}),
        ("kept", kept, {"enabled": False}),
    ):
        ids[name], _ = await register(redis, settings, name, endpoint.url, [f"evt.{name}"], **extra)
    addrs = {role: f"127.0.0.1:{free_port()}" for role in ("router", "deliver")}
    for role, addr in addrs.items():
        spawn(role, extra={"NOTIFIER_METRICS_ADDR": addr})
    addrs["api"] = f"127.0.0.1:{free_port()}"
    spawn("api", extra={"NOTIFIER_API_ADDR": addrs["api"]})

    for name, count in (("healthy", 20), ("failing", 2), ("limited", 40), ("kept", 7)):
        for n in range(count):
            await publish(redis, f"evt.{name}", {"n": n})
    await healthy.wait_for(20)
    await failing.wait_for(2 * 2)  # the first try and a retry of each

    async with aiohttp.ClientSession() as http:
        for role, addr in addrs.items():

            async def up(addr: str = addr) -> bool:
                try:
                    async with http.get(f"http://{addr}/healthz") as resp:
                        return resp.status == 200 and (await resp.json())["redis"] == "ok"
                except aiohttp.ClientError:
                    return False

            await eventually(up, 20, f"{role}'s /healthz")

        async def leader_reports() -> Samples | None:
            for addr in addrs.values():
                samples = await scrape(http, addr)
                if value(samples, "notifier_partner_disabled", partner=ids["kept"]) == 1:
                    return samples
            return None

        async def shared_ready() -> bool:
            samples = await leader_reports()
            return (
                samples is not None
                and value(samples, "notifier_backlog", partner=ids["limited"]) > 0
            )

        await eventually(shared_ready, 30, "the metrics leader's backlog gauges")
        shared = await leader_reports()
        assert shared is not None
        deliver = await scrape(http, addrs["deliver"])
        router = await scrape(http, addrs["router"])
        reporting = [
            addr
            for addr in addrs.values()
            if value(await scrape(http, addr), "notifier_partner_disabled") > 0
        ]

    # what a process does: counted where it happens
    assert value(
        deliver, "notifier_delivery_attempts_total", partner=ids["healthy"], result="success"
    ) == len(healthy.received)
    assert (
        value(deliver, "notifier_delivery_failures_total", partner=ids["failing"], kind="http_5xx")
        >= 4
    )
    assert value(router, "notifier_events_routed_total", event_type="evt.healthy") == 20
    assert value(deliver, "notifier_rate_limited_total", partner=ids["limited"]) > 0
    # every request to the healthy partner has been answered
    assert deliver[("notifier_delivery_in_flight", (("partner", ids["healthy"]),))] == 0

    # what the deployment holds: reported by exactly one process, and what Redis holds
    assert len(reporting) == 1
    stream_len = await redis.xlen(KS.partner(ids["kept"]).stream)
    assert stream_len == 7
    assert value(shared, "notifier_backlog", partner=ids["kept"], state="new") == stream_len
    assert value(shared, "notifier_partner_disabled", partner=ids["kept"]) == 1
    assert value(shared, "notifier_partner_info", partner=ids["kept"], name="kept") == 1
    assert value(shared, "notifier_backlog_oldest_age_seconds", partner=ids["kept"]) > 0
    assert value(shared, "notifier_partners") == 4
    assert ("notifier_ingress_lag_seconds", ()) in shared
    # the failing partner's messages wait for their retries
    assert (
        value(shared, "notifier_backlog", partner=ids["failing"], state="retrying")
        + value(shared, "notifier_backlog", partner=ids["failing"], state="in_flight")
        == 2
    )

    # re-enabled, the kept messages go out
    await Store(redis, settings).update(ids["kept"], PartnerPatch(enabled=True))
    await kept.wait_for(7)


async def test_the_api_counts_its_requests_by_route_template_method_and_status(
    env: dict[str, str], spawn: Spawn
) -> None:
    """`notifier api` serves series of its own: every answer by its route's template (ids
    never become labels), method and status, with a latency histogram by route."""
    addr = f"127.0.0.1:{free_port()}"
    spawn("api", extra={"NOTIFIER_API_ADDR": addr})
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as http:

        async def up() -> bool:
            try:
                async with http.get(f"http://{addr}/healthz") as resp:
                    return resp.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(up, 20, "the api's /healthz")
        asked = [
            ("GET", "/v1/partners", auth, 200),
            ("GET", "/v1/partners", auth, 200),
            ("GET", "/v1/partners/ptn_one", auth, 404),
            ("GET", "/v1/partners/ptn_two", auth, 404),
            ("GET", "/v1/partners/ptn_one", {}, 401),
            ("POST", "/v1/partners", auth, 400),
            ("GET", "/no/such/path", auth, 404),
            ("DELETE", "/healthz", auth, 405),
        ]
        for method, path, headers, status in asked:
            async with http.request(method, f"http://{addr}{path}", headers=headers) as resp:
                assert resp.status == status, (method, path)
        samples = await scrape(http, addr)

    def requests(route: str, method: str, status: str) -> float:
        return value(
            samples, "notifier_api_requests_total", route=route, method=method, status=status
        )

    assert requests("/v1/partners", "GET", "200") == 2
    assert requests("/v1/partners/{id}", "GET", "404") == 2
    assert requests("/v1/partners/{id}", "GET", "401") == 1
    assert requests("/v1/partners", "POST", "400") == 1
    assert requests("unmatched", "GET", "404") == 1
    assert requests("unmatched", "DELETE", "405") == 1
    assert requests("/healthz", "GET", "200") >= 1
    assert not any("ptn_" in str(labels) for (_, labels) in samples)
    duration = "notifier_api_request_duration_seconds"
    assert value(samples, f"{duration}_count", route="/v1/partners/{id}", method="GET") == 3
    assert value(samples, f"{duration}_bucket", route="/v1/partners", le="+Inf") == 3
    assert 0 < value(samples, f"{duration}_sum", route="/v1/partners", method="GET") < 60


async def test_healthz_is_503_while_redis_is_unreachable_or_a_loop_is_stuck(
    redis_server: RedisServer,
    redis: Redis,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`notifier run` answers /healthz on its metrics address and on the api's alike: 503
    naming Redis while it is away (200 again once it is back), and 503 naming the loop that
    stopped going round while the others still do."""
    addrs = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    settings = config.load(
        {**env, "NOTIFIER_METRICS_ADDR": addrs[0], "NOTIFIER_API_ADDR": addrs[1]}
    )
    monkeypatch.setattr(observer, "LOOP_STALE", 1.0)
    stuck, release = asyncio.Event(), asyncio.Event()
    original = Router.step

    async def step(self: Router) -> int:
        if stuck.is_set() and not self.ops:
            await release.wait()  # the ingress lane stops going round; the ops lane does not
        return await original(self)

    monkeypatch.setattr(Router, "step", step)

    async def answers() -> list[tuple[int, dict[str, Any]]]:
        found = []
        async with aiohttp.ClientSession() as http:
            for addr in addrs:
                try:
                    async with http.get(f"http://{addr}/healthz") as resp:
                        found.append((resp.status, await resp.json()))
                except aiohttp.ClientError:
                    found.append((0, {}))
        return found

    async def all_are(status: int, redis_state: str, router: str) -> bool:
        return all(
            code == status
            and body["redis"].startswith(redis_state)
            and body["loops"]["router"].startswith(router)
            and body["loops"]["router:ops"] == body["loops"]["delivery"] == "ok"
            for code, body in await answers()
        )

    try:
        async with running(settings, serve_api=True):
            await eventually(lambda: all_are(200, "ok", "ok"), 20, "both to be well")
            await asyncio.to_thread(redis_server.stop, signal.SIGKILL)
            await eventually(lambda: all_are(503, "unreachable", "ok"), 10, "503: redis")
            await asyncio.to_thread(redis_server.start)
            await eventually(lambda: all_are(200, "ok", "ok"), 10, "well again")
            stuck.set()
            await eventually(lambda: all_are(503, "ok", "stalled"), 10, "503: the router")
            release.set()
    finally:
        release.set()
        if redis_server.proc is None:
            redis_server.start()
