"""`notifier partners ...`: the same operations as the admin API's /v1/partners, refused with
the same messages, since both build the same `PartnerIn` / `PartnerPatch` and call `Store`."""

from __future__ import annotations

import argparse
from typing import Any

import msgspec

from notifier import pacing
from notifier.cli.commands import command as declare
from notifier.cli.commands import family
from notifier.cli.output import show
from notifier.errors import Invalid
from notifier.models import (
    PartnerCreated,
    PartnerIn,
    PartnerPatch,
    PartnerUpdated,
    public,
    public_as,
)
from notifier.store import Store

COLUMNS = (
    "id",
    "name",
    "owner",
    "url",
    "events",
    "rate_limit",
    "max_in_flight",
    "enabled",
    "disabled_reason",
)


def _events(text: str) -> list[str]:
    # Spaces after commas are a typing habit; anything else is kept for the rules to judge.
    return [part.strip(" ") for part in text.split(",") if part.strip(" ")]


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not NAME:VALUE")
    return name.strip(), value.strip()


def _json(text: str) -> Any:
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None


def _body(args: argparse.Namespace, creating: bool) -> dict[str, Any]:
    """The API body these flags stand for: only what was given."""
    body: dict[str, Any] = {}
    for flag in (
        "name",
        "url",
        "rate_limit",
        "max_in_flight",
        "transform",
        "secret",
        "owner",
        "filter",
        "signature",
    ):
        if getattr(args, flag, None) is not None:
            body[flag] = getattr(args, flag)
    if args.events is not None:
        body["events"] = _events(args.events)
    if args.headers:
        body["headers"] = dict(args.headers)
    if args.ordered is not None:
        body["ordered"] = args.ordered
    if not creating:
        if args.no_rate_limit:
            body["rate_limit"] = None
        if args.no_transform:
            body["transform"] = None
        if args.no_headers:
            body["headers"] = {}
        if args.no_owner:
            body["owner"] = None
        if args.no_filter:
            body["filter"] = None
    elif args.disabled:
        body["enabled"] = False
    return body


async def _add(store: Store, args: argparse.Namespace) -> None:
    partner, secret = await store.create(msgspec.convert(_body(args, True), PartnerIn))
    show(public_as(partner, PartnerCreated, secret=secret), as_json=args.json)


async def _update(store: Store, args: argparse.Namespace) -> None:
    body = _body(args, False)
    if not body:
        raise Invalid("nothing to change: give at least one option (see --help)")
    partner, secret = await store.change(args.id, msgspec.convert(body, PartnerPatch))
    if secret:
        show(public_as(partner, PartnerUpdated, secret=secret), as_json=args.json)
    else:
        show(public_as(partner, PartnerUpdated), as_json=args.json)


async def _set_enabled(store: Store, args: argparse.Namespace) -> None:
    partner = await store.update(args.id, PartnerPatch(enabled=args.enable))
    show(public(partner), as_json=args.json)


async def _test(store: Store, args: argparse.Namespace) -> None:
    from notifier.engine.sender import Sender  # the HTTP client: only this command needs it

    async with Sender(store.settings) as sender:
        outcome = await store.test(args.id, sender)
    show(outcome, as_json=args.json)
    if not outcome.ok:
        raise Invalid(f"the test was not accepted: {outcome.error}")


async def _list(store: Store, args: argparse.Namespace) -> None:
    listed = [p for p in await store.partners() if args.owner is None or p.owner == args.owner]
    show([public(p) for p in listed], as_json=args.json, columns=COLUMNS)


async def _show(store: Store, args: argparse.Namespace) -> None:
    show(await pacing.partner_shown(store, args.id), as_json=args.json)


async def _remove(store: Store, args: argparse.Namespace) -> None:
    await store.remove(args.id)
    show({"removed": args.id}, as_json=args.json)


async def _rotate(store: Store, args: argparse.Namespace) -> None:
    made = await store.rotate_secret(args.id, args.secret)
    v1a = made.startswith("whpk_")
    # the API's answer, and how long the keys it replaced go on signing
    show(
        {
            "id": args.id,
            "secret": None if v1a else made,
            "public_key": made if v1a else None,
            "previous_secrets_valid_for": f"{store.settings.secret_overlap:g}s",
        },
        as_json=args.json,
    )


def _definition(cmd: argparse.ArgumentParser, creating: bool) -> None:
    cmd.add_argument(
        "--events",
        required=creating,
        help="comma-separated event types, or * for all (required)"
        if creating
        else "comma-separated event types, or * for all",
    )
    cmd.add_argument("--rate-limit", help="at most this many requests, e.g. 50/second")
    cmd.add_argument(
        "--max-in-flight", type=int, help="requests open at once (1 to 1000; default 10)"
    )
    cmd.add_argument(
        "--header",
        dest="headers",
        action="append",
        type=_header,
        metavar="NAME:VALUE",
        help="a header sent with every request (repeat)",
    )
    cmd.add_argument("--transform", type=_json, help="reshape the body: a transform as JSON")
    cmd.add_argument("--owner", help="the customer or account this endpoint belongs to")
    cmd.add_argument("--filter", type=_json, help="only events that match: a filter as JSON")
    cmd.add_argument(
        "--signature",
        choices=("v1", "v1a"),
        help="v1: HMAC-SHA256 with a whsec_ secret (default); v1a: ed25519, notifier keeps "
        "the private key and shows the public one",
    )
    order = cmd.add_mutually_exclusive_group()
    order.add_argument(
        "--ordered", action="store_true", default=None, help="one at a time, in publish order"
    )
    if not creating:
        order.add_argument("--unordered", dest="ordered", action="store_false")
        cmd.add_argument("--name")
        cmd.add_argument("--url")
        cmd.add_argument("--no-rate-limit", action="store_true", help="remove the rate limit")
        cmd.add_argument("--no-transform", action="store_true", help="remove the transform")
        cmd.add_argument("--no-headers", action="store_true", help="remove every header")
        cmd.add_argument("--no-owner", action="store_true", help="remove the owner")
        cmd.add_argument("--no-filter", action="store_true", help="remove the filter")
    else:
        cmd.add_argument("--secret", help="bring your own whsec_ secret")
        cmd.add_argument("--disabled", action="store_true", help="register it disabled")


def add_commands(sub: Any) -> None:
    actions = family(
        sub,
        "partners",
        "register and manage partners",
        "Register and manage partners (as /v1/partners).",
    )

    def command(
        name: str, text: str, handler: Any, with_id: bool = True
    ) -> argparse.ArgumentParser:
        cmd = declare(actions, name, text, handler)
        if with_id:
            cmd.add_argument("id", help="the partner's id (ptn_...)")
        return cmd

    add = command("add", "register a partner; prints its secret, once", _add, with_id=False)
    add.add_argument("name", help="a name for people to read")
    add.add_argument("url", help="where events are POSTed (https)")
    _definition(add, creating=True)
    _definition(
        command("update", "change a partner: only the options given", _update), creating=False
    )
    command("enable", "resume delivery (kept messages are sent)", _set_enabled).set_defaults(
        enable=True
    )
    command("disable", "stop delivery; messages are kept", _set_enabled).set_defaults(enable=False)
    command("list", "every partner", _list, with_id=False).add_argument(
        "--owner", help="only this owner's partners"
    )
    command("show", "one partner (never its secrets)", _show)
    command("test", "send it a signed notifier.test event now and say how it went", _test)
    command("remove", "delete a partner and its messages", _remove)
    command(
        "rotate-secret",
        "a new signing secret; the old one keeps signing for NOTIFIER_SECRET_OVERLAP",
        _rotate,
    ).add_argument("--secret", help="bring your own whsec_ secret")
