"""Playbook outcomes over the simulated history (``healthmon tasks outcomes-preview``): the simulator's
history through the worker's partition driver (as ``mail-preview``), its alerts through the pure task
machine on event time (deadlines, reminders, escalations as the tasks worker applies them), and a seeded
share of tasks acted on by simulated CSMs; then the outcomes table of :mod:`streams.tasks.outcomes`.

Simulated accounts do not respond to a call: acting changes the on-time and acknowledgement figures,
while the save rate of tasks done should match the baseline's up to chance. A difference between the
two on this history is noise, which is what the comparison of a real book has to beat.
Offline and deterministic; no Kafka or Redis.
"""

from __future__ import annotations

import heapq
import random
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from itertools import count

from rules.model import AlertEvent
from streams.readmodel.projector import history_entry
from streams.tasks.machine import (
    Event,
    TaskError,
    alert_event,
    apply_book,
    book_deadline,
)
from streams.tasks.model import DeadlineTick, Task, TaskAction, TaskBook
from streams.tasks.outcomes import AccountDay, history_days


def account_days(snapshots: Mapping[str, Sequence[tuple[float, dict]]]) -> dict[str, list[AccountDay]]:
    """Each account's daily history as the read model keeps it: the day's last snapshot."""
    out = {}
    for account, series in snapshots.items():
        by_day: dict[str, dict] = {}
        for _, snap in series:  # time order: the day's last one wins
            entry = history_entry(snap)
            by_day[entry["day"]] = entry
        out[account] = history_days(by_day.values())
    return out


def _acts(task: Task, acting: float, seed: int) -> list[TaskAction]:
    """The simulated CSM's actions on a task: with probability ``acting`` an acknowledgement somewhere
    between 5 % and 120 % of the time given (so some are late) and the task done a day later."""
    rng = random.Random(f"{seed}:{task.task_id}")
    if rng.random() >= acting:
        return []
    given = task.due_at - task.opened_at
    ack = task.opened_at + given * rng.uniform(0.05, 1.2)
    who = task.owner or "manager@example.com"
    done = ack + timedelta(hours=rng.uniform(1, 24))
    base = {"account_id": task.account_id, "task_id": task.task_id, "by": who, "via": "api"}
    return [
        TaskAction(action_id=f"sim-ack-{task.task_id}", action="acknowledge", at=ack, **base),
        TaskAction(
            action_id=f"sim-done-{task.task_id}", action="complete", at=done, outcome="reached", **base
        ),
    ]


def replay_tasks(
    alerts: list[AlertEvent],
    until: datetime,
    acting: float = 0.0,
    seed: int = 7,
    cancel_rules: frozenset[str] = frozenset({"account_canceled"}),
    time_zone: str | None = None,
) -> list[Task]:
    """Every task the alerts open, each as it stands at ``until`` (closed ones too, as the read model
    keeps them), with a share ``acting`` acted on."""
    per_account: dict[str, list[tuple[datetime, int, Event | TaskAction]]] = defaultdict(list)
    seq = count()
    for a in alerts:
        at, ev = alert_event(a, cancel_rules, time_zone)
        per_account[a.account_id].append((at, next(seq), ev))
    found: dict[str, Task] = {}
    for account, events in per_account.items():
        _replay_account(account, events, until, acting, seed, seq, found)
    return list(found.values())


def _replay_account(
    account: str,
    events: list[tuple[datetime, int, Event | TaskAction]],
    until: datetime,
    acting: float,
    seed: int,
    seq: Iterator[int],
    found: dict[str, Task],
) -> None:
    """One account's alerts, the simulated CSM's actions and the deadlines, in time order."""
    heapq.heapify(events)
    book = TaskBook(account_id=account)

    def step(ev: Event, at: datetime) -> None:
        nonlocal book
        try:
            book, notices = apply_book(book, ev, at)
        except TaskError:
            return  # e.g. acting on a task the account's cancellation closed
        for n in notices:
            if n.kind == "opened":
                for act in _acts(n.task, acting, seed):
                    heapq.heappush(events, (act.at, next(seq), act))
        found.update(book.tasks)

    def clock_to(t: datetime) -> None:
        while (due := book_deadline(book)) is not None and due <= t:
            before = book
            step(DeadlineTick(account_id=account, at=due), due)
            if book is before:
                break

    while events:
        at, _, ev = heapq.heappop(events)
        if at > until:
            break
        clock_to(at)
        step(ev, at)
    clock_to(until)
