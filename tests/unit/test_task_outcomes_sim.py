"""The outcomes demo over the simulator (streams.sim.task_outcomes): alerts through the pure task machine on
event time, a seeded share of tasks acted on by simulated CSMs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rules.engine import load_rules
from rules.model import Action
from streams.core.scoring import load_scoring
from streams.settings import Settings
from streams.sim.mail import replay_history
from streams.sim.simulate import Simulator
from streams.sim.task_outcomes import account_days, replay_tasks
from streams.tasks.outcomes import outcome_table
from tests.alert_fixtures import make_alert

T0 = datetime(2026, 10, 1, 9, tzinfo=UTC)
CHECK_IN = Action.model_validate({"step": "Check-in call", "respond_within": "48h"})


def alert(account: str, rule: str, at: datetime, playbook: Action | None = CHECK_IN):
    a = make_alert(account=account, rule=rule, episode=int(at.timestamp()))
    return a.model_copy(update={"playbook": playbook})


def test_nobody_acts_then_every_task_escalates_at_its_deadline() -> None:
    (t,) = replay_tasks([alert("acme", "band_red", T0)], T0 + timedelta(days=5), acting=0.0)
    assert (t.state, t.escalated_at, t.acknowledged_at) == ("open", T0 + timedelta(hours=48), None)


def test_acted_tasks_are_acknowledged_then_done_and_a_cancellation_closes_the_rest() -> None:
    alerts = [alert(f"a{i}", "band_red", T0) for i in range(40)]
    alerts.append(alert("a0", "account_canceled", T0 + timedelta(hours=1), None))
    got = {t.account_id: t for t in replay_tasks(alerts, T0 + timedelta(days=5), acting=0.5, seed=3)}
    assert got["a0"].state == "cancelled"
    states = [t.state for k, t in got.items() if k != "a0"]
    assert set(states) == {"open", "done"} and 10 <= states.count("done") <= 30
    for t in got.values():
        if t.state == "done":
            assert t.acknowledged_at is not None and t.opened_at < t.acknowledged_at < t.closed_at  # type: ignore[operator]
        elif t.state == "open":
            assert t.escalated_at == t.due_at  # nobody acted: escalated once, at the deadline
    again = {t.account_id: t for t in replay_tasks(alerts, T0 + timedelta(days=5), acting=0.5, seed=3)}
    assert again == got  # seeded: the same run twice


def test_a_small_simulated_history() -> None:
    s = Settings()
    sim = Simulator(15, 40, 7, datetime(2026, 12, 7, tzinfo=UTC))
    history = replay_history(sim, load_scoring(s.scorecard), load_rules(s.rules))
    until = datetime.fromtimestamp(sim.end, UTC)
    days = account_days(history.snapshots)
    assert {d.band for series in days.values() for d in series} <= {"red", "yellow", "green", None}
    none = outcome_table(replay_tasks(history.alerts, until, acting=0.0), days, until).total
    half = outcome_table(replay_tasks(history.alerts, until, acting=0.5), days, until).total
    # a task done lets the next episode open a new one, where an ignored task would fold it in
    assert half.opened >= none.opened > 0
    assert (none.responded, none.done, none.acted.tasks) == (0, 0, 0)
    assert none.never_acted > half.never_acted and half.done > 0 and half.median_ack_hours is not None
