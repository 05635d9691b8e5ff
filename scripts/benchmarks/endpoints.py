"""The partner endpoints of a run, in a process of their own (`python -m benchmarks.endpoints
OUT`): one `notifier.testing.Endpoint` per partner key, each on a port of its own, answering
200 at once (`ok`), 500 (`fail`) or after HANG_SECONDS (`hang`); a small control app reports
what they received. Receiving costs neither the bench nor notifier CPU. `Endpoints` is the
bench's side of it.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import signal
import statistics
import sys
import time
from collections.abc import Coroutine, Iterable
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
from aiohttp import web

from benchmarks.figures import MIB
from notifier.testing import Endpoint, Responder, free_port, ok

#: The `hang` endpoints answer after this long: the default NOTIFIER_REQUEST_TIMEOUT.
HANG_SECONDS = 10.0


async def _fail(request: Any, n: int) -> Any:
    return web.Response(status=500, text="outage")


async def _hang(request: Any, n: int) -> Any:
    await asyncio.sleep(HANG_SECONDS)
    return web.Response(status=200)


async def _mostly_fail(request: Any, n: int) -> Any:
    """500, but 200 for every tenth request: a partner that keeps failing without tripping
    its breaker (a success closes it)."""
    return web.Response(status=200) if n % 10 == 0 else web.Response(status=500)


RESPONDERS: dict[str, Responder] = {
    "ok": ok,
    "fail": _fail,
    "hang": _hang,
    "mostly_fail": _mostly_fail,
}


def _sent_at(body: bytes) -> float | None:
    """The publish time an event's data carries, from the body notifier POSTed."""
    try:
        sent = msgspec.json.decode(body)["data"]["sent_at"]
    except (msgspec.DecodeError, KeyError, TypeError):
        return None
    return float(sent) if isinstance(sent, int | float) else None


def smoothed_rate(times: list[float], since: float, until: float, span: float) -> float | None:
    """Arrivals per second over [since, until], robust to bursts.

    A rate-limited sender sends in bursts of up to its limit about once a window, so
    count / seconds is off by up to a whole burst depending on where the edges fall (10% on
    a 5 s look at 50/second). Here each edge is the cumulative count averaged over `span`
    seconds (the limit's window), which takes out the phase of a periodic pattern; unlike
    a fitted slope, a sender that stops sending still shows as a lower rate.
    """
    if until - since <= 2 * span:
        return None
    steps = 200

    def level(start: float) -> float:
        return statistics.fmean(
            bisect.bisect_right(times, start + span * (k + 0.5) / steps) for k in range(steps)
        )

    return (level(until - span) - level(since)) / (until - span - since)


class Control:
    """The control app's handlers over the endpoints made on the bench's request, by key."""

    def __init__(self) -> None:
        self.made: dict[str, tuple[str, Endpoint]] = {}
        # Endpoint stamps arrivals with time.monotonic(); the bench compares them with
        # time.time()
        self.offset = time.time() - time.monotonic()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=16 * MIB)
        app.router.add_post("/endpoints", self.create)
        app.router.add_get("/counts", self.counts)
        app.router.add_get("/window", self.window)
        app.router.add_get("/latencies", self.latencies)
        app.router.add_post("/reset", self.reset)
        return app

    def arrivals(self, key: str) -> list[float]:
        made = self.made
        return [r.at + self.offset for r in made[key][1].received] if key in made else []

    async def create(self, request: web.Request) -> web.Response:
        made = self.made
        wanted: dict[str, str] = await request.json()
        for key, kind in wanted.items():
            if key not in made:
                made[key] = (kind, await Endpoint(RESPONDERS[kind]).start())
            elif made[key][0] != kind:
                raise web.HTTPBadRequest(text=f"endpoint {key} answers {made[key][0]}")
        return web.json_response({key: made[key][1].url for key in wanted})

    async def counts(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                key: [len(e.received), e.received[-1].at + self.offset]
                for key, (_, e) in self.made.items()
                if e.received
            }
        )

    async def window(self, request: web.Request) -> web.Response:
        """Requests of `key` that arrived in [since, until], the most in any `span` s, and
        their rate with the edges smoothed over `span` (see `smoothed_rate`)."""
        query = request.query
        times = self.arrivals(query["key"])
        since, until = float(query["since"]), float(query["until"])
        span = float(query.get("span", "1"))
        inside = times[bisect.bisect_left(times, since) : bisect.bisect_right(times, until)]
        best = low = 0
        for high, at in enumerate(inside):
            while at - inside[low] >= span:
                low += 1
            best = max(best, high - low + 1)
        return web.json_response(
            {
                "count": len(inside),
                "max_per_span": best,
                "rate": smoothed_rate(times, since, until, span),
            }
        )

    async def latencies(self, request: web.Request) -> web.Response:
        """Seconds from each event's publish (its `sent_at`) to its arrival."""
        found = []
        for key in request.query["keys"].split(","):
            for received in self.made[key][1].received if key in self.made else []:
                sent = _sent_at(received.body)
                if sent is not None:
                    found.append(received.at + self.offset - sent)
        return web.json_response(found)

    async def reset(self, request: web.Request) -> web.Response:
        for _, endpoint in self.made.values():
            endpoint.received.clear()
        return web.json_response({})


async def serve_endpoints(out: Path) -> None:
    """The endpoint process: Endpoints made on request by the bench, each on its own port,
    and a control app (its port written to `out`) reporting what they received."""
    control = Control()
    await serve_control(control.app(), out)
    for _, endpoint in control.made.values():
        await endpoint.stop()


async def serve_control(app: Any, out: Path) -> None:
    """Serve a process's control `app` on a free port, written to `out` as
    `{"control": port}`, until SIGTERM or SIGINT."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    partial = out.with_suffix(".partial")
    partial.write_text(json.dumps({"control": port}))
    partial.rename(out)  # atomic: the bench never reads half a file
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


class Endpoints:
    """The bench's side of the endpoint process."""

    def __init__(self, control: str) -> None:
        self.control = control
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))

    async def make(self, kinds: dict[str, str]) -> dict[str, str]:
        """Endpoints for these keys, answering as their kind (ok, fail, hang): their URLs."""
        async with self.http.post(f"{self.control}/endpoints", json=kinds) as resp:
            resp.raise_for_status()
            urls: dict[str, str] = await resp.json()
            return urls

    async def counts(self) -> dict[str, tuple[int, float]]:
        """Key -> (requests received, time.time() of the last one)."""
        async with self.http.get(f"{self.control}/counts") as resp:
            return {k: (int(v[0]), float(v[1])) for k, v in (await resp.json()).items()}

    async def window(
        self, key: str, since: float, until: float, span: float = 1.0
    ) -> dict[str, Any]:
        params = {"key": key, "since": repr(since), "until": repr(until), "span": repr(span)}
        async with self.http.get(f"{self.control}/window", params=params) as resp:
            result: dict[str, Any] = await resp.json()
            return result

    async def latencies(self, keys: Iterable[str]) -> list[float]:
        async with self.http.get(
            f"{self.control}/latencies", params={"keys": ",".join(keys)}
        ) as resp:
            found: list[float] = await resp.json()
            return found

    async def reset(self) -> None:
        async with self.http.post(f"{self.control}/reset") as resp:
            resp.raise_for_status()

    async def close(self) -> None:
        await self.http.close()


def run_fast(coro: Coroutine[Any, Any, Any]) -> Any:
    """asyncio.run on uvloop when it is installed, as `notifier.cli` does."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m benchmarks.endpoints OUT_FILE")
    run_fast(serve_endpoints(Path(sys.argv[1])))
