"""Inputs that can never work are refused when given, with what is wrong, not accepted and then
failed at every attempt."""

from __future__ import annotations

from typing import Any

import aiohttp.test_utils
import pytest
from redis.asyncio import Redis

from notifier.admin import app as api
from notifier.config import Settings
from tests.helpers import TOKEN

BASE = {"name": "x", "url": "https://x.example.com/hook", "events": ["order.created"]}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"events": ["order.created\n"]}, "may only contain lower-case letters"),
        ({"events": ["a" * 300]}, "300 characters long, at most 200"),
        ({"headers": {"x-key": "a\x00b"}}, "contains a control character"),
        ({"headers": {"x-key\n": "v"}}, "is not a valid header name"),
        ({"headers": {"x-key": "line\r\nx-evil: 1"}}, "contains a control character"),
        ({"headers": {"Webhook-Signature": "v1,forged"}}, "is set by notifier"),
        ({"rate_limit": "5 per 100000000000000000 hours"}, "from 1 second to 24 hours"),
    ],
)
async def test_the_api_refuses_what_could_never_be_delivered(
    redis: Redis, settings: Settings, change: dict[str, Any], expected: str
) -> None:
    server = aiohttp.test_utils.TestServer(api.create_app(redis, settings))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.test_utils.TestClient(server) as client:
        resp = await client.post("/v1/partners", headers=auth, json={**BASE, **change})
        assert resp.status == 400
        assert expected in (await resp.json())["error"]
        created = await client.post("/v1/partners", headers=auth, json=BASE)
        pid = (await created.json())["id"]
        resp = await client.patch(f"/v1/partners/{pid}", headers=auth, json=change)
        assert resp.status == 400
        assert expected in (await resp.json())["error"]
