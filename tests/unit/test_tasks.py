"""The pure task state machine (streams/tasks): opening, updating, human actions, deadlines, cancellation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rules.model import Action
from streams.tasks.machine import (
    AccountCancelled,
    AlertSeen,
    IllegalTransition,
    UnknownTask,
    apply,
    apply_book,
    book_deadline,
    due_time,
    next_deadline,
)
from streams.tasks.model import DeadlineTick, Task, TaskAction, TaskBook
from tests.alert_fixtures import make_alert

T0 = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
H = timedelta(hours=1)
CHECK_IN = Action.model_validate(
    {
        "step": "Schedule a check-in call within 48 hours",
        "respond_within": "48h",
        "steps": [{"step": "Call", "within": "48h"}, {"step": "Log the save plan", "within": "7d"}],
    }
)


def fired(
    at: datetime = T0, rule: str = "health_below_60", playbook: Action | None = CHECK_IN, account="acme"
):
    a = make_alert(account=account, rule=rule, episode=int(at.timestamp()))
    return a.model_copy(update={"playbook": playbook})


def resolved(alert, at: datetime):
    return alert.model_copy(update={"status": "resolved", "ends_at": at})


def act(task: Task, action: str, at: datetime, action_id: str | None = None, **kw) -> TaskAction:
    return TaskAction(
        action_id=action_id or f"{action}-{at.timestamp()}",
        account_id=task.account_id,
        task_id=task.task_id,
        action=action,
        by="ana@example.com",
        at=at,
        **kw,
    )


def opened(at: datetime = T0, **kw) -> Task:
    task, notices = apply(None, AlertSeen(fired(at, **kw)), at)
    assert task is not None and [n.kind for n in notices] == ["opened"]
    return task


# --- due times --------------------------------------------------------------------------------


def test_due_times_from_respond_within():
    assert due_time(T0, 48 * 3600) == T0 + 48 * H
    assert due_time(T0, 24 * 3600) == T0 + 24 * H
    # same_day: the end of the account's local day; UTC when the zone is unknown or invalid
    assert due_time(T0, "same_day") == datetime(2026, 12, 8, tzinfo=UTC)
    assert due_time(T0, "same_day", "Not/AZone") == datetime(2026, 12, 8, tzinfo=UTC)
    # 10:00 UTC is 19:00 in Tokyo: the local day ends at 15:00 UTC
    assert due_time(T0, "same_day", "Asia/Tokyo") == datetime(2026, 12, 7, 15, tzinfo=UTC)
    # 10:00 UTC is 02:00 in Los Angeles (PST, -8): the local day ends at 08:00 UTC the next day
    assert due_time(T0, "same_day", "America/Los_Angeles") == datetime(2026, 12, 8, 8, tzinfo=UTC)
    # across a DST change (Europe/Berlin, 2026-03-29): the local midnight, not 24 h
    spring = datetime(2026, 3, 29, 6, tzinfo=UTC)
    assert due_time(spring, "same_day", "Europe/Berlin") == datetime(2026, 3, 29, 22, tzinfo=UTC)


def test_a_firing_alert_opens_a_task_with_the_playbook():
    task = opened()
    assert task.state == "open" and task.rule_id == "health_below_60" and task.type == "risk"
    assert task.owner_role == "csm" and task.owner == "ana@example.com"
    assert task.opened_at == T0 and task.due_at == T0 + 48 * H
    assert task.remind_at == T0 + 36 * H  # 12 h before the deadline
    assert [(s.step, s.due_at) for s in task.steps] == [
        ("Call", T0 + 48 * H),
        ("Log the save plan", T0 + 7 * 24 * H),
    ]
    assert [(h.by, h.action) for h in task.history] == [("healthmon", "opened")]
    assert task.score == 42.0 and task.band == "yellow"


def test_the_manager_role_and_a_short_deadline():
    pb = Action.model_validate({"step": "Manager call", "respond_within": "24h", "owner": "manager"})
    task = opened(playbook=pb)
    assert task.owner_role == "manager" and task.owner is None
    assert task.due_at == T0 + 24 * H and task.remind_at == T0 + 18 * H  # a quarter of the time before


def test_no_playbook_no_task():
    assert apply(None, AlertSeen(fired(playbook=None)), T0) == (None, [])
    untracked = Action.model_validate({"step": "text only"})
    assert apply(None, AlertSeen(fired(playbook=untracked)), T0) == (None, [])


# --- episodes ------------------------------------------------------------------------------------


def test_a_new_episode_updates_the_open_task_instead_of_opening_a_second():
    book = TaskBook(account_id="acme")
    book, n1 = apply_book(book, AlertSeen(first := fired(T0)), T0)
    book, n2 = apply_book(book, AlertSeen(resolved(first, T0 + 5 * H)), T0 + 5 * H)
    book, n3 = apply_book(book, AlertSeen(fired(T0 + 10 * H)), T0 + 10 * H)
    assert [n.kind for n in n1] == ["opened"] and n2 == [] and n3 == []
    (task,) = book.tasks.values()
    assert task.episodes == 2 and task.alert_status == "firing" and task.due_at == T0 + 48 * H
    assert [h.action for h in task.history] == ["opened", "alert_resolved", "updated"]
    # a redelivered alert changes nothing
    assert apply_book(book, AlertSeen(first), T0 + 11 * H) == (book, [])
    assert apply_book(book, AlertSeen(resolved(first, T0 + 5 * H)), T0 + 11 * H) == (book, [])


def test_a_closed_task_and_a_new_episode_open_a_new_task():
    book, _ = apply_book(TaskBook(account_id="acme"), AlertSeen(first := fired(T0)), T0)
    (task,) = book.tasks.values()
    book, _ = apply_book(book, act(task, "complete", T0 + H, outcome="reached"), T0 + H)
    # the opening alert again (redelivery): no second task
    assert apply_book(book, AlertSeen(first), T0 + 2 * H) == (book, [])
    book, notices = apply_book(book, AlertSeen(fired(T0 + 30 * 24 * H)), T0 + 30 * 24 * H)
    assert [n.kind for n in notices] == ["opened"] and len(book.tasks) == 2
    assert sorted(t.state for t in book.tasks.values()) == ["done", "open"]


def test_the_resolved_alert_does_not_close_the_task():
    task = opened()
    task2, notices = apply(task, AlertSeen(resolved(fired(T0), T0 + 2 * H)), T0 + 2 * H)
    assert task2 is not None and task2.state == "open" and task2.alert_status == "resolved" and notices == []


# --- human actions -------------------------------------------------------------------------------


def test_acknowledge_then_complete_with_outcome_records_who_and_when():
    task = opened()
    task, n = apply(task, act(task, "acknowledge", T0 + H), T0 + H)
    assert task is not None and task.state == "acknowledged" and task.acknowledged_at == T0 + H and n == []
    task, n = apply(
        task, act(task, "complete", T0 + 3 * H, outcome="save_plan_agreed", note="QBR booked"), T0 + 3 * H
    )
    assert (
        task is not None
        and task.state == "done"
        and task.outcome == "save_plan_agreed"
        and task.note == "QBR booked"
    )
    assert task.closed_at == T0 + 3 * H and [x.kind for x in n] == ["closed"]
    assert [(h.by, h.action) for h in task.history][1:] == [
        ("ana@example.com", "acknowledge"),
        ("ana@example.com", "complete"),
    ]


def test_dismiss_snooze_reassign():
    task = opened()
    t1, _ = apply(task, act(task, "reassign", T0 + H, owner="bo@example.com"), T0 + H)
    assert (
        t1 is not None
        and t1.owner == "bo@example.com"
        and t1.history[-1].detail == "ana@example.com -> bo@example.com"
    )
    t2, _ = apply(t1, act(task, "snooze", T0 + H, until=T0 + 40 * H), T0 + H)
    assert t2 is not None and t2.snoozed_until == T0 + 40 * H
    t3, n = apply(t2, act(task, "dismiss", T0 + 2 * H, reason="duplicate of the renewal call"), T0 + 2 * H)
    assert t3 is not None and t3.state == "dismissed" and t3.reason == "duplicate of the renewal call"
    assert [x.kind for x in n] == ["closed"]


def test_illegal_transitions_raise_a_clear_error():
    task = opened()
    done, _ = apply(task, act(task, "complete", T0 + H, outcome="reached"), T0 + H)
    assert done is not None
    for action, kw in [
        ("acknowledge", {}),
        ("dismiss", {"reason": "x"}),
        ("snooze", {"until": T0 + 9 * H}),
        ("reassign", {"owner": "x@y"}),
        ("complete", {"outcome": "no_answer"}),
    ]:
        with pytest.raises(IllegalTransition, match=f"task {task.task_id} is done"):
            apply(done, act(task, action, T0 + 2 * H, **kw), T0 + 2 * H)
    with pytest.raises(IllegalTransition, match="not later than now"):
        apply(task, act(task, "snooze", T0 + 2 * H, until=T0 + H), T0 + 2 * H)
    with pytest.raises(UnknownTask, match="no task nope for account acme"):
        apply(task, act(task, "acknowledge", T0).model_copy(update={"task_id": "nope"}), T0)
    with pytest.raises(UnknownTask):
        apply_book(TaskBook(account_id="acme"), act(task, "acknowledge", T0), T0)


def test_the_same_action_twice_is_idempotent():
    task = opened()
    # the same outcome again is no change; the same action id applied twice is once
    done, _ = apply(task, act(task, "complete", T0 + H, outcome="reached"), T0 + H)
    assert apply(done, act(task, "complete", T0 + 2 * H, outcome="reached"), T0 + 2 * H) == (done, [])
    book, _ = apply_book(TaskBook(account_id="acme"), AlertSeen(fired()), T0)
    a = act(task, "reassign", T0 + H, action_id="a1", owner="bo@example.com")
    book, _ = apply_book(book, a, T0 + H)
    again = act(task, "reassign", T0 + 2 * H, action_id="a1", owner="cy@example.com")
    assert apply_book(book, again, T0 + 2 * H) == (book, [])
    assert book.tasks[task.task_id].owner == "bo@example.com" and book.applied == ["a1"]


def test_action_arguments_are_checked():
    with pytest.raises(ValueError, match="complete needs outcome"):
        TaskAction(action_id="x", account_id="a", task_id="t", action="complete", by="me", at=T0)
    with pytest.raises(ValueError, match="dismiss needs reason"):
        TaskAction(action_id="x", account_id="a", task_id="t", action="dismiss", by="me", at=T0)
    with pytest.raises(ValueError):
        TaskAction(
            action_id="x", account_id="a", task_id="t", action="complete", outcome="great", by="me", at=T0
        )


# --- deadlines ----------------------------------------------------------------------------------


def tick(task: Task, at: datetime):
    return apply(task, DeadlineTick(account_id=task.account_id, at=at), at)


def test_one_reminder_then_one_escalation_at_the_deadline_stamped_when_due():
    task = opened()
    assert next_deadline(task) == T0 + 36 * H
    t, n = tick(task, T0 + 35 * H)
    assert t == task and n == []
    t, n = tick(task, T0 + 37 * H)  # the clock jumped past the reminder: stamped when it was due
    assert t is not None and [(x.kind, x.at, x.to_role, x.to) for x in n] == [
        ("reminder", T0 + 36 * H, "csm", "ana@example.com")
    ]
    assert tick(t, T0 + 40 * H) == (t, [])  # one reminder only
    assert next_deadline(t) == T0 + 48 * H
    t2, n = tick(t, T0 + 50 * H)
    assert t2 is not None and [(x.kind, x.at, x.to_role) for x in n] == [
        ("escalation", T0 + 48 * H, "manager")
    ]
    assert t2.escalated_at == T0 + 48 * H and t2.state == "open" and next_deadline(t2) is None
    assert tick(t2, T0 + 99 * H) == (t2, [])  # one escalation only


def test_an_acknowledged_task_is_neither_reminded_nor_escalated():
    task = opened()
    t, _ = apply(task, act(task, "acknowledge", T0 + H), T0 + H)
    assert t is not None and next_deadline(t) is None
    assert tick(t, T0 + 100 * H) == (t, [])


def test_a_jump_past_the_deadline_gives_what_a_live_clock_would_have_given():
    task = opened()
    _t, n = tick(task, T0 + 60 * H)
    assert [(x.kind, x.at) for x in n] == [("reminder", T0 + 36 * H), ("escalation", T0 + 48 * H)]
    # a task opened already past its deadline (an old alert in live mode) is reminded and escalated at once
    _late, notices = apply(None, AlertSeen(fired(T0)), T0 + 60 * H)
    assert [x.kind for x in notices] == ["opened", "reminder", "escalation"]
    # snoozed past the deadline: no reminder, the escalation only
    snoozed, _ = apply(task, act(task, "snooze", T0 + H, until=T0 + 60 * H), T0 + H)
    assert snoozed is not None
    _s, n = tick(snoozed, T0 + 70 * H)
    assert [x.kind for x in n] == ["escalation"]


def test_snooze_moves_the_reminder_not_the_deadline():
    task = opened()
    t, _ = apply(task, act(task, "snooze", T0 + H, until=T0 + 40 * H), T0 + H)
    assert t is not None and next_deadline(t) == T0 + 40 * H
    _t2, n = tick(t, T0 + 41 * H)
    assert [(x.kind, x.at) for x in n] == [("reminder", T0 + 40 * H)]
    # snoozed past the deadline: no reminder, the escalation stays
    t3, _ = apply(task, act(task, "snooze", T0 + H, until=T0 + 60 * H), T0 + H)
    assert t3 is not None and next_deadline(t3) == T0 + 48 * H


def test_book_deadline_and_cancellation_closes_every_open_task():
    book, _ = apply_book(TaskBook(account_id="acme"), AlertSeen(fired(T0)), T0)
    nps = Action.model_validate({"step": "Call", "respond_within": "24h", "owner": "manager"})
    book, _ = apply_book(book, AlertSeen(fired(T0 + H, rule="nps_detractor", playbook=nps)), T0 + H)
    assert len(book.tasks) == 2 and book_deadline(book) == T0 + H + 18 * H
    book, notices = apply_book(book, AccountCancelled("acme", T0 + 2 * H), T0 + 2 * H)
    assert (
        sorted((t.state, t.reason) for t in book.tasks.values()) == [("cancelled", "account cancelled")] * 2
    )
    assert [n.kind for n in notices] == ["closed", "closed"] and book_deadline(book) is None
    assert apply_book(book, AccountCancelled("acme", T0 + 3 * H), T0 + 3 * H) == (book, [])


# --- one slide, one open task (band_red supersedes band_yellow) --------------------------------

YELLOW = Action.model_validate({"step": "Run the intervention", "respond_within": "7d"})


def red_fired(at: datetime):
    return fired(at, rule="band_red").model_copy(update={"supersedes": ["band_yellow"]})


def test_red_closes_the_open_yellow_task_as_superseded():
    book, _ = apply_book(TaskBook(account_id="acme"), AlertSeen(fired(T0, "band_yellow", YELLOW)), T0)
    (yellow,) = book.tasks.values()
    book, notices = apply_book(book, AlertSeen(red_fired(T0 + 30 * H)), T0 + 30 * H)
    assert [(n.kind, n.task.rule_id) for n in notices] == [("opened", "band_red"), ("closed", "band_yellow")]
    states = {t.rule_id: t.state for t in book.tasks.values()}
    assert states == {"band_red": "open", "band_yellow": "superseded"}
    closed = book.tasks[yellow.task_id]
    assert closed.closed_at == T0 + 30 * H and closed.history[-1].action == "superseded"
    assert "band_red" in (closed.reason or "")
    assert book_deadline(book) == book.tasks[notices[0].task_id].remind_at  # the yellow one no longer counts


def test_yellow_again_while_the_red_task_is_open_opens_no_second_task():
    book, _ = apply_book(TaskBook(account_id="acme"), AlertSeen(red_fired(T0)), T0)
    again = fired(T0 + 20 * H, "band_yellow", YELLOW)
    book, notices = apply_book(book, AlertSeen(again), T0 + 20 * H)
    (red,) = book.tasks.values()
    assert red.rule_id == "band_red" and red.history[-1].action == "covered"
    assert [n.kind for n in notices] == []  # nothing new to tell: the red task is the one to act on
    assert apply_book(book, AlertSeen(again), T0 + 21 * H) == (book, [])  # redelivered: once
    # once the red task is closed, a later yellow episode gets its own task
    book, _ = apply_book(book, act(red, "dismiss", T0 + 25 * H, reason="handled"), T0 + 25 * H)
    later = fired(T0 + 30 * H, "band_yellow", YELLOW)
    book, notices = apply_book(book, AlertSeen(later), T0 + 30 * H)
    assert [(n.kind, n.task.rule_id) for n in notices] == [("opened", "band_yellow")]


# --- properties -------------------------------------------------------------------------------

EVENTS = st.lists(
    st.tuples(
        st.sampled_from(
            ["fire", "resolve", "ack", "complete", "dismiss", "snooze", "reassign", "tick", "cancel"]
        ),
        st.integers(min_value=0, max_value=6),  # which episode / action id (repeats: redeliveries)
        st.integers(min_value=0, max_value=30),  # hours since the previous event
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(EVENTS)
def test_properties_of_any_sequence(events):
    """Whatever happens: at most one open task per playbook, one reminder and one escalation per task,
    closed tasks stay closed, an escalation only for a task never acknowledged, and the history
    only grows; applying any event a second time changes nothing."""
    book = TaskBook(account_id="acme")
    now = T0
    all_notices = []
    closed: dict[str, str] = {}
    for kind, n, hours in events:
        now += timedelta(hours=hours)
        if kind == "fire":
            ev = AlertSeen(fired(T0 + n * 24 * H))
        elif kind == "resolve":
            ev = AlertSeen(resolved(fired(T0 + n * 24 * H), now))
        elif kind == "tick":
            ev = DeadlineTick(account_id="acme", at=now)
        elif kind == "cancel":
            ev = AccountCancelled("acme", now)
        else:
            if not book.tasks:
                continue
            task = sorted(book.tasks.values(), key=lambda t: t.opened_at)[-1]
            kw = {
                "complete": {"outcome": "reached"},
                "dismiss": {"reason": "not needed"},
                "snooze": {"until": now + timedelta(hours=n + 1)},
                "reassign": {"owner": f"p{n}@example.com"},
            }.get(kind, {})
            verb = {"ack": "acknowledge"}.get(kind, kind)
            ev = act(task, verb, now, action_id=f"{verb}-{n}", **kw)
        before = book
        try:
            book, notices = apply_book(book, ev, now)
        except IllegalTransition:
            assert isinstance(ev, TaskAction)
            continue
        all_notices += notices
        assert apply_book(book, ev, now) == (book, []) or not isinstance(ev, TaskAction | AccountCancelled)
        assert len([t for t in book.tasks.values() if t.is_open]) <= 1
        for key, t in book.tasks.items():
            old = before.tasks.get(key)
            if old is not None:
                assert t.history[: len(old.history)] == old.history or len(old.history) == 100
            if not t.is_open:
                assert closed.setdefault(key, t.state) == t.state
    for kind in ("reminder", "escalation", "opened"):
        per_task = [x.task_id for x in all_notices if x.kind == kind]
        assert len(per_task) == len(set(per_task)), kind
    for t in book.tasks.values():
        if t.escalated_at is not None:
            # An acknowledgement at the very instant of the deadline, read after the deadline passed
            # unacknowledged (events=[fire at 0 h, fire at 48 h, ack at 48 h], found by hypothesis):
            # the escalation came first; never an escalation after an earlier acknowledgement.
            assert t.acknowledged_at is None or t.acknowledged_at >= t.escalated_at
        if t.reminded_at is not None:
            assert t.reminded_at < t.due_at
