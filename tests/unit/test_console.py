"""The console's pure parts: the overview's order and states, its search, the chart's bars and
the durations it shows."""

from __future__ import annotations

from notifier.cli.top import Row, State
from notifier.console.chart import HEIGHT, draw
from notifier.console.overview import Recent, matching, merged
from notifier.console.pages import ago, part, urlencode
from notifier.console.signin import ADDRESSES_KEPT, MOST_WRONG, Guesses
from notifier.models import Partner
from notifier.telemetry.history import Minute


def partner(pid: str, name: str, **extra: object) -> Partner:
    return Partner(id=pid, name=name, url=f"https://{name}.example.com/h", events=["*"], **extra)  # type: ignore[arg-type]


def row(pid: str, state: State, error_rate: float = 0.0, backlog: int = 0) -> Row:
    return Row(pid, pid, 1.0, error_rate, None, backlog, 0.0, 0, state)


def test_every_partner_is_listed_worst_first_with_recent_errors_and_open_breakers() -> None:
    partners = [
        partner("p1", "idle"),
        partner("p2", "retrying"),
        partner("p3", "broken"),
        partner("p4", "off", enabled=False),
        partner("p5", "paced"),
        partner("p6", "erring", owner="acme"),
    ]
    table = [row("p2", "retrying", backlog=5), row("p5", "paced"), row("gone", "breaker open")]
    recent = Recent(
        counts={"p3": Minute(at=0, attempts=4, failures=4), "p6": Minute(0, 10, 5)},
        broken=frozenset({"p3"}),
    )
    shown = merged(partners, table, recent)
    # a removed partner's row is dropped; the ok ones sort by error rate then backlog
    assert [r.name for r in shown] == ["broken", "off", "retrying", "paced", "erring", "idle"]
    assert {r.name: r.state for r in shown} == {
        "broken": "breaker open",
        "off": "disabled",
        "retrying": "retrying",
        "erring": "ok",
        "idle": "ok",
        "paced": "paced",
    }
    assert {r.name: r.error_rate for r in shown}["erring"] == 0.5
    assert {r.name: r.owner for r in shown}["erring"] == "acme"
    by_id = {p.id: p for p in partners}
    assert [r.name for r in matching(shown, by_id, "ERR", None)] == ["erring"]
    assert [r.name for r in matching(shown, by_id, "broken.example", None)] == ["broken"]
    assert [r.name for r in matching(shown, by_id, "", "acme")] == ["erring"]
    assert len(matching(shown, by_id, "", "")) == 5


def test_the_chart_stacks_failures_under_deliveries_scaled_to_the_busiest_minute() -> None:
    minutes = [Minute(at=60 * n, attempts=n * 2, failures=n) for n in range(60)]
    chart = draw(minutes)
    assert chart.peak == 118 and chart.failed == sum(range(60))
    assert chart.delivered == sum(range(60))
    last = chart.bars[-1]
    assert last.failed_height + last.delivered_height == HEIGHT
    assert last.delivered_y + last.delivered_height == last.failed_y
    assert chart.bars[0].failed_height == chart.bars[0].delivered_height == 0
    assert last.label == "00:59 UTC: 59 delivered, 59 failed"
    assert draw([Minute(0, 0, 0)] * 60).peak == 0  # an idle hour draws no bar


def test_durations_and_url_parts_read_as_an_operator_expects() -> None:
    assert [ago(s) for s in (None, 0, 5, 65, 3725, 90_000)] == [
        "-",
        "-",
        "5s",
        "1m 5s",
        "1h 2m",
        "1d 1h",
    ]
    assert part("a/b?c#d%") == "a%2Fb%3Fc%23d%25"
    assert part("bad\udcff") == "bad%FF"  # a byte that was not UTF-8 goes back as it came
    assert urlencode({"partner": "p 1", "after": "x&y"}) == "partner=p%201&after=x%26y"


def test_wrong_tokens_are_counted_per_address_over_a_sliding_minute() -> None:
    guesses = Guesses()
    for n in range(MOST_WRONG):
        assert guesses.wait_s("a", 100.0 + n) == 0
        guesses.missed("a", 100.0 + n)
    assert guesses.wait_s("a", 110.0) == 50.0  # the first of the ten leaves the window at 160
    assert guesses.wait_s("b", 110.0) == 0  # another address is not held back
    assert guesses.wait_s("a", 160.0) == 0
    for n in range(ADDRESSES_KEPT + 5):  # a flood of addresses: memory stays bounded
        guesses.missed(f"x{n}", 200.0)
    assert len(guesses.wrong) == ADDRESSES_KEPT
