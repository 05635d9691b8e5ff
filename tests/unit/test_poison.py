"""Hostile ingress entries: whatever a producer XADDs, routing goes on and nothing is dropped.

Each entry here once stopped the router (and with `notifier run`, the whole process), and a
restarted router claimed the same entry and stopped again.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from notifier import events, rules


def deep(levels: int) -> bytes:
    return b'{"a":' * levels + b"1" + b"}" * levels


# The same rules everywhere: what the router dead-letters, the API refuses as a subscription.


@pytest.mark.parametrize("bad", ["order.created\n", "Order.Created", "x" * 201, "", "a b"])
def test_event_type_rules_are_whole_string_matches(bad: str) -> None:
    assert rules.event_type_problem(bad) is not None
    assert rules.subscription_problem(bad) is not None


def test_a_300_character_type_says_how_long_it_may_be() -> None:
    reason = events.parse("1-0", {b"type": b"a" * 300, b"data": b"{}"}, 1000)
    assert reason == "type is 300 characters long, at most 200 are allowed"


# Property: whatever bytes arrive in whatever fields, parse answers a Message or a reason.

_fields = st.dictionaries(
    st.sampled_from([b"type", b"data", b"id", b"other"]) | st.binary(max_size=8),
    st.binary(max_size=300) | st.sampled_from([deep(400), deep(5000), b"{}", b'{"a":1}']),
    max_size=5,
)


@given(_fields)
@hsettings(max_examples=400, deadline=None, derandomize=True)
def test_parse_never_raises(fields: dict[bytes, bytes]) -> None:
    result = events.parse("1795566738783-0", fields, 1024)
    if isinstance(result, str):
        assert result
    else:
        assert rules.event_type_problem(result.type) is None
        msgspec.json.decode(result.data)  # what reaches partners is valid JSON


@given(st.integers(0, 253_402_300_799_999), st.integers(0, 2**64 - 1))
@hsettings(max_examples=300, deadline=None, derandomize=True)
def test_an_entry_timestamp_is_its_milliseconds_in_iso_8601(ms: int, seq: int) -> None:
    """The message timestamp partners get, from the entry id's ms (the text of each second is
    cached: entries of one batch share a few)."""
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    expected = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert events.entry_timestamp(f"{ms}-{seq}") == expected


# The dead-letter reasons are notifier's own words, whatever the JSON decoder says.


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'{"a": "\xff"}', "data is not a JSON object: it is not UTF-8 text (byte 7)"),
        (b"\xc3", "data is not a JSON object: it is not UTF-8 text (byte 0)"),
        (b'{"a": ', "data is not a JSON object: it is not valid JSON"),
        (b"{'a': 1}", "data is not a JSON object: it is not valid JSON"),
        (b"", "data is not a JSON object: it is not valid JSON"),
        (b"[1, 2]", "data is not a JSON object: it is an array"),
        (b'"text"', "data is not a JSON object: it is a string"),
        (b"12.5", "data is not a JSON object: it is a number"),
        (b"true", "data is not a JSON object: it is a boolean"),
        (b"null", "data is not a JSON object: it is null"),
        (b'{"a": 1} x', "data is not a JSON object: it is not valid JSON"),
        (deep(1000), "data is not a JSON object notifier can read: it nests too deeply"),
    ],
)
def test_each_kind_of_bad_data_has_one_reason_in_notifiers_words(data: bytes, reason: str) -> None:
    assert events.data_problem(data, 1_000_000) == reason
