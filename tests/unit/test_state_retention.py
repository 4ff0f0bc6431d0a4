"""What the reducer keeps is what the metrics read: per-counter horizons of the day buckets and thin
closed tickets (streams/core/state.py COUNTER_HORIZON_DAYS, streams/core/aggregate.py _prune_counters and
_closed_row) change no metric, score, band or alert.

* each counter's horizon is exactly the oldest day any metric reads it on (tighter would change a
  metric, looser keeps bytes nobody reads);
* a simulated book, with late events, folded with and without the pruning and evaluated at every
  UTC midnight (as the worker's due times do) and on silent days after the end gives the same
  snapshots, changes and alerts;
* a fold interrupted by a reload from the changelog record ends in the same record, byte for byte.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from rules.engine import DEFAULT_RULES, load_rules
from streams.core import aggregate
from streams.core.events import EVENT_ADAPTER
from streams.core.metrics import MetricsConfig, compute_metrics
from streams.core.scoring import load_scoring
from streams.core.state import (
    COUNTER_HORIZON_DAYS,
    DAY_S,
    HORIZON_DAYS,
    N_COUNTERS,
    AccountState,
    C,
)
from streams.engine.engine import Engine
from streams.sim.simulate import Simulator

TODAY = 20_700
AS_OF = TODAY * DAY_S + 12 * 3600


def _metrics(days: dict[int, list[int]]) -> dict:
    s = AccountState(account_id="a", first_event_at=(TODAY - 200) * DAY_S, last_event_at=AS_OF, days=days)
    return compute_metrics(s, AS_OF, MetricsConfig()).model_dump()


@pytest.mark.parametrize("counter", list(C))
def test_each_counter_is_kept_exactly_as_long_as_a_metric_reads_it(counter: C) -> None:
    """One more in ``counter`` on a day ``age`` days back changes some metric iff age < its horizon
    (a bucket of ones today makes every ratio defined, so any window sum read shows)."""
    base = {TODAY: [1] * N_COUNTERS}
    before = _metrics(base)
    read = []
    for age in range(HORIZON_DAYS):
        days = {day: list(b) for day, b in base.items()}
        bucket = days.setdefault(TODAY - age, [0] * N_COUNTERS)
        bucket[counter] += 1
        read.append(_metrics(days) != before)
    horizon = COUNTER_HORIZON_DAYS[counter]
    assert read == [age < horizon for age in range(HORIZON_DAYS)]


def _book(accounts: int, seed: int, late_share: float) -> tuple[list, int]:
    """The simulator's events, a share of them delivered late (up to 50 days), in delivery order."""
    sim = Simulator(accounts, 90, seed=seed, end=datetime(2026, 11, 1, tzinfo=UTC))
    rng = random.Random(seed)
    evs = [EVENT_ADAPTER.validate_python(e) for e in sim.events()]
    keyed = []
    for i, ev in enumerate(evs):
        ts = int(ev.occurred_at.timestamp())
        late = rng.randrange(50 * DAY_S) if rng.random() < late_share else 0
        keyed.append((ts + late, i, ev))
    keyed.sort(key=lambda k: (k[0], k[1]))
    return [(delivered, ev) for delivered, _, ev in keyed], int(sim.end)


def _run(events: list, end: int, prune: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[list, dict]:
    """Fold and evaluate every account at each UTC midnight of delivery time and at the end, then
    at each of the 100 silent days after it; every output, in order."""
    with monkeypatch.context() as m:
        if not prune:  # what the reducer kept before: every counter 90 days, closed tickets whole
            m.setattr(aggregate, "COUNTERS_DROPPED_AT_AGE", ((),) * HORIZON_DAYS)
            m.setattr(aggregate, "_closed_row", lambda *row: list(row))
        engine = Engine(load_scoring(None), load_rules(DEFAULT_RULES))
        states: dict[str, AccountState] = {}
        out = []
        today = None
        for delivered, ev in events:
            day = delivered // DAY_S
            if today is not None and day > today:
                for st in states.values():
                    e = engine.evaluate(st, day * DAY_S)
                    out.append((e.snapshot.model_dump(), e.change, e.alerts))
            today = day if today is None else max(today, day)
            st = states.setdefault(ev.account_id, AccountState(account_id=ev.account_id))
            engine.apply(st, ev, 0)
        for k in range(101):
            for st in states.values():
                e = engine.evaluate(st, end + k * DAY_S)
                out.append((e.snapshot.model_dump(), e.change, e.alerts))
        return out, states


@pytest.mark.parametrize("late_share", [0.0, 0.05])
def test_the_pruned_state_gives_every_snapshot_change_and_alert_unchanged(
    late_share: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    events, end = _book(40, 42, late_share)
    kept, kept_states = _run(events, end, False, monkeypatch)
    pruned, pruned_states = _run(events, end, True, monkeypatch)
    assert len(pruned) == len(kept) > 40 * 150
    for a, b in zip(kept, pruned, strict=True):
        assert a == b
    # and it is smaller: fewer counters and closed-ticket values
    assert sum(len(s.dumps()) for s in pruned_states.values()) < 0.85 * sum(
        len(s.dumps()) for s in kept_states.values()
    )
    alerts = sum(len(x[2]) for x in pruned)
    assert alerts > 0  # the book does fire rules


def test_a_fold_reloaded_from_its_record_on_the_way_ends_in_the_same_record() -> None:
    """A worker that crashed and rebuilt a state from the changelog folds on from the decoded state:
    the pruning happens in the fold (not in the encoder), so both end in the same bytes."""
    events, _ = _book(25, 7, 0.05)
    rng = random.Random(3)
    kept: dict[str, AccountState] = {}
    reloaded: dict[str, AccountState] = {}
    for _, ev in events:
        for states in (kept, reloaded):
            st = states.setdefault(ev.account_id, AccountState(account_id=ev.account_id))
            aggregate.apply_event(st, ev)
        if rng.random() < 0.02:
            reloaded[ev.account_id] = AccountState.loads(reloaded[ev.account_id].dumps())
    assert kept.keys() == reloaded.keys()
    for aid in kept:
        assert kept[aid].dumps() == reloaded[aid].dumps()


def test_a_late_event_leaves_the_state_an_in_order_fold_would() -> None:
    from tests.helpers import at, event

    def fold(*evs: dict) -> AccountState:
        s = AccountState(account_id="a")
        for e in evs:
            aggregate.apply_event(s, EVENT_ADAPTER.validate_python(e))
        return s

    evs = [
        event("login", "a", at(0), user_id="u"),
        event("session", "a", at(0), user_id="u", duration_s=60),
        event("ticket_opened", "a", at(0, 1), ticket_id="t", priority="urgent", sentiment=-0.5),
        event("csat", "a", at(0, 2), score=5),
        event("ticket_opened", "a", at(32), ticket_id="t2", priority="low"),
        event("login", "a", at(40), user_id="v"),
    ]
    in_order = fold(*evs)
    late = fold(evs[-1], *evs[:-1])
    # (the maps' order and the de-duplication window follow the delivery order)
    assert in_order.days == late.days and in_order.users == late.users
    assert in_order.closed_tickets == late.closed_tickets and in_order.open_tickets == late.open_tickets
    # 40 days on: day 0 keeps the counters read over 90 days (CSAT), not the 30- or 35-day ones
    bucket = in_order.days[min(in_order.days)]
    assert bucket[C.CSAT_N] == 1 and not any(bucket[: C.CSAT_N])
