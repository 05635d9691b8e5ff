"""`notifier publish | attempts | dead-letters`: events in, what happened to them out."""

from __future__ import annotations

import argparse
from typing import Any

from notifier import rules
from notifier.cli.output import UsageError, limit_arg, show, show_page
from notifier.cli.store import with_store
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
    json_flag = {"action": "store_true", "help": "print JSON (also when piped)"}

    publish = sub.add_parser(
        "publish",
        help="publish an event (checked as the router checks it)",
        description="XADD an event to the ingress stream, after the router's own checks.",
    )
    publish.add_argument("type", help="event type, e.g. order.created")
    publish.add_argument("data", help="a JSON object, e.g. '{\"order_id\": 42}'")
    publish.add_argument("--id", help="idempotency key: the same id is delivered once")
    publish.add_argument("--owner", help="only for the partners of this owner (customer)")
    publish.add_argument("--json", **json_flag)
    publish.set_defaults(handler=with_store(_publish))

    attempts = sub.add_parser(
        "attempts",
        help="recent delivery attempts of a partner",
        description="Recent delivery attempts of a partner, newest first.",
    )
    attempts.add_argument("partner", help="the partner's id")
    attempts.add_argument("--limit", type=limit_arg, default=50, help="1 to 1000 (default 50)")
    attempts.add_argument("--after", help="the cursor a previous page printed")
    attempts.add_argument("--json", **json_flag)
    attempts.set_defaults(handler=with_store(_attempts))

    dead = sub.add_parser(
        "dead-letters",
        help="inspect and replay dead letters",
        description="Inspect and replay dead letters.",
    )
    actions = dead.add_subparsers(
        dest="action", required=True, metavar="ACTION", parser_class=type(dead)
    )
    listing = actions.add_parser(
        "list", help="newest first", description="Dead letters, newest first."
    )
    listing.add_argument("--partner", help="only this partner's")
    listing.add_argument("--limit", type=limit_arg, default=100, help="1 to 1000 (default 100)")
    listing.add_argument("--after", help="the cursor a previous page printed")
    listing.add_argument("--json", **json_flag)
    listing.set_defaults(handler=with_store(_dead_list))
    again = actions.add_parser(
        "replay",
        help="send dead-lettered messages again, keeping their webhook-id",
        description="Send dead-lettered messages again, keeping their webhook-id, with a "
        "fresh retry schedule.",
    )
    again.add_argument("ids", nargs="*", help="dead-letter entry ids or message ids")
    again.add_argument("--partner", help="every dead letter of this partner")
    again.add_argument("--all", action="store_true", help="every dead letter")
    again.add_argument("--json", **json_flag)
    again.set_defaults(handler=with_store(_dead_replay))
