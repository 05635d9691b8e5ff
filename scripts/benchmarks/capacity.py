"""Partners with a capacity, in a process of their own (`python -m benchmarks.capacity OUT`).

Each endpoint is a `notifier.testing.Endpoint` answering with a `notifier.testing.Capacity`:
it takes so many requests a second (sliding) and refuses the rest with a status, or holds them
past the sender's timeout (status 0). A small control app makes them on request and reports
every answer with its time (time.time()) and, for an accepted event, the seconds from its
publish (the `sent_at` its data carries) to its arrival.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from benchmarks.endpoints import _sent_at, run_fast, serve_control
from notifier.testing import Capacity, Endpoint


async def serve(out: Path) -> None:
    made: dict[str, tuple[Endpoint, Capacity]] = {}
    offset = time.time() - time.monotonic()  # answers are stamped with time.monotonic()

    async def create(request: web.Request) -> web.Response:
        wanted: dict[str, dict[str, Any]] = await request.json()
        for key, spec in wanted.items():
            if key not in made:
                capacity = Capacity(**spec)
                made[key] = (await Endpoint(capacity).start(), capacity)
        return web.json_response({key: made[key][0].url for key in wanted})

    async def answers(request: web.Request) -> web.Response:
        """Every answer of `key`: [time, status, seconds since its publish or null]."""
        endpoint, capacity = made[request.query["key"]]
        found = []
        for received, (at, status) in zip(endpoint.received, capacity.answers, strict=False):
            sent = _sent_at(received.body) if status == 200 else None
            found.append([at + offset, status, None if sent is None else at + offset - sent])
        return web.json_response(found)

    async def reset(request: web.Request) -> web.Response:
        for endpoint, capacity in made.values():
            endpoint.received.clear()
            capacity.answers.clear()
            capacity.accepted.clear()
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/endpoints", create)
    app.router.add_get("/answers", answers)
    app.router.add_post("/reset", reset)
    await serve_control(app, out)
    for endpoint, _ in made.values():
        await endpoint.stop()


class Capacities:
    """The bench's side of the capacity process."""

    def __init__(self, control: str) -> None:
        self.control = control
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))

    async def make(self, specs: dict[str, dict[str, Any]]) -> dict[str, str]:
        """Endpoints for these keys, each a Capacity of these fields: their URLs."""
        async with self.http.post(f"{self.control}/endpoints", json=specs) as resp:
            resp.raise_for_status()
            urls: dict[str, str] = await resp.json()
            return urls

    async def answers(self, key: str) -> list[tuple[float, int, float | None]]:
        async with self.http.get(f"{self.control}/answers", params={"key": key}) as resp:
            resp.raise_for_status()
            return [(float(a), int(s), lat) for a, s, lat in await resp.json()]

    async def reset(self) -> None:
        async with self.http.post(f"{self.control}/reset") as resp:
            resp.raise_for_status()

    async def close(self) -> None:
        await self.http.close()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m benchmarks.capacity OUT_FILE")
    run_fast(serve(Path(sys.argv[1])))
