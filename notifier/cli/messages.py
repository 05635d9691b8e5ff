"""`notifier messages ... | recover`: look a message up, list a partner's, send one again,
recover what failed in a time range; the same operations and checks as the API's."""

from __future__ import annotations

import argparse
from typing import Any

from notifier.cli.commands import command, family, moment, paged
from notifier.cli.output import show, show_page, wants_json
from notifier.messages import Messages
from notifier.store import Store
from notifier.types import COPY_STATES

COLUMNS = ("id", "type", "routed_at", "state", "attempts", "next_attempt_at")


def _messages(store: Store) -> Messages:
    return Messages(store.redis, store.settings)


async def _show(store: Store, args: argparse.Namespace) -> None:
    view = await _messages(store).get(args.id)
    if wants_json(args.json):
        show(view, as_json=True)
        return
    show({"id": view.id, "type": view.type, "timestamp": view.timestamp}, as_json=False)
    show(
        view.deliveries,
        as_json=False,
        columns=("partner", "state", "attempts", "updated_at", "next_attempt_at"),
    )


async def _list(store: Store, args: argparse.Namespace) -> None:
    page = await _messages(store).of_partner(
        args.partner, status=args.status, after=args.after, limit=args.limit
    )
    show_page(page, as_json=args.json, columns=COLUMNS)


async def _resend(store: Store, args: argparse.Namespace) -> None:
    show(await _messages(store).resend(args.partner, args.id), as_json=args.json)


async def _recover(store: Store, args: argparse.Namespace) -> None:
    show(await _messages(store).recover(args.partner, args.since, args.until), as_json=args.json)


def add_commands(sub: Any) -> None:
    actions = family(
        sub,
        "messages",
        "look up, list and resend messages",
        "Look a message up by its webhook-id, list a partner's, send one again.",
    )
    command(
        actions,
        "show",
        "one message and its state for each partner",
        _show,
        description="One message (its webhook-id): the event and, per partner, its state "
        "(pending, in_flight, retrying, delivered, dead) and attempts.",
    ).add_argument("id", help="the message id (the webhook-id partners see)")
    listing = command(
        actions,
        "list",
        "a partner's messages, newest first",
        _list,
        description="A partner's messages, newest first.",
    )
    listing.add_argument("partner", help="the partner's id")
    listing.add_argument("--status", choices=COPY_STATES, help="only those in this state")
    paged(listing, 50)
    again = command(
        actions,
        "resend",
        "send a message to a partner again",
        _resend,
        description="Send a message to a partner again: the same webhook-id, a fresh retry "
        "schedule, whatever its state.",
    )
    again.add_argument("partner", help="the partner's id")
    again.add_argument("id", help="the message id")
    recover = command(
        sub,
        "recover",
        "resend what failed for a partner in a time range",
        _recover,
        description="Resend every message routed to a partner in [--since, --until] that is "
        "waiting for a retry or was dead-lettered (after an outage, say).",
    )
    recover.add_argument("partner", help="the partner's id")
    recover.add_argument(
        "--since",
        required=True,
        type=moment("--since"),
        help="ISO-8601, e.g. 2026-11-24T12:00:00Z",
    )
    recover.add_argument("--until", type=moment("--until"), help="ISO-8601 (default: now)")
