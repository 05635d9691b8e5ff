"""notifier on a TLS-only redis-server signed by a private CA, requiring client certificates,
as the ACL user whose rule is the README's own line: a router, a delivery process and the API
run end to end through it, and Redis logs no command refused to them."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import standardwebhooks
from aiohttp import web
from redis.asyncio import Redis

from notifier.testing_tls import Certificates, make_certificates
from tests.console import client as console_client
from tests.console import sign_in
from tests.helpers import (
    TOKEN,
    Endpoint,
    EndpointFactory,
    Received,
    RedisServer,
    Spawn,
    cli,
    eventually,
    free_port,
    readme_acl_rules,
    stop_running,
)

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_server(
    tmp_path_factory: pytest.TempPathFactory, certs: Certificates
) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis-tls"), tls=certs, clients="yes")
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def admin(tls_server: RedisServer, certs: Certificates) -> AsyncIterator[Redis]:
    """The server's default user, over TLS with the client certificate."""
    client = Redis.from_url(
        tls_server.url,
        ssl_ca_certs=str(certs.ca),
        ssl_certfile=str(certs.client_cert),
        ssl_keyfile=str(certs.client_key),
    )
    await client.flushall()
    await client.acl_log_reset()
    yield client
    await client.aclose()


def verify(secret: str, received: Received) -> Any:
    return standardwebhooks.Webhook(secret).verify(received.body, received.headers)


class Api:
    """The admin API of the `notifier api` under test, with the token."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http, self.base = http, base

    async def call(self, method: str, path: str, body: object = None) -> tuple[int, Any]:
        async with self.http.request(method, self.base + path, json=body, headers=AUTH) as resp:
            return resp.status, await resp.json()

    async def up(self) -> bool:
        try:
            return (await self.call("GET", "/healthz"))[0] == 200
        except aiohttp.ClientError:
            return False


class Flaky:
    """A partner endpoint that answers 500 until it is fixed."""

    fixed = False

    async def __call__(self, request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=200 if self.fixed else 500)


def published(env: dict[str, str], *args: str) -> None:
    done = cli(env, "publish", *args)
    assert done.returncode == 0, done.stderr


async def register_partners(api: Api, shop: Endpoint, paid: Endpoint) -> dict[str, Any]:
    partners = {}
    for name, endpoint, events in (
        ("shop", shop, ["order.created"]),
        ("payments", paid, ["order.paid"]),
        ("paused", shop, ["order.paused"]),
    ):
        body = {"name": name, "url": endpoint.url, "events": events}
        status, created = await api.call("POST", "/v1/partners", body)
        assert status == 201, created
        partners[name] = created
    disabled = await api.call(
        "PATCH", f"/v1/partners/{partners['paused']['id']}", {"enabled": False}
    )
    assert disabled[0] == 200
    return partners


async def delivered_signed(api: Api, env: dict[str, str], shop: Endpoint, secret: str) -> None:
    """One event through the API, one through the CLI (an XADD of its own)."""
    event = {"type": "order.created", "data": {"order_id": 1}, "id": "ord-1"}
    status, accepted = await api.call("POST", "/v1/events", event)
    assert (status, accepted["id"]) == (202, "ord-1")
    # In a thread: the endpoints answer on this event loop, and a request held past
    # NOTIFIER_REQUEST_TIMEOUT while the CLI ran was retried, a second copy of ord-1.
    await asyncio.to_thread(published, env, "order.created", '{"order_id": 2}', "--id", "ord-2")
    await shop.wait_for(2, 30)
    assert sorted(verify(secret, r)["data"]["order_id"] for r in shop.received) == [1, 2]
    assert sorted(r.headers["webhook-id"] for r in shop.received) == ["ord-1", "ord-2"]

    async def settled() -> bool:  # the endpoint has it before notifier hears it answered
        status, message = await api.call("GET", "/v1/messages/ord-1")
        return status == 200 and message["deliveries"][0]["state"] == "delivered"

    await eventually(settled, 30, "ord-1 to be delivered, as the API tells")


async def dead_lettered_then_replayed(
    api: Api, env: dict[str, str], paid: Endpoint, flaky: Flaky, partner: dict[str, Any]
) -> None:
    """A partner that fails every try: dead-lettered, then replayed once it is fixed."""
    await asyncio.to_thread(published, env, "order.paid", '{"order_id": 3}', "--id", "pay-3")
    dead: list[Any] = []

    async def dead_lettered() -> bool:
        status, page = await api.call("GET", "/v1/dead-letters")
        dead[:] = page["data"]
        return status == 200 and len(dead) == 1

    await eventually(dead_lettered, 30, "the failing partner's message to be dead-lettered")
    assert dead[0]["partner"] == partner["id"] and len(paid.received) == 4
    flaky.fixed = True
    status, replay = await api.call("POST", "/v1/dead-letters/replay", {"all": True})
    assert (status, replay["replayed"]) == (200, 1)
    await paid.wait_for(5, 30)
    assert {r.headers["webhook-id"] for r in paid.received} == {"pay-3"}
    assert verify(partner["secret"], paid.received[-1])["data"] == {"order_id": 3}


def operators_see_it(env: dict[str, str]) -> None:
    """The CLI lists the partners, and top shows the disabled one with its message."""
    listed = cli(env, "partners", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert {p["name"] for p in json.loads(listed.stdout)} == {"shop", "payments", "paused"}
    top = cli({**env, "COLUMNS": "200"}, "top", "--once")
    assert top.returncode == 0, top.stderr
    assert "notifier top" in top.stdout and "paused" in top.stdout and "disabled" in top.stdout


async def only_notifier_connected_and_nothing_was_refused(
    admin: Redis, procs: list[subprocess.Popen[bytes]], password: str
) -> None:
    users = {
        client["name"]: client["user"]
        for client in await admin.client_list()
        if client["name"].startswith("notifier-")
    }
    assert {"notifier-router", "notifier-deliver", "notifier-api"} <= set(users)
    assert set(users.values()) == {"notifier"}
    assert await admin.acl_log() == [], "commands the README's rule lacks"
    for logged in stop_running(procs):
        assert password not in logged, logged


@pytest.mark.slow
async def test_notifier_runs_end_to_end_over_tls_as_the_readme_acl_user(
    admin: Redis,
    tls_server: RedisServer,
    certs: Certificates,
    env: dict[str, str],
    spawn: Spawn,
    endpoint_factory: EndpointFactory,
) -> None:
    password = secrets.token_urlsafe(18)
    # the line as the README writes it, not redis-py's acl_setuser rebuilt from it
    rule = readme_acl_rules(password)["redis"]
    assert await admin.execute_command(*rule) in (b"OK", "OK", True)  # type: ignore[no-untyped-call]
    url = f"rediss://notifier:{password}@127.0.0.1:{tls_server.port}/0"
    # The endpoints answer on this test's own loop, which the blocking CLI calls hold now and
    # then: a request held past a short timeout would be retried, and a second copy is not what
    # this test is about.
    env.update({"REDIS_URL": url, "NOTIFIER_REQUEST_TIMEOUT": "10s", **certs.client_env()})
    flaky = Flaky()
    shop, paid = await endpoint_factory(), await endpoint_factory(flaky)
    api_addr = f"127.0.0.1:{free_port()}"
    metrics = {role: f"127.0.0.1:{free_port()}" for role in ("router", "deliver")}
    procs = [spawn(role, extra={"NOTIFIER_METRICS_ADDR": addr}) for role, addr in metrics.items()]
    procs.append(spawn("api", extra={"NOTIFIER_API_ADDR": api_addr}))

    async with aiohttp.ClientSession() as http:
        api = Api(http, f"http://{api_addr}")
        await eventually(api.up, 30, "the api to answer over TLS")
        partners = await register_partners(api, shop, paid)
        await delivered_signed(api, env, shop, partners["shop"]["secret"])
        await dead_lettered_then_replayed(api, env, paid, flaky, partners["payments"])
        await asyncio.to_thread(published, env, "order.paused", "{}")
        status, listed = await api.call("GET", "/v1/partners")
        assert status == 200
        assert {p["name"] for p in listed["data"]} == {"shop", "payments", "paused"}
        await the_console_works(f"http://{api_addr}", partners["shop"]["id"])
        for addr in metrics.values():
            for path in ("/healthz", "/metrics"):
                async with http.get(f"http://{addr}{path}") as resp:
                    assert resp.status == 200, (addr, path, await resp.text())
                    assert password not in await resp.text()
    operators_see_it(env)
    await only_notifier_connected_and_nothing_was_refused(admin, procs, password)


async def the_console_works(base: str, partner_id: str) -> None:
    """The console's sessions, notices and reads, as the README's ACL user."""
    async with console_client() as http:
        csrf = await sign_in(http, base)
        for path in ("/console", f"/console/partners/{partner_id}", "/console/dead-letters"):
            async with http.get(base + path) as resp:
                assert resp.status == 200, (path, await resp.text())
        for action in ("disable", "enable"):
            async with http.post(
                f"{base}/console/partners/{partner_id}/{action}", data={"csrf": csrf}
            ) as resp:
                assert f"shop: {action}d." in await resp.text()
        async with http.post(f"{base}/console/logout", data={"csrf": csrf}) as resp:
            assert resp.status == 200 and str(resp.url).endswith("/console/login")


async def test_an_untrusted_server_certificate_is_one_line_naming_notifier_redis_ca(
    admin: Redis,
    tls_server: RedisServer,
    certs: Certificates,
    env: dict[str, str],
    spawn: Spawn,
) -> None:
    env.update(
        {
            "REDIS_URL": f"rediss://127.0.0.1:{tls_server.port}/0",
            "NOTIFIER_REDIS_CERT": str(certs.client_cert),
            "NOTIFIER_REDIS_KEY": str(certs.client_key),
        }
    )
    listed = cli(env, "partners", "list")
    assert listed.returncode == 1
    line = listed.stderr.strip()
    assert "\n" not in line and "NOTIFIER_REDIS_CA" in line and "does not trust" in line
    # a long-running process stops at start-up too, with the same line, instead of retrying
    router = spawn("router")
    assert router.wait(30) == 1
    assert router.stderr is not None
    said = router.stderr.read().decode().strip()
    assert said.startswith("notifier: error: ") and "NOTIFIER_REDIS_CA" in said
    assert "\n" not in said and "Traceback" not in said

    # the other CA, and no client certificate where the server requires one
    other = make_certificates(Path(certs.ca).parent / "other", "another CA")
    env["NOTIFIER_REDIS_CA"] = str(other.ca)
    wrong_ca = cli(env, "partners", "list").stderr.strip()
    assert "NOTIFIER_REDIS_CA does not vouch for" in wrong_ca and "\n" not in wrong_ca
    env["NOTIFIER_REDIS_CA"] = str(certs.ca)
    del env["NOTIFIER_REDIS_CERT"], env["NOTIFIER_REDIS_KEY"]
    no_cert = cli(env, "partners", "list").stderr.strip()
    assert "NOTIFIER_REDIS_CERT" in no_cert and "\n" not in no_cert, no_cert
