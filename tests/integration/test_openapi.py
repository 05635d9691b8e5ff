"""GET /openapi.json describes every route of the admin API, and schemathesis, driven by that
document against a live `notifier api`, finds no 5xx and no answer that breaks it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import aiohttp
import aiohttp.test_utils
import pytest
from redis.asyncio import Redis

from notifier.admin import app as api
from notifier.admin.openapi import describe
from notifier.config import Settings
from tests.helpers import TOKEN, EndpointFactory, Spawn, eventually, free_port, register


async def test_every_route_is_documented_and_nothing_else(redis: Redis, settings: Settings) -> None:
    app = api.create_app(redis, settings)
    served = {
        (route.method.lower(), route.resource.canonical)  # type: ignore[union-attr]
        for route in app.router.routes()
        if route.method not in ("HEAD", "*")
        # the console's HTML pages are no part of the API the document describes
        and not route.resource.canonical.startswith("/console")  # type: ignore[union-attr]
    }
    document = describe(app)
    documented = {(m, p) for p, ops in document["paths"].items() for m in ops}
    assert served == documented
    assert document["openapi"] == "3.1.0"
    # the README's routes are all there
    for path in (
        "/v1/partners",
        "/v1/messages/{id}",
        "/v1/partners/{id}/recover",
        "/v1/partners/{id}/test",
        "/v1/events",
        "/v1/dead-letters/replay",
    ):
        assert path in document["paths"]
    server = aiohttp.test_utils.TestServer(app)
    async with aiohttp.test_utils.TestClient(server) as client:
        resp = await client.get("/openapi.json")  # no token needed
        assert resp.status == 200
        assert (await resp.json())["paths"].keys() == document["paths"].keys()


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_schemathesis_finds_no_server_error_and_no_answer_off_the_schema(
    redis: Redis, settings: Settings, endpoint_factory: EndpointFactory, spawn: Spawn
) -> None:
    endpoint = await endpoint_factory()
    await register(redis, settings, "p", endpoint.url, ["*"])
    addr = f"127.0.0.1:{free_port()}"
    spawn("api", extra={"NOTIFIER_API_ADDR": addr})

    async def up() -> bool:
        try:
            async with aiohttp.ClientSession() as http, http.get(f"http://{addr}/healthz") as resp:
                return resp.status == 200
        except aiohttp.ClientError:
            return False

    await eventually(up, 20, "the api to listen")
    st = Path(sys.executable).parent / "st"
    result = subprocess.run(
        [
            str(st),
            "run",
            f"http://{addr}/openapi.json",
            "-H",
            f"Authorization: Bearer {TOKEN}",
            "--checks",
            "not_a_server_error,response_schema_conformance,"
            "content_type_conformance,status_code_conformance,response_headers_conformance",
            "--phases",
            "coverage,fuzzing",
            "--max-examples",
            "40",
            "--seed",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
