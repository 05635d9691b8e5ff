"""Signatures and rotation, secrets at rest, SSRF at delivery, hostile endpoints, logs, fuzzing."""

from __future__ import annotations

import json

import msgspec
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from notifier import events, signing
from notifier.engine.sender import request_headers
from notifier.models import Message, Partner, Secret


def test_partner_headers_cannot_replace_webhook_headers() -> None:
    partner = Partner(
        id="p",
        name="p",
        url="https://x.example.com",
        events=["*"],
        headers={"Webhook-Signature": "forged", "X-Api-Key": "k"},
        secrets=[Secret("whsec_x")],
    )
    headers = request_headers(partner, MESSAGE, b"{}", [b"key"], now=1)
    assert "Webhook-Signature" not in headers
    assert headers["webhook-signature"] == signing.signature_header([b"key"], "m1", 1, b"{}")
    assert headers["X-Api-Key"] == "k"


MESSAGE = Message(id="m1", type="t", timestamp="2026-01-01T00:00:00.000Z", data=msgspec.Raw(b"{}"))


@hsettings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from([b"type", b"data", b"id", b"other"]),
        st.one_of(
            st.binary(max_size=300),
            st.text(max_size=100).map(str.encode),
            st.sampled_from([b"order.created", b"{}", b'{"a": [1]}']),
        ),
    )
)
def test_ingress_validation_never_crashes(fields: dict[bytes, bytes]) -> None:
    result = events.parse("1700000000000-0", fields, max_bytes=1024)
    if isinstance(result, Message):
        assert json.loads(bytes(result.data)).__class__ is dict
        assert len(result.id) <= 128
    else:
        assert result  # a reason


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = [
    "name",
    "url",
    "events",
    "rate_limit",
    "max_in_flight",
    "headers",
    "transform",
    "enabled",
    "ordered",
    "secret",
]
