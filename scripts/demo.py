"""The live demo: two partners with different subscriptions receive a stream of orders.

Starts its own redis-server (unless REDIS_URL is set) and `notifier run` as a subprocess,
serves two partner endpoints on loopback that verify every signature, registers them through
the admin API, publishes orders, and prints each delivery as the partner receives it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import standardwebhooks
from aiohttp import web
from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".demo"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis() -> tuple[str, subprocess.Popen[bytes]]:
    WORK.mkdir(exist_ok=True)
    port = free_port()
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir",
                             str(WORK), "--appendonly", "yes", "--save", "",
                             "--maxmemory-policy", "noeviction"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return f"redis://127.0.0.1:{port}/0", proc


class Partner:
    def __init__(self, name: str, colour: str) -> None:
        self.name, self.colour = name, colour
        self.secret = ""
        self.count = 0
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        verified = "signature ok"
        try:
            standardwebhooks.Webhook(self.secret).verify(body, dict(request.headers))
        except Exception as exc:
            verified = f"SIGNATURE FAILED: {exc}"
        self.count += 1
        event = json.loads(body)
        print(f"{self.colour}[{self.name:>8}]\033[0m #{self.count:<3} "
              f"{request.headers['webhook-id']:<28} {event.get('type', '?'):<18} "
              f"{json.dumps(event.get('data', event))[:60]}  ({verified})", flush=True)
        return web.Response(status=200)

    async def start(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_post("/hooks", self.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/hooks"
        return runner


async def wait_healthy(api: str) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            try:
                async with http.get(f"{api}/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise SystemExit("notifier did not become healthy")


async def main(count: int, rate: float) -> None:
    redis_proc = None
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        redis_url, redis_proc = start_redis()
    token = secrets.token_urlsafe(24)
    api_port = free_port()
    api = f"http://127.0.0.1:{api_port}"
    env = {**os.environ, "REDIS_URL": redis_url, "NOTIFIER_ADMIN_TOKEN": token,
           "NOTIFIER_API_ADDR": f"127.0.0.1:{api_port}", "NOTIFIER_ALLOW_HTTP": "1",
           "NOTIFIER_ALLOWED_NETWORKS": "127.0.0.0/8", "NOTIFIER_RETRY_SCHEDULE": "1s,2s,5s",
           "NOTIFIER_LOG_LEVEL": "warning"}
    print(f"redis: {redis_url}\nadmin api: {api} (token in this process only)")
    notifier = subprocess.Popen([sys.executable, "-m", "notifier.cli", "run"], env=env)
    partners = {"shipping": Partner("shipping", "\033[36m"),
                "reviews": Partner("reviews", "\033[35m")}
    runners = [await p.start() for p in partners.values()]
    redis = Redis.from_url(redis_url)
    try:
        await wait_healthy(api)
        auth = {"Authorization": f"Bearer {token}"}
        subscriptions = {"shipping": ["order.paid", "order.cancelled"],
                         "reviews": ["order.delivered"]}
        async with aiohttp.ClientSession(headers=auth) as http:
            for name, partner in partners.items():
                body: dict[str, Any] = {"name": f"demo-{name}", "url": partner.url,
                                        "events": subscriptions[name], "rate_limit": "20/second"}
                async with http.post(f"{api}/v1/partners", json=body) as resp:
                    created = await resp.json()
                    if resp.status != 201:
                        raise SystemExit(f"could not register {name}: {created}")
                partner.secret = created["secret"]
                print(f"registered {name} ({created['id']}) for {', '.join(body['events'])}")
        print(f"publishing {count} orders to notifier:events ...\n")
        expected = {"shipping": 0, "reviews": 0}
        for n in range(1, count + 1):
            event_type = random.choice(["order.created", "order.paid", "order.delivered",
                                        "order.cancelled"])
            data = {"order_id": 1000 + n, "total": round(random.uniform(5, 300), 2)}
            await redis.xadd("notifier:events", {"type": event_type, "data": json.dumps(data),
                                                 "id": f"demo-{int(time.time())}-{n}"})
            for name, types in subscriptions.items():
                expected[name] += event_type in types
            await asyncio.sleep(1 / rate)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(
                partners[n].count < expected[n] for n in expected):
            await asyncio.sleep(0.1)
        print()
        for name, partner in partners.items():
            print(f"{name}: received {partner.count} of {expected[name]} expected")
    finally:
        await redis.aclose()
        notifier.send_signal(signal.SIGTERM)
        notifier.wait(20)
        for runner in runners:
            await runner.cleanup()
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=40, help="orders to publish")
    parser.add_argument("--rate", type=float, default=8.0, help="orders per second")
    args = parser.parse_args()
    asyncio.run(main(args.events, args.rate))
