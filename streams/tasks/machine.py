"""The task state machine: ``apply(task | None, event, now) -> (task, notices)``, pure.

open -> acknowledged -> done (outcome) | dismissed (reason); an account's cancellation closes any
open task as cancelled. A firing alert of a rule with a playbook opens a task, or updates the open
task of the same account and playbook. One slide, one open task: a task opened by a rule that
supersedes others (band_red over band_yellow) closes their open tasks on the account as superseded,
and while it is open their alerts open none. Deadlines: one reminder before ``due_at`` and, if nobody
acknowledged it, one escalation to the manager role at ``due_at``, both stamped with the time they
were due (event-time exact in a replay; the caller passes ``now``, never read here).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rules.model import Action, AlertEvent
from streams.tasks.model import (
    MAX_HISTORY,
    SYSTEM,
    DeadlineTick,
    HistoryEntry,
    Task,
    TaskAction,
    TaskBook,
    TaskNotice,
    TaskStep,
    task_id,
)

#: A reminder comes this long before the deadline at most (a quarter of the time given, if less).
REMIND_LEAD = timedelta(hours=12)
#: Closed tasks kept per account in its book (the compacted topic keeps the book, not the past).
KEEP_CLOSED = 50
#: Applied action ids remembered per account (redelivery and double clicks are much more recent).
KEEP_APPLIED = 500


class TaskError(ValueError):
    """An action that cannot be applied; the message says why (an HTTP 4xx, nothing changed)."""


class IllegalTransition(TaskError):
    pass


class UnknownTask(TaskError):
    pass


@dataclass(frozen=True)
class AlertSeen:
    """An alert from ``cs.alerts``; ``time_zone`` is the account's (IANA name), when known."""

    alert: AlertEvent
    time_zone: str | None = None


@dataclass(frozen=True)
class AccountCancelled:
    account_id: str
    at: datetime


Event = AlertSeen | AccountCancelled | TaskAction | DeadlineTick


def alert_event(
    alert: AlertEvent, cancel_rules: Collection[str], default_zone: str | None
) -> tuple[datetime, Event]:
    """An alert as the machine's event, and its event time (what moves a replay's clock): a firing
    cancellation rule closes the account's tasks; any other alert is seen in the account's time zone
    (else ``default_zone``)."""
    at = alert.ends_at or alert.starts_at
    if alert.status == "firing" and alert.rule_id in cancel_rules:
        return at, AccountCancelled(alert.account_id, alert.starts_at)
    return at, AlertSeen(alert, alert.account.time_zone or default_zone)


def _zone(name: str | None) -> ZoneInfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def due_time(opened_at: datetime, within: int | str, time_zone: str | None = None) -> datetime:
    """When a step opened at ``opened_at`` is due: ``within`` seconds later, or for ``same_day`` the
    end of that day in the account's time zone (UTC when unknown)."""
    if within == "same_day":
        zone = _zone(time_zone) or UTC
        local = opened_at.astimezone(zone)
        nxt = local.date() + timedelta(days=1)
        return datetime(nxt.year, nxt.month, nxt.day, tzinfo=zone).astimezone(UTC)
    return (opened_at + timedelta(seconds=int(within))).astimezone(UTC)


def remind_time(opened_at: datetime, due_at: datetime) -> datetime:
    return due_at - min((due_at - opened_at) / 4, REMIND_LEAD)


def _notice(kind: str, task: Task, at: datetime) -> TaskNotice:
    to_role = "manager" if kind == "escalation" else task.owner_role
    digest = hashlib.sha256(f"{task.task_id}\x00{kind}\x00{at.isoformat()}".encode()).hexdigest()[:24]
    return TaskNotice(
        notice_id=digest,
        kind=kind,  # type: ignore[arg-type]
        task_id=task.task_id,
        account_id=task.account_id,
        at=at,
        to_role=to_role,  # type: ignore[arg-type]
        to=task.owner if to_role == task.owner_role else None,
        task=task,
    )


def _log(
    task: Task, at: datetime, by: str, action: str, detail: str | None = None, **changes: object
) -> Task:
    history = (*task.history, HistoryEntry(at=at, by=by, action=action, detail=detail))[-MAX_HISTORY:]
    return task.model_copy(update={**changes, "history": history})


def _open(alert: AlertEvent, playbook: Action, time_zone: str | None) -> Task:
    opened = alert.starts_at.astimezone(UTC)
    assert playbook.respond_within is not None
    due = due_time(opened, playbook.respond_within, time_zone)
    task = Task(
        task_id=task_id(alert.account_id, alert.rule_id, alert.alert_id),
        account_id=alert.account_id,
        account_name=alert.account.name,
        rule_id=alert.rule_id,
        type=playbook.type,
        supersedes=tuple(alert.supersedes),
        step=playbook.step,
        steps=tuple(
            TaskStep(step=s.step, due_at=due_time(opened, s.within, time_zone)) for s in playbook.steps
        ),
        opened_by_alert=alert.alert_id,
        alert_id=alert.alert_id,
        alert_ids=(alert.alert_id,),
        owner_role=playbook.owner,
        owner=alert.account.csm_email if playbook.owner == "csm" else None,
        opened_at=opened,
        due_at=due,
        remind_at=remind_time(opened, due),
        score=alert.score,
        band=alert.band,
        summary=alert.summary,
    )
    return _log(task, opened, SYSTEM, "opened", f"alert {alert.rule_id} fired")


def next_deadline(task: Task) -> datetime | None:
    """The next time the clock changes this task (a reminder or the escalation), or None."""
    if task.state != "open" or task.escalated_at is not None:
        return None
    remind = _reminder_due(task)
    return remind if remind is not None else task.due_at


def _reminder_due(task: Task) -> datetime | None:
    if task.reminded_at is not None:
        return None
    at = max(task.remind_at, task.snoozed_until or task.remind_at)
    return at if at < task.due_at else None


def _deadlines(task: Task, now: datetime) -> tuple[Task, list[TaskNotice]]:
    """Reminder and escalation of an unacknowledged task whose time has come by ``now``, each
    stamped when it was due: a clock that jumps past both (a replay between two alerts) gives
    what a live clock would have given, in the same order."""
    notices: list[TaskNotice] = []
    if task.state != "open" or task.escalated_at is not None:
        return task, notices
    remind = _reminder_due(task)
    if remind is not None and now >= remind:
        task = _log(task, remind, SYSTEM, "reminded", None, reminded_at=remind)
        notices.append(_notice("reminder", task, remind))
    if now >= task.due_at:
        task = _log(
            task,
            task.due_at,
            SYSTEM,
            "escalated",
            "not acknowledged by the deadline",
            escalated_at=task.due_at,
        )
        notices.append(_notice("escalation", task, task.due_at))
    return task, notices


def _human(task: Task, a: TaskAction) -> tuple[Task, list[TaskNotice]]:
    at, state = a.at, task.state
    terminal = not task.is_open
    if a.action == "acknowledge":
        if state == "acknowledged":
            return task, []
        if terminal:
            raise IllegalTransition(f"task {task.task_id} is {state}: it cannot be acknowledged")
        return _log(task, at, a.by, "acknowledge", None, state="acknowledged", acknowledged_at=at), []
    if a.action == "complete":
        if state == "done" and task.outcome == a.outcome:
            return task, []
        if terminal:
            raise IllegalTransition(f"task {task.task_id} is {state}: it cannot be completed")
        task = _log(
            task,
            at,
            a.by,
            "complete",
            a.outcome,
            state="done",
            outcome=a.outcome,
            note=a.note,
            closed_at=at,
            acknowledged_at=task.acknowledged_at or at,
        )
        return task, [_notice("closed", task, at)]
    if a.action == "dismiss":
        if state == "dismissed" and task.reason == a.reason:
            return task, []
        if terminal:
            raise IllegalTransition(f"task {task.task_id} is {state}: it cannot be dismissed")
        task = _log(task, at, a.by, "dismiss", a.reason, state="dismissed", reason=a.reason, closed_at=at)
        return task, [_notice("closed", task, at)]
    if terminal:
        raise IllegalTransition(f"task {task.task_id} is {state}: it cannot be {a.action}d")
    if a.action == "snooze":
        assert a.until is not None
        if a.until <= at:
            raise IllegalTransition(f"snooze until {a.until.isoformat()}: that is not later than now")
        return _log(task, at, a.by, "snooze", a.until.isoformat(), snoozed_until=a.until), []
    # reassign
    if a.owner == task.owner:
        return task, []
    return _log(task, at, a.by, "reassign", f"{task.owner} -> {a.owner}", owner=a.owner), []


def apply(task: Task | None, event: Event, now: datetime) -> tuple[Task | None, list[TaskNotice]]:
    """One event on one task (None: no task yet). Raises :class:`TaskError` for an action that is
    not allowed, and changes nothing then. ``now`` is the clock the deadlines are checked against."""
    if isinstance(event, AlertSeen):
        alert = event.alert
        if alert.status == "firing":
            if task is None or not task.is_open:
                if alert.playbook is None or not alert.playbook.tracked:
                    return task, []
                task = _open(alert, alert.playbook, event.time_zone)
                task, notices = _deadlines(task, now)
                return task, [_notice("opened", task, task.opened_at), *notices]
            if task.rule_id != alert.rule_id or alert.alert_id in task.alert_ids:
                return task, []  # another playbook's, or an episode already seen (redelivery)
            task = _log(
                task,
                alert.starts_at,
                SYSTEM,
                "updated",
                f"alert {alert.rule_id} fired again",
                alert_id=alert.alert_id,
                alert_ids=(*task.alert_ids, alert.alert_id)[-20:],
                alert_status="firing",
                episodes=task.episodes + 1,
                score=alert.score,
                band=alert.band,
                summary=alert.summary,
            )
            return _deadlines(task, now)
        if task is None or alert.alert_id != task.alert_id or task.alert_status == "resolved":
            return task, []
        at = alert.ends_at or alert.starts_at
        detail = "the condition no longer holds; the task stays until someone closes it"
        task = _log(task, at, SYSTEM, "alert_resolved", detail, alert_status="resolved")
        return (task, []) if not task.is_open else _deadlines(task, now)
    if isinstance(event, AccountCancelled):
        if task is None or not task.is_open:
            return task, []
        task = _log(
            task,
            event.at,
            SYSTEM,
            "cancelled",
            "account cancelled",
            state="cancelled",
            reason="account cancelled",
            closed_at=event.at,
        )
        return task, [_notice("closed", task, event.at)]
    if isinstance(event, DeadlineTick):
        return (task, []) if task is None else _deadlines(task, now)
    if task is None or task.task_id != event.task_id or task.account_id != event.account_id:
        raise UnknownTask(f"no task {event.task_id} for account {event.account_id}")
    return _human(task, event)


def _superseded(task: Task, by: Task, at: datetime) -> Task:
    detail = f"{by.rule_id} opened task {by.task_id}: the account went on to it"
    at = max(at, task.opened_at)
    return _log(task, at, SYSTEM, "superseded", detail, state="superseded", reason=detail, closed_at=at)


def _covered(
    book: TaskBook, tasks: dict[str, Task], cover: Task, alert: AlertEvent, now: datetime
) -> tuple[TaskBook, list[TaskNotice]]:
    """A firing alert whose playbook an open task supersedes (yellow again while the red task is
    open): no task of its own; the open one notes it, once per episode."""
    if alert.alert_id in cover.alert_ids:
        return book, []
    task = _log(
        cover,
        max(alert.starts_at, cover.opened_at),
        SYSTEM,
        "covered",
        f"alert {alert.rule_id} fired; this task covers it",
        alert_ids=(*cover.alert_ids, alert.alert_id)[-20:],
    )
    task, notices = _deadlines(task, now)
    tasks[task.task_id] = task
    return book.model_copy(update={"tasks": _prune(tasks)}), notices


def _prune(tasks: dict[str, Task]) -> dict[str, Task]:
    closed = sorted((t for t in tasks.values() if not t.is_open), key=lambda t: t.closed_at or t.opened_at)
    drop = {t.task_id for t in closed[: max(0, len(closed) - KEEP_CLOSED)]}
    return {k: t for k, t in tasks.items() if k not in drop}


def apply_book(book: TaskBook, event: Event, now: datetime) -> tuple[TaskBook, list[TaskNotice]]:
    """One event on an account's book: routes it to the task(s) it concerns. A human action is
    applied once per ``action_id``; an unknown task or a disallowed transition raises."""
    tasks = dict(book.tasks)
    notices: list[TaskNotice] = []
    applied = book.applied
    if isinstance(event, TaskAction):
        if event.action_id in book.applied:
            return book, []
        task, notices = apply(tasks.get(event.task_id), event, now)
        assert task is not None
        tasks[task.task_id] = task
        applied = [*book.applied, event.action_id][-KEEP_APPLIED:]
    elif isinstance(event, AlertSeen):
        alert = event.alert
        if alert.status == "firing":
            current = next((t for t in tasks.values() if t.is_open and t.rule_id == alert.rule_id), None)
            if current is None and task_id(alert.account_id, alert.rule_id, alert.alert_id) in tasks:
                return book, []  # the alert that opened a task since closed, delivered again
            cover = next((t for t in tasks.values() if t.is_open and alert.rule_id in t.supersedes), None)
            if current is None and cover is not None:
                return _covered(book, tasks, cover, alert, now)
        else:
            current = next((t for t in tasks.values() if t.alert_id == alert.alert_id), None)
        task, notices = apply(current, event, now)
        if task is not None:
            tasks[task.task_id] = task
            if alert.status == "firing" and alert.supersedes and task.is_open:
                for key, old in list(tasks.items()):
                    if old.is_open and old.rule_id in alert.supersedes:
                        tasks[key] = _superseded(old, task, alert.starts_at)
                        notices.append(_notice("closed", tasks[key], alert.starts_at))
    else:  # the clock, a cancellation: every task of the account
        for key, t in list(tasks.items()):
            new, more = apply(t, event, now)
            if new is not None:
                tasks[key] = new
            notices += more
    if not notices and tasks == book.tasks and applied == book.applied:
        return book, []
    return book.model_copy(update={"tasks": _prune(tasks), "applied": applied}), notices


def book_deadline(book: TaskBook) -> datetime | None:
    """The next time the clock changes anything in the book."""
    times = [d for t in book.tasks.values() if (d := next_deadline(t)) is not None]
    return min(times) if times else None
