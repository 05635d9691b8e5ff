"""Reading the message index's fields (lua/index.lua writes them)."""

from __future__ import annotations

from notifier.message_index import CopyRecord, read_entry

EVENT = b'{"id":"m1","type":"t","timestamp":"2026-01-01T00:00:00Z","data":{"a":"x\\ny"}}'


def test_a_field_holds_its_copies_and_its_event() -> None:
    dead = b'{"s":"dead","t":5,"e":"7-1","n":3,"x":"9-0"}'
    copies, event = read_entry(b"ptn_a 1700000000000-3\tptn_b " + dead + b"\n" + EVENT)
    assert event == EVENT
    assert copies == {
        "ptn_a": CopyRecord(s="pending", t=1700000000000, e="1700000000000-3"),
        "ptn_b": CopyRecord(s="dead", t=5, e="7-1", n=3, x="9-0"),
    }


def test_a_field_written_before_copies_were_kept_in_it_is_its_event() -> None:
    # an event whose data holds a newline of its own: still the event, with no copies
    legacy = EVENT.replace(b"\\n", b"\n")
    assert read_entry(legacy) == ({}, legacy)
