"""ed25519 (`v1a`) partners through the admin API and real deliveries: the public key shown on
create, show and rotate, the private key sealed at rest, requests verified with
`cryptography`'s Ed25519 verifier as a partner would, one signature per valid key during a
rotation, and a change of scheme by PATCH that overlaps like a rotation."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import aiohttp
import aiohttp.test_utils
import msgspec
import pytest
import standardwebhooks
from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from redis.asyncio import Redis

from notifier import config
from notifier.admin import app as api
from notifier.config import Settings
from notifier.testing import Received
from tests.helpers import TOKEN, EndpointFactory, publish, running

AUTH = {"Authorization": f"Bearer {TOKEN}"}
Client = aiohttp.test_utils.TestClient[web.Request, web.Application]
KEY = base64.urlsafe_b64encode(b"k" * 32).decode()


@pytest.fixture
def sealed(env: dict[str, str]) -> Settings:
    return config.load({**env, "NOTIFIER_SECRET_KEY": KEY})


@pytest.fixture
async def http(redis: Redis, sealed: Settings) -> AsyncIterator[Client]:
    server = aiohttp.test_utils.TestServer(api.create_app(redis, sealed))
    async with aiohttp.test_utils.TestClient(server) as client:
        yield client


def verified_by(public_key: str, got: Received) -> int:
    """How many of the request's v1a signatures this public key verifies (a partner needs
    one)."""
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key.removeprefix("whpk_")))
    signed = f"{got.headers['webhook-id']}.{got.headers['webhook-timestamp']}.".encode() + got.body
    count = 0
    for signature in got.headers["webhook-signature"].split(" "):
        version, _, value = signature.partition(",")
        if version != "v1a":
            continue
        try:
            key.verify(base64.b64decode(value), signed)
            count += 1
        except InvalidSignature:
            pass
    return count


async def test_a_v1a_partner_is_verified_with_its_public_key_across_rotations(
    redis: Redis,
    sealed: Settings,
    http: Client,
    endpoint_factory: EndpointFactory,
) -> None:
    endpoint = await endpoint_factory()
    body = {"name": "asym", "url": endpoint.url, "events": ["*"], "signature": "v1a"}
    resp = await http.post("/v1/partners", json=body, headers=AUTH)
    assert resp.status == 201
    created = await resp.json()
    assert created["secret"] is None and created["signature"] == "v1a"
    first = created["public_key"]
    assert first.startswith("whpk_") and len(base64.b64decode(first[5:])) == 32
    shown = await (await http.get(f"/v1/partners/{created['id']}", headers=AUTH)).json()
    assert shown["public_key"] == first
    # the private key is sealed like a secret: not in the record in plain text
    record = await redis.hget("notifier:partners", created["id"])
    assert record is not None and b"whsk_" not in record and b"enc:" in record

    async with running(sealed):
        await publish(redis, "order.created", {"order_id": 1}, event_id="one")
        await endpoint.wait_for(1)
        got = endpoint.received[0]
        assert got.headers["webhook-signature"].startswith("v1a,")
        assert verified_by(first, got) == 1

        resp = await http.post(f"/v1/partners/{created['id']}/secret/rotate", headers=AUTH)
        rotated = await resp.json()
        second = rotated["public_key"]
        assert rotated["secret"] is None and second.startswith("whpk_") and second != first
        shown = await (await http.get(f"/v1/partners/{created['id']}", headers=AUTH)).json()
        assert shown["public_key"] == second
        await publish(redis, "order.created", {"order_id": 2}, event_id="two")
        await endpoint.wait_for(2)
        got = endpoint.received[1]
        assert len(got.headers["webhook-signature"].split(" ")) == 2
        assert verified_by(first, got) == 1 and verified_by(second, got) == 1

        # back to v1 by PATCH: a new whsec_ secret, shown this once; the ed25519 keys keep
        # signing for the overlap, so a partner switching its verifier misses nothing
        resp = await http.patch(
            f"/v1/partners/{created['id']}", json={"signature": None}, headers=AUTH
        )
        changed = await resp.json()
        assert changed["signature"] == "v1" and changed["public_key"] is None
        assert changed["secret"].startswith("whsec_")
        await publish(redis, "order.created", {"order_id": 3}, event_id="three")
        await endpoint.wait_for(3)
        got = endpoint.received[2]
        assert standardwebhooks.Webhook(changed["secret"]).verify(got.body, got.headers)
        assert verified_by(second, got) == 1
        shown = await (await http.get(f"/v1/partners/{created['id']}", headers=AUTH)).json()
        assert "secret" not in shown


async def test_a_v1a_partner_brings_no_secret(http: Client) -> None:
    body = {
        "name": "asym",
        "url": "https://x.example.com",
        "events": ["*"],
        "signature": "v1a",
        "secret": "whsec_" + base64.b64encode(b"s" * 32).decode(),
    }
    resp = await http.post("/v1/partners", json=body, headers=AUTH)
    assert resp.status == 400
    assert (await resp.json())["error"] == (
        "secret: a v1a partner's key pair is made by notifier; leave it out"
    )
    resp = await http.post("/v1/partners", json={**body, "secret": None}, headers=AUTH)
    pid = (await resp.json())["id"]
    resp = await http.post(
        f"/v1/partners/{pid}/secret/rotate", json={"secret": body["secret"]}, headers=AUTH
    )
    assert resp.status == 400
    resp = await http.post("/v1/partners", json={**body, "signature": "v2"}, headers=AUTH)
    assert resp.status == 400
    assert "signature" in (await resp.json())["error"]
    assert msgspec.json.decode(await resp.read())["error"].startswith("signature")
