"""Playbook outcomes (streams.tasks.outcomes), on six tasks and three accounts worked by hand.

Accounts (daily history 2026-01-01 .. 2026-02-28, renewal dates as days_to_renewal):
- acme: red Jan 1-10, green from Jan 11; renews 2026-06-01 throughout.
- bolt: red throughout, cancelled from Jan 20.
- cora: red Jan 1-14, yellow from Jan 15; renews 2026-01-20, from Jan 20 on 2027-01-20 (renewed).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from streams.tasks.model import HistoryEntry, Task
from streams.tasks.outcomes import AccountDay, history_days, outcome_table, task_outcome

NOW = datetime(2026, 3, 1, tzinfo=UTC)
JAN1 = date(2026, 1, 1)


def at(month: int, day: int, hour: int = 0) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


def days_of(band, canceled_from=None, renewal=lambda d: date(2026, 6, 1)) -> list[dict]:
    out = []
    for n in range(59):
        d = JAN1 + timedelta(days=n)
        out.append(
            {
                "day": d.isoformat(),
                "band": band(d),
                "canceled": canceled_from is not None and d >= canceled_from,
                "days_to_renewal": (renewal(d) - d).days,
            }
        )
    return out


HISTORY = {
    "acme": history_days(days_of(lambda d: "red" if d.day <= 10 and d.month == 1 else "green")),
    "bolt": history_days(days_of(lambda d: "red", canceled_from=date(2026, 1, 20))),
    "cora": history_days(
        days_of(
            lambda d: "red" if d.month == 1 and d.day <= 14 else "yellow",
            renewal=lambda d: date(2026, 1, 20) if d < date(2026, 1, 20) else date(2027, 1, 20),
        )
    ),
}


def task(tid: str, account: str, rule: str, owner: str, opened: datetime, due: datetime, **kw) -> Task:
    history = []
    if kw.get("acknowledged_at"):
        history.append(HistoryEntry(at=kw["acknowledged_at"], by=owner, action="acknowledge"))
    return Task(
        task_id=tid,
        account_id=account,
        rule_id=rule,
        step="call",
        opened_by_alert=f"a-{tid}",
        alert_id=f"a-{tid}",
        owner=owner,
        opened_at=opened,
        due_at=due,
        remind_at=due - timedelta(hours=6),
        history=tuple(history),
        **kw,
    )


ANA, BO = "ana@example.com", "bo@example.com"
TASKS = [
    # done after a 6 h acknowledgement: acme goes green -> saved
    task("t1", "acme", "band_red", ANA, at(1, 1, 10), at(1, 3, 10), state="done", outcome="reached",
         acknowledged_at=at(1, 1, 16), closed_at=at(1, 2, 10)),
    # never acted on (escalated, still open): bolt cancels -> not saved
    task("t2", "bolt", "band_red", ANA, at(1, 5), at(1, 7), escalated_at=at(1, 7)),
    # never acted on: cora goes yellow and renews anyway -> saved (the baseline's)
    task("t3", "cora", "band_red", BO, at(1, 1), at(1, 3), escalated_at=at(1, 3)),
    # acknowledged 48 h after opening (late), then dismissed
    task("t4", "cora", "nps_detractor", BO, at(1, 2), at(1, 3), state="dismissed", reason="known",
         acknowledged_at=at(1, 4), closed_at=at(1, 4, 12)),
    # acknowledged after 3 h, still open
    task("t5", "acme", "nps_detractor", ANA, at(2, 20), at(2, 21), state="acknowledged",
         acknowledged_at=at(2, 20, 3)),
    # the account cancelled before the deadline, nobody acted: neither on time nor late
    task("t6", "bolt", "nps_detractor", ANA, at(1, 15), at(1, 16), state="cancelled", closed_at=at(1, 15, 12)),
]  # fmt: skip


def test_one_task_what_happened_next() -> None:
    o = task_outcome(TASKS[0], HISTORY["acme"], NOW)
    assert (o.category, o.on_time, o.reference_at) == ("done", True, at(1, 2, 10))
    assert (o.band_at_open, o.band_14d, o.band_30d) == ("red", "green", "green")
    assert (o.renewed_30d, o.cancelled_30d, o.saved) == (False, False, True)
    o = task_outcome(TASKS[1], HISTORY["bolt"], NOW)
    assert (o.category, o.on_time, o.reference_at) == ("never_acted", False, at(1, 7))
    assert (o.band_14d, o.band_30d, o.cancelled_30d, o.saved) == ("cancelled", "cancelled", True, False)
    o = task_outcome(TASKS[2], HISTORY["cora"], NOW)
    assert (o.band_14d, o.band_30d, o.renewed_30d, o.saved) == ("yellow", "yellow", True, True)
    o = task_outcome(TASKS[5], HISTORY["bolt"], NOW)
    assert (o.category, o.on_time) == ("cancelled", None)


def test_what_has_not_happened_yet_is_unknown_not_false() -> None:
    late = TASKS[0].model_copy(update={"closed_at": at(2, 20), "acknowledged_at": at(2, 19)})
    o = task_outcome(late, HISTORY["acme"], NOW)
    assert (o.band_14d, o.band_30d, o.renewed_30d, o.cancelled_30d, o.saved) == (None,) * 5
    # before its deadline an untouched task is pending, neither on time nor late
    fresh = TASKS[1].model_copy(update={"opened_at": at(2, 28), "due_at": at(3, 2)})
    o = task_outcome(fresh, HISTORY["bolt"], NOW)
    assert (o.category, o.on_time) == ("pending", None)
    # no history at all: the band at opening is the task's own
    o = task_outcome(TASKS[0].model_copy(update={"band": "red"}), [], NOW)
    assert (o.band_at_open, o.band_14d, o.saved) == ("red", None, False)


def test_per_playbook() -> None:
    table = outcome_table(TASKS, HISTORY, NOW, by="playbook")
    red, nps = table.rows
    assert red.group == "band_red" and nps.group == "nps_detractor"
    assert (red.opened, red.open, red.overdue, red.responded) == (3, 2, 2, 1)
    assert (red.on_time, red.on_time_known, red.on_time_pct, red.median_ack_hours) == (1, 3, 33.3, 6.0)
    assert (red.done, red.dismissed, red.cancelled, red.never_acted) == (1, 0, 0, 2)
    assert red.acted.model_dump() == {
        "tasks": 1, "bands_14d": {"green": 1}, "bands_30d": {"green": 1}, "renewed_30d": 0,
        "cancelled_30d": 0, "red_at_open": 1, "saved": 1, "save_rate": 100.0,
    }  # fmt: skip
    assert red.baseline.model_dump() == {
        "tasks": 2, "bands_14d": {"cancelled": 1, "yellow": 1}, "bands_30d": {"cancelled": 1, "yellow": 1},
        "renewed_30d": 1, "cancelled_30d": 1, "red_at_open": 2, "saved": 1, "save_rate": 50.0,
    }  # fmt: skip
    assert (nps.opened, nps.open, nps.overdue, nps.responded) == (3, 1, 0, 2)
    assert (nps.on_time_pct, nps.median_ack_hours) == (50.0, 25.5)  # 48 h and 3 h
    assert (nps.done, nps.dismissed, nps.cancelled, nps.never_acted) == (0, 1, 1, 0)
    assert nps.acted.save_rate is None and nps.baseline.tasks == 0
    assert (table.total.opened, table.total.on_time_pct, table.total.median_ack_hours) == (6, 40.0, 6.0)


def test_per_csm_and_period() -> None:
    table = outcome_table(TASKS, HISTORY, NOW, by="csm")
    ana, bo = table.rows
    assert (ana.group, ana.opened, ana.open, ana.overdue) == (ANA, 4, 2, 1)
    assert (ana.on_time_pct, ana.median_ack_hours) == (66.7, 4.5)
    assert (ana.acted.save_rate, ana.baseline.save_rate) == (100.0, 0.0)
    assert (bo.group, bo.opened, bo.on_time_pct, bo.median_ack_hours) == (BO, 2, 0.0, 48.0)
    assert (bo.acted.save_rate, bo.baseline.save_rate) == (None, 100.0)
    feb = outcome_table(TASKS, HISTORY, NOW, by="csm", since=date(2026, 2, 1), until=date(2026, 2, 28))
    assert [(r.group, r.opened) for r in feb.rows] == [(ANA, 1)]
    assert outcome_table([], {}, NOW).total.opened == 0


def test_history_entries_from_the_read_model() -> None:
    days = history_days([{"day": "2026-01-02", "band": "red", "days_to_renewal": 3}, {"day": "2026-01-01"}])
    assert days == [
        AccountDay(day=date(2026, 1, 1)),
        AccountDay(day=date(2026, 1, 2), band="red", renewal=date(2026, 1, 5)),
    ]


def test_a_superseded_task_is_its_own_category_unless_its_deadline_passed_first() -> None:
    # cora's yellow task closed when a red one took over: before its deadline it is "superseded",
    # after it the task was never acted on (the baseline), as for a cancellation
    kw = {"state": "superseded", "reason": "band_red opened task t-red", "band": "yellow"}
    early = task("y1", "cora", "band_yellow", "ana@x", at(1, 20), at(1, 27), closed_at=at(1, 22), **kw)
    late = task("y2", "cora", "band_yellow", "ana@x", at(1, 20), at(1, 27), closed_at=at(1, 28), **kw)
    assert task_outcome(early, HISTORY["cora"], NOW).category == "superseded"
    assert task_outcome(late, HISTORY["cora"], NOW).category == "never_acted"
    row = outcome_table([early, late], HISTORY, NOW).total
    assert (row.superseded, row.never_acted, row.opened) == (1, 1, 2)
