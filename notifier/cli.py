"""`notifier`: run the service or its parts, manage partners, publish, inspect, replay."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from notifier import config, logs, service
from notifier.connection import connect
from notifier.models import PartnerIn, public
from notifier.store import Invalid, NotFound, Store

_encode = msgspec.json.Encoder().encode


def _print(data: Any) -> None:
    sys.stdout.write(msgspec.json.format(_encode(data)).decode() + "\n")


def _with_store(work: Callable[[Store, argparse.Namespace], Awaitable[Any]],
                ) -> Callable[[config.Settings, argparse.Namespace], Awaitable[Any]]:
    async def run(settings: config.Settings, args: argparse.Namespace) -> Any:
        redis = connect(settings.redis_url)
        try:
            return await work(Store(redis, settings), args)
        finally:
            await redis.aclose()
    return run


async def _partners_add(store: Store, args: argparse.Namespace) -> None:
    body: dict[str, Any] = {"name": args.name, "url": args.url,
                            "events": [e for e in args.events.split(",") if e]}
    if args.rate_limit:
        body["rate_limit"] = args.rate_limit
    if args.max_in_flight:
        body["max_in_flight"] = args.max_in_flight
    if args.ordered:
        body["ordered"] = True
    if args.transform:
        body["transform"] = msgspec.json.decode(args.transform)
    partner, secret = await store.create(msgspec.convert(body, PartnerIn))
    _print({**public(partner), "secret": secret})


async def _partners_list(store: Store, args: argparse.Namespace) -> None:
    _print([public(p) for p in await store.partners()])


async def _partners_show(store: Store, args: argparse.Namespace) -> None:
    _print(public(await store.get(args.id)))


async def _partners_remove(store: Store, args: argparse.Namespace) -> None:
    await store.remove(args.id)
    _print({"removed": args.id})


async def _partners_rotate(store: Store, args: argparse.Namespace) -> None:
    _print({"id": args.id, "secret": await store.rotate_secret(args.id)})


async def _publish(store: Store, args: argparse.Namespace) -> None:
    _print({"entry_id": await store.publish(args.type, args.json.encode(), args.id)})


async def _attempts(store: Store, args: argparse.Namespace) -> None:
    _print(await store.attempts(args.partner, args.limit))


async def _dead_list(store: Store, args: argparse.Namespace) -> None:
    _print(await store.dead_letters(args.partner, args.limit))


async def _dead_replay(store: Store, args: argparse.Namespace) -> None:
    _print({"replayed": await store.replay(args.partner, args.ids or None)})


def _process(route: bool, deliver: bool, serve_api: bool) -> Callable[..., Awaitable[None]]:
    async def run(settings: config.Settings, args: argparse.Namespace) -> None:
        service.tune_gc()
        await service.run(settings, route=route, deliver=deliver, serve_api=serve_api)
    return run


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="notifier", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)
    for name, parts, text in (
            ("run", (True, True, True), "router, delivery pool and admin API in one process"),
            ("router", (True, False, False), "route the ingress stream to partner streams"),
            ("deliver", (False, True, False), "deliver partner messages"),
            ("api", (False, False, True), "serve the admin API")):
        sub.add_parser(name, help=text).set_defaults(handler=_process(*parts))

    partners = sub.add_parser("partners", help="manage partners").add_subparsers(
        dest="action", required=True)
    add = partners.add_parser("add", help="register a partner; prints its secret once")
    add.add_argument("name")
    add.add_argument("url")
    add.add_argument("--events", default="*", help="comma-separated event types, or *")
    add.add_argument("--rate-limit", help="e.g. 50/second")
    add.add_argument("--max-in-flight", type=int)
    add.add_argument("--ordered", action="store_true")
    add.add_argument("--transform", help="transform as JSON")
    add.set_defaults(handler=_with_store(_partners_add))
    partners.add_parser("list").set_defaults(handler=_with_store(_partners_list))
    for name, work in (("show", _partners_show), ("remove", _partners_remove),
                       ("rotate-secret", _partners_rotate)):
        cmd = partners.add_parser(name)
        cmd.add_argument("id")
        cmd.set_defaults(handler=_with_store(work))

    publish = sub.add_parser("publish", help="XADD an event to the ingress stream")
    publish.add_argument("type")
    publish.add_argument("json")
    publish.add_argument("--id", help="idempotency key")
    publish.set_defaults(handler=_with_store(_publish))

    attempts = sub.add_parser("attempts", help="recent delivery attempts of a partner")
    attempts.add_argument("partner")
    attempts.add_argument("--limit", type=int, default=50)
    attempts.set_defaults(handler=_with_store(_attempts))

    dead = sub.add_parser("dead-letters", help="inspect and replay dead letters").add_subparsers(
        dest="action", required=True)
    listing = dead.add_parser("list")
    listing.add_argument("--partner")
    listing.add_argument("--limit", type=int, default=100)
    listing.set_defaults(handler=_with_store(_dead_list))
    again = dead.add_parser("replay")
    again.add_argument("--partner")
    again.add_argument("ids", nargs="*")
    again.set_defaults(handler=_with_store(_dead_replay))
    return top


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        settings = config.load()
    except config.ConfigError as exc:
        raise SystemExit(str(exc)) from None
    logs.configure(settings.log_level)
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    try:
        asyncio.run(args.handler(settings, args))
    except (NotFound, Invalid) as exc:
        raise SystemExit(f"error: {exc}") from None
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise SystemExit(f"error: {exc}") from None
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
