"""Scenario 10: the read routes of the admin API on a partner with many messages, through a
real `notifier api` process: one page of 1,000 of its messages, recovering 10,000 that failed,
and one message by its id.

The partner's endpoint answers 500 to nine requests in ten (and 200 to the tenth, so its
breaker stays closed), with a retry schedule of one hour: once each message has had its first
attempt, nine in ten are waiting for a retry, which is what recover resends. Events carry
producer ids, as on the path of scenario 0.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import aiohttp

from benchmarks import path
from benchmarks.bench import Bench, progress
from benchmarks.figures import Figure, Results, number

SECTIONS = (10,)
FIGURES = [
    Figure("10a", 10, "10a GET a partner's messages, a page of 1,000", "ms"),
    Figure("10b", 10, "10b POST recover: the messages waiting for a retry (10,000)", "s"),
    Figure("10c", 10, "10c GET /v1/messages/{id}", "ms"),
]
TO_RECOVER = 10_000
TOKEN = "bench-admin-token"


async def run(bench: Bench, results: Results) -> None:
    events = TO_RECOVER * 10 // 9 + 10  # nine in ten fail
    if bench.sizes.events < 10_000:  # --quick
        events = 1_200
    results.headings[10] = (
        f"Reads: one partner with {events:,} messages with producer ids, nine in ten waiting "
        "for a retry; the admin API in a `notifier api` process"
    )
    await bench.fresh()
    url = (await bench.endpoints.make({"reads": "mostly_fail"}))["reads"]
    pid = await bench.register("reads", url, ["evt.reads"], max_in_flight=50)
    env = {**bench.env(), "NOTIFIER_RETRY_SCHEDULE": "1h"}
    api = f"http://{env['NOTIFIER_API_ADDR']}"
    bench.notifier("router", env=env)
    bench.notifier("deliver", env=env)
    bench.notifier("api", env=env)
    started_ms = int(time.time() * 1000) - 1000
    progress(f"10 {events:,} events, each attempted once")
    await path.publish(bench, ["evt.reads"], range(events), "reads")
    await bench.wait_delivered({"reads": events}, "every message's first attempt")
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        await bench.until(lambda: _up(http, api), "the api to answer")
        page = await _timed(http, "GET", f"{api}/v1/partners/{pid}/messages?limit=1000")
        rows = len(page[1]["data"])
        results.put(
            "10a",
            page[0] * 1000,
            f"{rows:,} rows; median of 3; before recover, every row's state looked up live",
        )
        one = await _timed(http, "GET", f"{api}/v1/messages/reads-{events // 2}")
        states = [d["state"] for d in one[1]["deliveries"]]
        results.put("10c", one[0] * 1000, f"median of 3; its state: {', '.join(states)}")
        progress("10 recover")
        took = time.monotonic()
        async with http.post(
            f"{api}/v1/partners/{pid}/recover", json={"since": started_ms}
        ) as resp:
            answer: dict[str, Any] = await resp.json()
            resp.raise_for_status()
        took = time.monotonic() - took
        results.put(
            "10b",
            took,
            f"{answer['resent']:,} resent ({number(answer['resent'] / took)}/s); "
            f"complete: {answer['complete']}",
        )


async def _up(http: aiohttp.ClientSession, api: str) -> bool:
    try:
        async with http.get(f"{api}/healthz") as resp:
            return resp.status == 200
    except aiohttp.ClientError:
        return False


async def _timed(http: aiohttp.ClientSession, method: str, url: str) -> tuple[float, Any]:
    """The median time of three calls, and the last answer."""
    times = []
    answer: Any = None
    for _ in range(3):
        started = time.monotonic()
        async with http.request(method, url) as resp:
            answer = await resp.json()
            resp.raise_for_status()
        times.append(time.monotonic() - started)
        await asyncio.sleep(0.1)
    return statistics.median(times), answer
