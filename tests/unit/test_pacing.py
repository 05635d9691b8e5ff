"""Pacing's pure parts: what a throttle is, a pace as the API shows it (whatever Redis holds),
which throttles are absorbed, and the retry schedule of a message some of whose attempts
pacing absorbed."""

from __future__ import annotations

import msgspec
import pytest

from notifier import pacing
from notifier.engine.pacer import HELD_FACTOR, HELD_MIN_MS, Accepted, Pacer
from notifier.engine.settle import decide
from notifier.models import Message, Outcome, Taken, now_ms

SCHEDULE = (1.0, 60.0)


def taken(attempt: int = 1, spared: int = 0) -> Taken:
    message = Message(id="m1", type="t", timestamp="2026-01-01T00:00:00Z", data=msgspec.Raw(b"{}"))
    return Taken("1-0", message, attempt, 0, spared)


@pytest.mark.parametrize(
    ("outcome", "throttle"),
    [
        (Outcome(ok=False, kind="http_4xx", status=429), True),
        (Outcome(ok=False, kind="http_5xx", status=502), True),
        (Outcome(ok=False, kind="http_5xx", status=503), True),
        (Outcome(ok=False, kind="http_5xx", status=504), True),
        (Outcome(ok=False, kind="timeout"), True),
        (Outcome(ok=False, kind="http_5xx", status=500), False),
        (Outcome(ok=False, kind="http_4xx", status=404), False),
        (Outcome(ok=False, kind="connection"), False),
        (Outcome(ok=True, status=200), False),
    ],
)
def test_what_a_throttle_is(outcome: Outcome, throttle: bool) -> None:
    assert pacing.throttles(outcome) is throttle


def test_a_pace_is_shown_as_the_api_says_and_garbage_is_no_pace() -> None:
    now = 1_800_000_000_000
    shown = pacing.shown([b"37.456", b"3.9", str(now - 5000).encode(), b"429", b"0"], now)
    assert shown == pacing.Pacing(
        rate=37.46, concurrency=3, since="2027-01-15T07:59:55.000Z", reason="HTTP 429"
    )
    paused = pacing.shown([b"1", b"1", b"0", b"timeout", str(now + 3000).encode()], now)
    assert paused is not None and paused.reason == "timeout"
    assert paused.paused_until == "2027-01-15T08:00:03.000Z"
    for garbage in (
        [None, None, None, None, None],
        [b"fast", b"1", b"0", b"429", b"0"],
        [b"1", b"1", b"1e400", b"429", b"0"],
        [b"1", b"1", b"0", b"429", b"nan"],
        [b"1", b"1", b"99999999999999999999", b"429", b"0"],
    ):
        assert pacing.shown(garbage, now) is None


def test_a_retry_after_resumes_from_the_answer() -> None:
    answered = Outcome(ok=False, status=429, retry_after=3.0, sent_ms=10_000, latency_ms=250.0)
    assert pacing.resume_ms(answered) == 13_250
    assert pacing.resume_ms(Outcome(ok=False, status=429, sent_ms=10_000)) == 0


def test_only_throttles_of_a_partner_that_accepts_are_absorbed() -> None:
    pacer = Pacer("ptn_unit", True, 10, None)
    throttled = Outcome(ok=False, kind="http_4xx", status=429)
    now = now_ms()
    assert not pacer.absorbs(taken(), throttled, now)  # it has accepted nothing yet
    pacer.count([Outcome(ok=True, status=200)])
    assert pacer.absorbs(taken(), throttled, now_ms())
    assert not pacer.absorbs(taken(spared=pacing.MAX_SPARED), throttled, now_ms())
    assert not pacer.absorbs(taken(), Outcome(ok=False, status=500), now_ms())
    assert not pacer.absorbs(taken(), throttled, now_ms() + pacing.ABSORB_MS)
    off = Pacer("ptn_unit", False, 10, None)
    off.count([Outcome(ok=True, status=200)])
    assert not off.absorbs(taken(), throttled, now_ms())


def test_a_partner_that_accepts_nothing_neither_starts_nor_shrinks_a_pace() -> None:
    """Down, not overloaded: its 503s go on the retry schedule and tell the pace nothing, so
    a partner back from an outage is not left crawling at a pace its outage shrank."""
    throttled = Outcome(ok=False, kind="http_5xx", status=503, sent_ms=now_ms())
    down = Pacer("ptn_down", True, 10, None)
    assert down.told([(taken(), throttled)]) is None
    down.paced = 4  # paced before it went down: the pace hears of no throttle
    told = down.told([(taken(), throttled)])
    assert told is not None and told.throttles == 0
    busy = Pacer("ptn_busy", True, 10, None)
    busy.count([Outcome(ok=True, status=200)])
    told = busy.told([(taken(), throttled)])
    assert told is not None and (told.throttles, told.why) == (1, "503")


def test_the_most_accepted_in_one_second_lately() -> None:
    accepted = Accepted()
    accepted.add(30, 100.2)
    accepted.add(20, 100.9)
    accepted.add(40, 102.5)
    assert accepted.most(103.0) == 50
    assert accepted.most(105.5) == 40  # second 100 is more than five seconds old
    accepted.add(1, 108.0)
    assert accepted.most(108.0) == 1


def test_absorbed_attempts_take_no_step_of_the_schedule() -> None:
    throttled = Outcome(ok=False, kind="http_4xx", status=429, retry_after=2.0, sent_ms=5000)
    now = 100.0
    spared = decide(taken(attempt=1), throttled, SCHEDULE, now, "at", absorbed=True)
    assert (spared.verdict, spared.spared, spared.due_ms) == ("retry", True, 100_000)
    failed = Outcome(ok=False, kind="http_5xx", status=500, error="HTTP 500")
    # the third attempt after two absorbed ones is the first of the schedule...
    third = decide(taken(attempt=3, spared=2), failed, SCHEDULE, now, "at")
    assert third.verdict == "retry" and 1.0 <= third.wait <= 1.1
    # ...and the schedule runs out after its own attempts, not the absorbed ones
    last = decide(taken(attempt=5, spared=2), failed, SCHEDULE, now, "at")
    assert last.verdict == "dead"
    assert last.reason == "gave up after 5 attempts (2 of them throttled and paced): HTTP 500"


def test_a_request_open_eight_times_the_usual_answer_is_held() -> None:
    """A partner that refuses by holding requests says so only a timeout later: a request
    open HELD_FACTOR times its usual answer (and HELD_MIN_MS) is told to the pace as held,
    once, and only while that is well under the timeout and the partner accepts requests."""
    pacer = Pacer("ptn_held", True, 10, None, quiet_ms=3000)
    assert pacer.held_after_ms() is None  # no answer seen yet: no usual time
    pacer.count([Outcome(ok=True, status=200, latency_ms=10.0)])
    assert pacer.held_after_ms() == HELD_MIN_MS
    pacer.count([Outcome(ok=True, status=200, latency_ms=100.0) for _ in range(40)])
    usual = pacer.accepted.usual_ms
    assert 90 < usual < 100 and pacer.held_after_ms() == int(HELD_FACTOR * usual)
    now = now_ms()
    open_ = {"a": taken_at(now - 2000), "b": taken_at(now - 900), "c": taken_at(now - 10)}
    assert pacer.until_held(open_, now - 2000) == pytest.approx(
        HELD_FACTOR * usual / 1000, abs=0.002
    )
    told = pacer.tell_held(open_, now)
    assert told is not None and (told.throttles, told.why) == (2, "held")
    assert told.latest_sent_ms == now - 900 and told.quiet_ms == 3000
    assert pacer.tell_held(open_, now) is None  # told once
    assert pacer.until_held(open_, now) == pytest.approx(
        HELD_FACTOR * usual / 1000 - 0.01, abs=0.002
    )
    pacer.forget_held(["a", "b"])
    assert pacer.told_held == set()
    # not when the timeout comes about as soon, nor with pacing off
    assert Pacer("ptn_held", True, 10, None, quiet_ms=1500).held_after_ms() is None
    assert Pacer("ptn_held", False, 10, None, quiet_ms=3000).held_after_ms() is None
    assert Pacer("ptn_held", False, 10, None).tell_held(open_, now) is None


def taken_at(ms: int) -> Taken:
    return msgspec.structs.replace(taken(), taken_ms=ms)
