"""The index of subscriptions routes exactly as a scan of every partner would, and follows
partner changes one partner at a time."""

from __future__ import annotations

from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from notifier.models import Partner
from notifier.subscriptions import Subscriptions

TYPES = ["order.created", "order.paid", "refund.issued", "a", "b", "notifier.partner.disabled"]
_patterns = st.lists(st.sampled_from([*TYPES, "*"]), min_size=1, max_size=4)
_ops = st.lists(
    st.tuples(
        st.sampled_from(["put", "remove", "disable", "enable"]), st.integers(0, 9), _patterns
    ),
    max_size=60,
)


def scan(partners: dict[str, Partner], event_type: str) -> list[str]:
    return sorted(p.id for p in partners.values() if p.subscribes(event_type))


@given(_ops)
@hsettings(max_examples=300, deadline=None, derandomize=True)
def test_the_index_routes_as_a_full_scan(ops: list[tuple[str, int, list[str]]]) -> None:
    index = Subscriptions()
    truth: dict[str, Partner] = {}
    for op, n, patterns in ops:
        pid = f"ptn_{n}"
        if op == "put":
            truth[pid] = Partner(id=pid, name=pid, url="https://x", events=patterns)
            index.put(truth[pid])
        elif op == "remove":
            truth.pop(pid, None)
            index.remove(pid)
        elif pid in truth:
            truth[pid].enabled = op == "enable"
            index.put(truth[pid])
        for event_type in [*TYPES, "never.subscribed"]:
            assert [p.id for p in index.targets(event_type)] == scan(truth, event_type)
            # disabled partners are routed to as well: their messages are kept
            assert all(p is truth[p.id] for p in index.targets(event_type))
