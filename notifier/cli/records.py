"""`notifier publish | attempts | dead-letters`: events in, what happened to them out."""

from __future__ import annotations

import argparse
from typing import Any

from notifier import rules
from notifier.cli.commands import UsageError, command, family, paged
from notifier.cli.output import show, show_page
from notifier.dead_letters import DeadLetters
from notifier.store import Store

ATTEMPT_COLUMNS = ("at", "message_id", "event_type", "attempt", "status", "latency_ms", "error")
DEAD_COLUMNS = ("id", "at", "partner", "reason")


async def _publish(store: Store, args: argparse.Namespace) -> None:
    entry_id = await store.publish(
        args.type, args.data.encode(errors="surrogateescape"), args.id, owner=args.owner
    )
    show(
        {"entry_id": entry_id, "id": args.id or rules.message_id_of(entry_id)},
        as_json=args.json,
    )


async def _attempts(store: Store, args: argparse.Namespace) -> None:
    page = await store.attempt_page(args.partner, after=args.after, limit=args.limit)
    show_page(page, as_json=args.json, columns=ATTEMPT_COLUMNS)


async def _dead_list(store: Store, args: argparse.Namespace) -> None:
    page = await DeadLetters(store.redis, store.settings).page(
        args.partner, after=args.after, limit=args.limit
    )
    show_page(page, as_json=args.json, columns=DEAD_COLUMNS)


async def _dead_replay(store: Store, args: argparse.Namespace) -> None:
    if not (args.all or args.partner or args.ids):
        raise UsageError("say what to replay: dead-letter or message ids, --partner ID, or --all")
    done = await DeadLetters(store.redis, store.settings).replay(
        everything=args.all, partner=args.partner, ids=args.ids or None
    )
    show(done, as_json=args.json)


def add_commands(sub: Any) -> None:
    publish = command(
        sub,
        "publish",
        "publish an event (checked as the router checks it)",
        _publish,
        description="XADD an event to the ingress stream, after the router's own checks.",
    )
    publish.add_argument("type", help="event type, e.g. order.created")
    publish.add_argument("data", help="a JSON object, e.g. '{\"order_id\": 42}'")
    publish.add_argument("--id", help="idempotency key: the same id is delivered once")
    publish.add_argument("--owner", help="only for the partners of this owner (customer)")
    attempts = command(
        sub,
        "attempts",
        "recent delivery attempts of a partner",
        _attempts,
        description="Recent delivery attempts of a partner, newest first.",
    )
    attempts.add_argument("partner", help="the partner's id")
    paged(attempts, 50)
    actions = family(
        sub, "dead-letters", "inspect and replay dead letters", "Inspect and replay dead letters."
    )
    listing = command(
        actions, "list", "newest first", _dead_list, description="Dead letters, newest first."
    )
    listing.add_argument("--partner", help="only this partner's")
    paged(listing, 100)
    again = command(
        actions,
        "replay",
        "send dead-lettered messages again, keeping their webhook-id",
        _dead_replay,
        description="Send dead-lettered messages again, keeping their webhook-id, with a "
        "fresh retry schedule.",
    )
    again.add_argument("ids", nargs="*", help="dead-letter entry ids or message ids")
    again.add_argument("--partner", help="every dead letter of this partner")
    again.add_argument("--all", action="store_true", help="every dead letter")
