"""The live demo: a short story of what notifier does for three partners.

A fresh Redis of its own (or REDIS_URL, where only the demo's own partners are touched), and
`notifier run` as a real process. Three partner endpoints on loopback verify every Standard
Webhooks signature:

- shipping: healthy, takes every order event;
- reviews: rate-limited to 5/second, so its deliveries are paced;
- analytics: flaky, answers 500 to the first try of every third order (notifier retries it),
  and keeps refusing one order until it is dead-lettered; then it is fixed, and the demo
  replays the dead letter through the admin API.

Prints each delivery and each turn of the story, then a summary (also on Ctrl-C) and what to
look at next. Colour only on a terminal (and never with NO_COLOR).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import standardwebhooks
from aiohttp import web

from notifier.testing import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "demo-"
COLOUR = sys.stdout.isatty() and "NO_COLOR" not in os.environ
STUBBORN = 7  # the order analytics refuses until it is dead-lettered (the 7th)


def paint(text: str, code: str) -> str:
    return f"\033[{code}m{text}\033[0m" if COLOUR else text


def say(text: str, code: str = "1") -> None:
    print(paint(text, code), flush=True)


@dataclass
class Partner:
    name: str
    colour: str
    events: list[str]
    extra: dict[str, Any] = field(default_factory=dict)
    secret: str = ""
    id: str = ""
    url: str = ""
    received: Counter[str] = field(default_factory=Counter)  # webhook-id -> requests
    arrivals: list[float] = field(default_factory=list)  # when each 2xx'd request came
    delivered: set[str] = field(default_factory=set)
    refused: int = 0
    bad_signatures: int = 0
    fixed: bool = False  # analytics stops refusing the stubborn order

    def wants(self, event_type: str) -> bool:
        return "*" in self.events or event_type in self.events


class Story:
    def __init__(self, count: int, rate: float) -> None:
        self.count, self.rate = count, rate
        self.partners = {
            "shipping": Partner(
                "shipping", "36", ["order.created", "order.paid", "order.delivered"]
            ),
            "reviews": Partner(
                "reviews", "35", ["order.delivered", "order.created"], {"rate_limit": "5/second"}
            ),
            "analytics": Partner("analytics", "33", ["*"]),
        }
        self.expected: Counter[str] = Counter()
        self.stubborn = ""
        self.replayed = 0
        self.api = ""
        self.metrics = ""
        self.redis_url = ""
        self.token = secrets.token_urlsafe(18)
        self.work = Path(tempfile.mkdtemp(prefix="notifier-demo-"))

    # the partners' side -------------------------------------------------------------------

    async def handle(self, partner: Partner, request: web.Request) -> web.Response:
        body = await request.read()
        headers = dict(request.headers)
        message_id = headers.get("webhook-id", "?")
        try:
            standardwebhooks.Webhook(partner.secret).verify(body, headers)
            signature = "signature ok"
        except Exception:
            partner.bad_signatures += 1
            signature = paint("SIGNATURE FAILED", "31;1")
        partner.received[message_id] += 1
        attempt = partner.received[message_id]
        event = json.loads(body)
        refuse = partner.name == "analytics" and (
            (message_id == self.stubborn and not partner.fixed)
            or (attempt == 1 and event.get("data", {}).get("n", 0) % 3 == 0)
        )
        status = 500 if refuse else 200
        line = (
            f"[{partner.name:>9}] {message_id:<22} {event.get('type', '?'):<16} "
            f"attempt {attempt}  {signature}"
        )
        if refuse:
            partner.refused += 1
            say(f"{line}  -> answered 500", "31")
            if attempt == 1 and message_id != self.stubborn:
                say(f"            {partner.name} failed; notifier will retry it", "33")
        else:
            partner.delivered.add(message_id)
            partner.arrivals.append(time.monotonic())
            print(paint(line, partner.colour), flush=True)
        return web.Response(status=status)

    async def serve_partners(self) -> list[web.AppRunner]:
        runners = []
        for partner in self.partners.values():
            app = web.Application()

            async def handler(request: web.Request, p: Partner = partner) -> web.Response:
                return await self.handle(p, request)

            app.router.add_post("/hooks", handler)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            port = free_port()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            partner.url = f"http://127.0.0.1:{port}/hooks"
            runners.append(runner)
        return runners

    # the operator's side ------------------------------------------------------------------

    async def call(
        self, http: aiohttp.ClientSession, method: str, path: str, body: Any = None
    ) -> Any:
        async with http.request(method, f"{self.api}{path}", json=body) as resp:
            answer = await resp.json()
            if resp.status >= 400:
                raise RuntimeError(f"{method} {path}: {resp.status} {answer.get('error')}")
            return answer

    async def register(self, http: aiohttp.ClientSession) -> None:
        # a shared Redis (REDIS_URL): only the demo's own partners from earlier runs go
        listed = await self.call(http, "GET", "/v1/partners?limit=1000")
        for old in listed["data"]:
            if old["name"].startswith(PREFIX):
                await self.call(http, "DELETE", f"/v1/partners/{old['id']}")
        for partner in self.partners.values():
            created = await self.call(
                http,
                "POST",
                "/v1/partners",
                {
                    "name": PREFIX + partner.name,
                    "url": partner.url,
                    "events": partner.events,
                    **partner.extra,
                },
            )
            partner.secret, partner.id = created["secret"], created["id"]
            limits = f", at most {partner.extra['rate_limit']}" if partner.extra else ""
            say(
                f"registered {partner.name} ({created['id']}) for "
                f"{', '.join(partner.events)}{limits}"
            )
        say(
            "reviews takes at most 5 a second: when orders come faster, notifier paces its "
            "deliveries\nanalytics is flaky: it answers 500 to the first try of every third "
            f"order, and refuses order {1000 + STUBBORN} until it is fixed"
        )

    async def publish(self, http: aiohttp.ClientSession) -> None:
        kinds = ["order.created", "order.paid", "order.delivered"]
        say(
            f"\npublishing {self.count} order events over POST /v1/events "
            f"(shipping gets all, reviews only created and delivered, analytics everything)\n"
        )
        for n in range(1, self.count + 1):
            kind = kinds[n % 3]
            message_id = f"ord-{1000 + n}-{kind[6:]}"
            if n == STUBBORN:
                self.stubborn = message_id
            await self.call(
                http,
                "POST",
                "/v1/events",
                {"type": kind, "id": message_id, "data": {"order_id": 1000 + n, "n": n}},
            )
            for partner in self.partners.values():
                self.expected[partner.name] += partner.wants(kind)
            await asyncio.sleep(1 / self.rate)  # the publishers' own pace

    async def wait(self, what: str, check: Any, timeout: float = 30.0) -> None:
        """Poll `check` (a function, or a coroutine function) until it holds."""
        deadline = time.monotonic() + timeout
        while not ((await held) if inspect.isawaitable(held := check()) else held):
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            await asyncio.sleep(0.1)

    async def recover(self, http: aiohttp.ClientSession) -> None:
        analytics = self.partners["analytics"]
        await self.wait(
            "the stubborn order to be dead-lettered",
            lambda: analytics.received[self.stubborn] >= 3,
            40,
        )

        letters: list[Any] = []

        async def dead() -> bool:
            page = await self.call(http, "GET", f"/v1/dead-letters?partner={analytics.id}")
            letters[:] = page["data"]
            return bool(letters)

        await self.wait("the stubborn order to reach the dead letters", dead, 10)
        letter = letters[0]
        say(
            f"\n{self.stubborn} to analytics: {letter['reason']}: dead-lettered "
            f"({letter['id']}), kept with its {len(letter['attempts'])} attempts",
            "31;1",
        )
        say(
            "analytics is fixed; replaying its dead letter with "
            f'POST /v1/dead-letters/replay {{"ids": ["{self.stubborn}"]}}',
            "33;1",
        )
        analytics.fixed = True
        answer = await self.call(http, "POST", "/v1/dead-letters/replay", {"ids": [self.stubborn]})
        self.replayed = answer["replayed"]
        await self.wait(
            "the replayed order to arrive", lambda: self.stubborn in analytics.delivered, 20
        )
        say(f"{self.stubborn} reached analytics after the replay, same webhook-id\n", "32;1")

    # the whole story ----------------------------------------------------------------------

    def summary(self, finished: bool) -> None:
        say("\nsummary" + ("" if finished else " (interrupted)"))
        for partner in self.partners.values():
            retried = sum(1 for count in partner.received.values() if count > 1)
            print(
                f"  {partner.name:<9} received {len(partner.delivered)} of "
                f"{self.expected[partner.name]} expected, {partner.refused} answered 500, "
                f"{retried} messages retried, {partner.bad_signatures} bad signatures",
                flush=True,
            )
            if partner.extra and len(partner.arrivals) > 1:
                most = max(
                    sum(1 for t in partner.arrivals if start <= t < start + 1)
                    for start in partner.arrivals
                )
                print(
                    f"  {'':<9} limited to {partner.extra['rate_limit']}: at most {most} "
                    "arrived in any second",
                    flush=True,
                )
        print(f"  dead letters replayed: {self.replayed}", flush=True)
        if self.api:
            print(
                f"\nlook at:\n  admin API   {self.api}  (token: NOTIFIER_ADMIN_TOKEN below)\n"
                f"  console     {self.api}/console  (sign in with that token)\n"
                f"  metrics     {self.metrics}/metrics    health {self.metrics}/healthz\n"
                f"  a message   curl -H 'Authorization: Bearer $NOTIFIER_ADMIN_TOKEN' "
                f"{self.api}/v1/messages/{self.stubborn or 'ord-1001-paid'}\n"
                f"  try         export REDIS_URL={self.redis_url} "
                f"NOTIFIER_ADMIN_TOKEN={self.token}\n"
                f"              .venv/bin/notifier partners list; "
                f".venv/bin/notifier top --once\n"
                f"  notifier's log: {self.work / 'notifier.log'}",
                flush=True,
            )

    def complete(self) -> bool:
        return all(len(p.delivered) >= self.expected[p.name] for p in self.partners.values())


def start_notifier(story: Story, log: Any) -> subprocess.Popen[bytes]:
    """`notifier run` on addresses of its own, for partners on loopback over http, with a
    short retry schedule, logging to `log`."""
    api_port, metrics_port = free_port(), free_port()
    story.api = f"http://127.0.0.1:{api_port}"
    story.metrics = f"http://127.0.0.1:{metrics_port}"
    env = {
        **os.environ,
        "REDIS_URL": story.redis_url,
        "NOTIFIER_ADMIN_TOKEN": story.token,
        "NOTIFIER_API_ADDR": f"127.0.0.1:{api_port}",
        "NOTIFIER_METRICS_ADDR": f"127.0.0.1:{metrics_port}",
        "NOTIFIER_ALLOW_HTTP": "1",
        "NOTIFIER_ALLOWED_NETWORKS": "127.0.0.0/8",
        "NOTIFIER_RETRY_SCHEDULE": "300ms,600ms",
        "NOTIFIER_LOG_LEVEL": "warning",
    }
    say(f"notifier demo: redis {story.redis_url}, admin API {story.api}")
    command = [sys.executable, "-m", "notifier", "run"]
    return subprocess.Popen(command, env=env, stdout=log, stderr=log, start_new_session=True)


async def main(args: argparse.Namespace) -> int:
    story = Story(args.events, args.rate)
    redis_server = None
    story.redis_url = os.environ.get("REDIS_URL", "")
    if not story.redis_url:
        redis_server = RedisServer(story.work / "redis")
        redis_server.start()
        story.redis_url = redis_server.url
    log = (story.work / "notifier.log").open("wb")
    notifier = start_notifier(story, log)
    runners = await story.serve_partners()
    finished = False
    try:
        async with aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {story.token}"}
        ) as http:

            async def up() -> bool:
                if notifier.poll() is not None:
                    raise RuntimeError(f"notifier run exited; see {story.work / 'notifier.log'}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{story.api}/healthz") as resp:
                        return resp.status == 200
                return False

            await story.wait("notifier's admin API", up, 10)
            await story.register(http)
            await story.publish(http)
            await story.recover(http)
            await story.wait("every expected delivery", story.complete, 60)
            finished = True
            if args.stay:
                story.summary(finished)
                say(
                    "\nnotifier keeps running so you can look around (the URLs above); "
                    "Ctrl-C stops it",
                    "1",
                )
                await asyncio.Event().wait()  # until Ctrl-C
    except RuntimeError as exc:
        say(f"\ndemo: {exc}", "31;1")
    finally:
        if not (finished and args.stay):
            story.summary(finished)
        notifier.send_signal(signal.SIGTERM)
        try:
            notifier.wait(20)
        except subprocess.TimeoutExpired:
            notifier.kill()
        log.close()
        for runner in runners:
            await runner.cleanup()
        if redis_server is not None:
            redis_server.stop()
    return 0 if finished else 1


def run() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=24, help="order events to publish (>= 8)")
    parser.add_argument("--rate", type=float, default=8.0, help="events per second")
    parser.add_argument(
        "--stay",
        action=argparse.BooleanOptionalAction,
        default=sys.stdout.isatty(),
        help="keep notifier running after the story, until Ctrl-C (the default on a terminal)",
    )
    args = parser.parse_args()
    if args.events < STUBBORN + 1:
        parser.error(f"--events must be at least {STUBBORN + 1}")
    try:
        return asyncio.run(main(args))
    except KeyboardInterrupt:
        # main's finally printed the summary and stopped everything
        return 130


if __name__ == "__main__":
    sys.exit(run())
