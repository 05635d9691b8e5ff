"""`notifier top`'s table from readings: rates over the reports' own times, restarts, order."""

from __future__ import annotations

from notifier.cli.top import Readings, rows
from notifier.partners import Pacing
from notifier.telemetry.backlog import PartnerBacklog, Snapshot
from notifier.telemetry.reports import LATENCY_BUCKETS, PartnerTotals, ProcessReport


def report(at: float, attempts: int, failures: int = 0, fast: int = 0) -> ProcessReport:
    latency = [0] * (len(LATENCY_BUCKETS) + 1)
    latency[0] = fast
    latency[3] = attempts - fast  # 50 ms
    return ProcessReport(
        name="d1",
        role="deliver",
        at=at,
        partners={"ptn_a": PartnerTotals(attempts=attempts, failures=failures, latency=latency)},
    )


def snapshot(*partners: PartnerBacklog) -> Snapshot:
    return Snapshot(
        at=0, partners_registered=3, partners=list(partners), ingress_length=0, ingress_lag_s=0.0
    )


def backlog(pid: str, **kw: object) -> PartnerBacklog:
    fields: dict[str, object] = {
        "new": 0,
        "in_flight": 0,
        "retrying": 0,
        "oldest_age_s": 0.0,
        "breaker_open": False,
        "disabled": False,
        **kw,
    }
    return PartnerBacklog(id=pid, name=pid, **fields)  # type: ignore[arg-type]


def test_rates_are_the_change_between_two_reports_over_their_own_times() -> None:
    readings = Readings()
    readings.add({"d1": report(100.0, 100)})
    readings.add({"d1": report(100.0, 100)})  # the same report again: no new reading
    readings.add({"d1": report(102.0, 140, failures=10, fast=40)})
    totals, table = rows(snapshot(), readings.pairs, {"ptn_a": "shop"})
    [row] = table
    assert (row.name, row.rate, row.error_rate, row.p95_ms) == ("shop", 20.0, 0.25, 5.0)
    assert totals.rate == 20.0


def test_a_restarted_process_counts_from_zero() -> None:
    readings = Readings()
    readings.add({"d1": report(100.0, 5000)})
    readings.add({"d1": report(102.0, 30)})  # restarted: its counters went down
    [row] = rows(snapshot(), readings.pairs)[1]
    assert row.rate == 15.0


def test_rows_are_worst_first() -> None:
    table = rows(
        snapshot(
            backlog("ok"),
            backlog("retry", retrying=2),
            # a paced partner's absorbed throttles wait in `due` a moment: it is still paced
            backlog(
                "slow", retrying=1, pacing=Pacing(rate=4.5, concurrency=1, since="", reason="")
            ),
            backlog("off", disabled=True),
            backlog("broken", breaker_open=True, retrying=5),
        ),
        {},
    )[1]
    assert [(r.partner, r.state) for r in table] == [
        ("broken", "breaker open"),
        ("off", "disabled"),
        ("retry", "retrying"),
        ("slow", "paced"),
        ("ok", "ok"),
    ]


def test_by_owner_adds_up_an_owners_partners_worst_state_first() -> None:
    from notifier.cli.top import Row, by_owner

    def row(pid: str, owner: str, **kw: object) -> Row:
        fields: dict[str, object] = {
            "rate": 10.0,
            "error_rate": 0.0,
            "p95_ms": 50.0,
            "backlog": 1,
            "oldest_s": 1.0,
            "in_flight": 1,
            "state": "ok",
            **kw,
        }
        return Row(partner=pid, name=pid, owner=owner, **fields)  # type: ignore[arg-type]

    table = [
        row("a1", "acme", rate=30.0, error_rate=0.5, p95_ms=250.0, oldest_s=9.0),
        row("a2", "acme", rate=10.0, state="retrying", backlog=5),
        row("g1", "globex"),
        row("n1", "", p95_ms=None),
    ]
    acme, *rest = by_owner(table)
    assert acme.name == "acme (2)" and acme.state == "retrying"
    assert acme.rate == 40.0 and acme.error_rate == 15.0 / 40.0
    assert (acme.p95_ms, acme.backlog, acme.oldest_s, acme.in_flight) == (250.0, 6, 9.0, 2)
    assert sorted(r.name for r in rest) == ["(no owner) (1)", "globex (1)"]
