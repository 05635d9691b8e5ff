"""Cursors of the list routes: opaque to clients (`after=`), a short JSON list inside.

A cursor names the last item of a page by what the list is ordered by (a stream entry id, a
score and member), not by a position, so items added meanwhile neither repeat nor go missing.
A cursor that was not made here is a 400 naming `after`, never a 500.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import msgspec

from notifier.errors import Invalid

MAX_CURSOR = 1000


def make(*parts: str | int | float) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(list(parts))).decode().rstrip("=")


def read(text: str | None, kinds: tuple[type, ...]) -> list[Any] | None:
    """The parts of a cursor made by `make` with values of these types, or None for none."""
    if text is None or text == "":
        return None
    try:
        if len(text) > MAX_CURSOR:
            raise ValueError
        parts = msgspec.json.decode(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        if not isinstance(parts, list) or len(parts) != len(kinds):
            raise ValueError
        if not all(
            isinstance(p, k) and not isinstance(p, bool) for p, k in zip(parts, kinds, strict=True)
        ):
            raise ValueError
    except (ValueError, binascii.Error, msgspec.DecodeError, UnicodeDecodeError):
        raise Invalid("after: not a cursor this API gave (use the `next` of a page)") from None
    return parts
