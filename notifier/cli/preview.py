"""`notifier preview PARTNER FILE`: what a partner would receive for an event or a routed
message, as POST /v1/partners/{id}/preview answers it; nothing is sent."""

from __future__ import annotations

import argparse
from typing import Any

import msgspec

from notifier.cli.commands import command
from notifier.cli.event_types import read_json
from notifier.cli.output import show
from notifier.errors import Invalid
from notifier.store import Store


async def _preview(store: Store, args: argparse.Namespace) -> None:
    from notifier import preview  # builds bodies with the delivery code: only this needs it

    given = read_json(args.file, "FILE")
    if not isinstance(given, dict):
        raise Invalid('FILE: must hold a JSON object: an event, or {"message_id": ...}')
    body = given if ("event" in given or "message_id" in given) else {"event": given}
    # through JSON text, as the API reads it: the event's data is kept as it was written
    wanted = msgspec.json.decode(msgspec.json.encode(body), type=preview.PreviewIn)
    partner = await store.get(args.partner)
    show(await preview.answer(store, partner, wanted), as_json=args.json)


def add_commands(sub: Any) -> None:
    cmd = command(
        sub,
        "preview",
        "what a partner would receive for an event; nothing is sent",
        _preview,
        description="Whether a partner would receive an event (or a routed message) and why "
        "not, the exact body and the signed headers. Nothing is sent.",
    )
    cmd.add_argument("partner", help="the partner's id (ptn_...)")
    cmd.add_argument(
        "file",
        help='a JSON file (- for stdin): an event {"type", "data", "id"?, "owner"?}, or '
        '{"message_id": ...} for a message routed already',
    )
