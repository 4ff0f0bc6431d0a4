"""Playbook outcomes: what happened after each task, and whether acting on a playbook beats not acting.

Pure: the tasks (as the read model keeps them: every task ever written, closed ones too), each account's
daily band history (``{p}history:{account_id}``, the day's last snapshot) and ``now`` in; figures out.
docs/tasks.md ("Outcomes") has the definitions; tests/unit/test_task_outcomes.py works them by hand.

- A task is **acted on** once a person acknowledged, completed or dismissed it. Its outcome is read from
  when it closed (``closed_at``). A task **never acted on** is one whose deadline passed with no person
  touching it (open and escalated, or cancelled after the deadline): its outcome is read from its
  deadline, so that it is the baseline the playbook is measured against.
- Band 14 / 30 days after: the account's band on that day (the latest day known at or before it),
  ``cancelled`` once the account cancelled, unknown until the day has come.
- Save rate: among tasks done (baseline: never acted on) on an account that was red when the task
  opened and whose 30 days have passed, the share whose account was out of red on some day within the
  30 days and had not cancelled by their end.
"""

from __future__ import annotations

import statistics
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field

from streams.tasks.model import SYSTEM, Task

Category = Literal["done", "dismissed", "cancelled", "superseded", "never_acted", "pending"]
GroupBy = Literal["playbook", "csm"]
SAVE_WINDOW = timedelta(days=30)
HUMAN_VERBS = frozenset({"acknowledge", "complete", "dismiss"})


class AccountDay(BaseModel):
    """One day of an account's history: the day's last band, whether it had cancelled, its renewal date."""

    day: date
    band: str | None = None
    canceled: bool = False
    renewal: date | None = None


class TaskOutcome(BaseModel):
    task_id: str
    account_id: str
    account_name: str | None = None
    rule_id: str
    owner: str
    state: str
    category: Category
    opened_at: datetime
    due_at: datetime
    #: When a person first responded (acknowledged, or completed/dismissed without acknowledging).
    responded_at: datetime | None = None
    on_time: bool | None = None  # None: not known yet (or the account cancelled before the deadline)
    #: Where "what happened next" is read from: closed_at, or the deadline for a task never acted on.
    reference_at: datetime | None = None
    band_at_open: str | None = None
    band_14d: str | None = None
    band_30d: str | None = None
    renewed_30d: bool | None = None
    cancelled_30d: bool | None = None
    #: Red when opened and the 30 days passed: back out of red within them (and not cancelled)?
    saved: bool | None = None


class OutcomeFigures(BaseModel):
    """What happened after a set of tasks (done ones, or those never acted on)."""

    tasks: int = 0
    bands_14d: dict[str, int] = Field(default_factory=dict)  # red/yellow/green/cancelled, known ones only
    bands_30d: dict[str, int] = Field(default_factory=dict)
    renewed_30d: int = 0
    cancelled_30d: int = 0
    red_at_open: int = 0  # the save rate's denominator: red when opened, 30 days passed
    saved: int = 0
    save_rate: float | None = None  # saved / red_at_open x 100


class OutcomeRow(BaseModel):
    group: str  # the playbook (rule id) or the owner (a CSM's email, role:manager)
    opened: int = 0
    open: int = 0  # open or acknowledged now
    overdue: int = 0  # open, nobody responded, deadline passed
    responded: int = 0
    on_time: int = 0
    on_time_known: int = 0
    on_time_pct: float | None = None  # responded before the deadline / tasks whose deadline decided it
    median_ack_hours: float | None = None
    done: int = 0
    dismissed: int = 0
    cancelled: int = 0
    superseded: int = 0  # closed when a superseding playbook opened (yellow -> red), before its deadline
    never_acted: int = 0
    acted: OutcomeFigures = Field(default_factory=OutcomeFigures)  # over tasks done
    baseline: OutcomeFigures = Field(default_factory=OutcomeFigures)  # over tasks never acted on


class OutcomeTable(BaseModel):
    by: GroupBy
    now: datetime
    since: date | None = None
    until: date | None = None
    rows: list[OutcomeRow]
    total: OutcomeRow


def history_days(entries: Iterable[Mapping]) -> list[AccountDay]:
    """The read model's daily history entries (``day``, ``band``, ``canceled``, ``days_to_renewal``)
    as :class:`AccountDay`, oldest first."""
    out = []
    for e in entries:
        day = date.fromisoformat(str(e["day"]))
        left = e.get("days_to_renewal")
        out.append(
            AccountDay(
                day=day,
                band=e.get("band"),
                canceled=bool(e.get("canceled")),
                renewal=None if left is None else day + timedelta(days=int(left)),
            )
        )
    return sorted(out, key=lambda d: d.day)


def _on(days: Sequence[AccountDay], keys: Sequence[date], day: date) -> AccountDay | None:
    """The latest entry at or before ``day`` (the band carries over days without a snapshot)."""
    i = bisect_right(keys, day)
    return days[i - 1] if i else None


def _band_on(days: Sequence[AccountDay], keys: Sequence[date], day: date) -> str | None:
    entry = _on(days, keys, day)
    if entry is None:
        return None
    return "cancelled" if entry.canceled else entry.band


def _responded(task: Task) -> datetime | None:
    by_person = [h.at for h in task.history if h.action in HUMAN_VERBS and h.by != SYSTEM]
    if task.acknowledged_at is not None:
        by_person.append(task.acknowledged_at)
    return min(by_person) if by_person else None


def task_outcome(task: Task, days: Sequence[AccountDay], now: datetime) -> TaskOutcome:
    """One task's outcome (``days``: the account's history, oldest first)."""
    keys = [d.day for d in days]
    responded = _responded(task)
    if task.state in ("done", "dismissed"):
        category: Category = task.state  # type: ignore[assignment]
    elif (
        responded is None and now >= task.due_at and (task.closed_at is None or task.closed_at >= task.due_at)
    ):
        category = "never_acted"
    elif task.state in ("cancelled", "superseded"):
        category = task.state  # type: ignore[assignment]
    else:
        category = "pending"
    if responded is not None:
        on_time: bool | None = responded <= task.due_at
    elif now >= task.due_at and (task.closed_at is None or task.closed_at >= task.due_at):
        on_time = False
    else:
        on_time = None
    ref = task.due_at if category == "never_acted" else task.closed_at if category != "pending" else None
    out = TaskOutcome(
        task_id=task.task_id,
        account_id=task.account_id,
        account_name=task.account_name,
        rule_id=task.rule_id,
        owner=task.owner or f"role:{task.owner_role}",
        state=task.state,
        category=category,
        opened_at=task.opened_at,
        due_at=task.due_at,
        responded_at=responded,
        on_time=on_time,
        reference_at=ref,
        band_at_open=_band_on(days, keys, task.opened_at.date()) or task.band,
    )
    if ref is None:
        return out
    today = now.date()
    start = ref.date()
    for n, field in ((14, "band_14d"), (30, "band_30d")):
        if start + timedelta(days=n) <= today:
            setattr(out, field, _band_on(days, keys, start + timedelta(days=n)))
    end = start + timedelta(days=30)
    window = [d for d in days if start < d.day <= min(end, today)]
    complete = end <= today
    cancelled = any(d.canceled for d in window)
    before = _on(days, keys, start)
    renewal = before.renewal if before is not None else None
    renewed = renewal is not None and any(
        d.renewal is not None and d.renewal > renewal and not d.canceled for d in window
    )
    out.cancelled_30d = True if cancelled else (False if complete else None)
    out.renewed_30d = True if renewed else (False if complete else None)
    if out.band_at_open == "red" and complete:
        out.saved = not cancelled and any(d.band in ("yellow", "green") for d in window)
    return out


def _figures(outcomes: Sequence[TaskOutcome]) -> OutcomeFigures:
    f = OutcomeFigures(tasks=len(outcomes))
    for o in outcomes:
        if o.band_14d is not None:
            f.bands_14d[o.band_14d] = f.bands_14d.get(o.band_14d, 0) + 1
        if o.band_30d is not None:
            f.bands_30d[o.band_30d] = f.bands_30d.get(o.band_30d, 0) + 1
        f.renewed_30d += bool(o.renewed_30d)
        f.cancelled_30d += bool(o.cancelled_30d)
        if o.saved is not None:
            f.red_at_open += 1
            f.saved += o.saved
    f.save_rate = round(100 * f.saved / f.red_at_open, 1) if f.red_at_open else None
    return f


def summarize(group: str, outcomes: Sequence[TaskOutcome], now: datetime) -> OutcomeRow:
    """One row of figures over the outcomes of a group of tasks."""
    row = OutcomeRow(group=group, opened=len(outcomes))
    waits = []
    for o in outcomes:
        if o.state in ("open", "acknowledged"):
            row.open += 1
            row.overdue += o.responded_at is None and now >= o.due_at
        if o.responded_at is not None:
            row.responded += 1
            waits.append((o.responded_at - o.opened_at).total_seconds() / 3600)
        if o.on_time is not None:
            row.on_time_known += 1
            row.on_time += o.on_time
        row.done += o.category == "done"
        row.dismissed += o.category == "dismissed"
        row.cancelled += o.category == "cancelled"
        row.superseded += o.category == "superseded"
        row.never_acted += o.category == "never_acted"
    row.on_time_pct = round(100 * row.on_time / row.on_time_known, 1) if row.on_time_known else None
    row.median_ack_hours = round(statistics.median(waits), 2) if waits else None
    row.acted = _figures([o for o in outcomes if o.category == "done"])
    row.baseline = _figures([o for o in outcomes if o.category == "never_acted"])
    return row


def outcome_table(
    tasks: Iterable[Task],
    history: Mapping[str, Sequence[AccountDay]],
    now: datetime,
    by: GroupBy = "playbook",
    since: date | None = None,
    until: date | None = None,
) -> OutcomeTable:
    """Figures per playbook or per owner over the tasks opened between ``since`` and ``until``
    (inclusive days, UTC), and for all of them together; rows by tasks opened, most first."""
    chosen = [
        t
        for t in tasks
        if (since is None or t.opened_at.date() >= since) and (until is None or t.opened_at.date() <= until)
    ]
    outcomes = [task_outcome(t, history.get(t.account_id, ()), now) for t in chosen]
    groups: dict[str, list[TaskOutcome]] = {}
    for o in outcomes:
        groups.setdefault(o.rule_id if by == "playbook" else o.owner, []).append(o)
    rows = [summarize(g, os, now) for g, os in groups.items()]
    rows.sort(key=lambda r: (-r.opened, r.group))
    return OutcomeTable(
        by=by, now=now, since=since, until=until, rows=rows, total=summarize("all", outcomes, now)
    )
