"""The index of subscriptions routes exactly as a scan of every partner would, owners and
filters included, and follows partner changes one partner at a time."""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from notifier.models import Message, Partner
from notifier.subscriptions import EventView, Subscriptions

TYPES = ["order.created", "order.paid", "refund.issued", "a", "b", "notifier.partner.disabled"]
OWNERS = [None, "acme", "globex", "initech"]
FILTERS = [None, {"data.total": {"$gt": 100}}, {"data.country": "DE"}, {"type": {"$ne": "a"}}]
_patterns = st.lists(st.sampled_from([*TYPES, "*"]), min_size=1, max_size=4)
_ops = st.lists(
    st.tuples(
        st.sampled_from(["put", "remove", "disable", "enable"]),
        st.integers(0, 9),
        _patterns,
        st.sampled_from(OWNERS),
        st.sampled_from(FILTERS),
    ),
    max_size=60,
)
_events = st.lists(
    st.tuples(
        st.sampled_from([*TYPES, "never.subscribed"]),
        st.sampled_from([*OWNERS, "nobody"]),
        st.fixed_dictionaries({"total": st.integers(0, 200), "country": st.sampled_from("DEF")}),
    ),
    min_size=1,
    max_size=8,
)


def plain_match(spec: dict[str, Any] | None, event: dict[str, Any]) -> bool:
    """The few filters above, by hand."""
    if spec is None:
        return True
    if "data.total" in spec:
        return bool(event["data"]["total"] > 100)
    if "data.country" in spec:
        return bool(event["data"]["country"] == "DE")
    return bool(event["type"] != "a")


def scan(
    partners: dict[str, Partner], event_type: str, owner: str | None, event: dict[str, Any]
) -> tuple[list[str], list[str]]:
    """Subscribed, of the event's owner when it has one; then its filter."""
    chosen = sorted(
        p.id
        for p in partners.values()
        if p.subscribes(event_type) and (owner is None or p.owner == owner)
    )
    kept = [pid for pid in chosen if plain_match(partners[pid].filter, event)]
    return kept, [pid for pid in chosen if pid not in kept]


@given(_ops, _events)
@hsettings(max_examples=300, deadline=None, derandomize=True)
def test_the_index_routes_as_a_full_scan(
    ops: list[tuple[str, int, list[str], str | None, Any]],
    events: list[tuple[str, str | None, dict[str, Any]]],
) -> None:
    index = Subscriptions()
    truth: dict[str, Partner] = {}
    for op, n, patterns, owner, spec in ops:
        pid = f"ptn_{n}"
        if op == "put":
            truth[pid] = Partner(
                id=pid, name=pid, url="https://x", events=patterns, owner=owner, filter=spec
            )
            index.put(truth[pid])
        elif op == "remove":
            truth.pop(pid, None)
            index.remove(pid)
        elif pid in truth:
            truth[pid].enabled = op == "enable"
            index.put(truth[pid])
        for event_type, event_owner, data in events:
            message = Message(
                id="m",
                type=event_type,
                timestamp="2026-11-24T12:00:00.000Z",
                data=msgspec.Raw(msgspec.json.encode(data)),
                owner=event_owner,
            )
            body = {"type": event_type, "timestamp": message.timestamp, "data": data}
            found = index.targets(event_type, event_owner, EventView(message))
            kept, filtered = scan(truth, event_type, event_owner, body)
            assert [p.id for p in found.partners] == kept
            assert found.filtered == filtered
            # disabled partners are routed to as well: their messages are kept
            assert all(p is truth[p.id] for p in found.partners)
            # without an event to filter on, every candidate
            unfiltered = index.targets(event_type, event_owner).partners
            assert [p.id for p in unfiltered] == sorted(kept + filtered)


def test_an_event_is_decoded_once_for_every_filter() -> None:
    index = Subscriptions(
        Partner(id=f"p{n}", name="p", url="https://x", events=["*"], filter={"data.n": n})
        for n in range(50)
    )
    message = Message(id="m", type="t", timestamp="x", data=msgspec.Raw(b'{"n": 7}'))
    view = EventView(message)
    found = index.targets("t", None, view)
    assert [p.id for p in found.partners] == ["p7"]
    assert len(found.filtered) == 49
    assert view.body is view.body


def test_many_owners_cost_a_lookup_not_a_scan() -> None:
    """Routing an owned event reads only that owner's entries: the candidates of 10,000 owners'
    partners are found without looking at the others (a scan would touch every partner)."""
    partners = [
        Partner(id=f"p{n:05}", name="p", url="https://x", events=["order.created"], owner=f"o{n}")
        for n in range(10_000)
    ]
    index = Subscriptions(partners)
    touched: list[str] = []

    class Counting(dict[str, Partner]):
        def __getitem__(self, key: str) -> Partner:
            touched.append(key)
            return super().__getitem__(key)

    index._partners = Counting(index._partners)
    assert [p.id for p in index.targets("order.created", "o4242").partners] == ["p04242"]
    assert touched == ["p04242"]
    assert index.targets("order.created", "o-unknown").partners == []
