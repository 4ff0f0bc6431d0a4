"""The users remembered per account: a user quiet for USER_HORIZON_DAYS is forgotten (no metric can
see them again), and past the cap the least recently active user is, chosen without a scan of the map
but exactly as the scan chose (the first in the map's order among those with the oldest last day)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from streams.core import aggregate
from streams.core.aggregate import apply_event
from streams.core.events import EVENT_ADAPTER, BaseEvent
from streams.core.metrics import MetricsConfig, compute_metrics
from streams.core.state import DAY_S, MAX_USERS, USER_HORIZON_DAYS, AccountState, bitmap_last_day, user_mark
from streams.engine.engine import Engine
from streams.settings import Settings

T0 = 1_780_000_000 // DAY_S * DAY_S


def login(i: int, user: str, day: int, second: int = 0) -> BaseEvent:
    return EVENT_ADAPTER.validate_python(
        {
            "event_id": f"e{i}",
            "account_id": "a",
            "type": "login",
            "user_id": user,
            "occurred_at": datetime.fromtimestamp(T0 + day * DAY_S + second, UTC).isoformat(),
        }
    )


def _active_by_scan(s: AccountState, user_id: str, day: int, cap: int) -> None:
    """The cap as it was: a scan of the map for the least recently active user, per new user."""
    users = s.users
    packed = users.get(user_id)
    if packed is None:
        packed = 0
        while users and len(users) >= cap:
            del users[min(users, key=lambda u: bitmap_last_day(users[u]) or 0)]
    users[user_id] = user_mark(packed, day)


days_and_users = st.lists(
    st.tuples(st.integers(0, 15), st.integers(-3, 2)),  # (user, day step: back for late events)
    min_size=1,
    max_size=300,
)


@settings(max_examples=300, deadline=None)
@given(days_and_users, st.integers(1, 12), st.sampled_from([0, 7, 50]))
@example([(0, 0), (1, 0), (2, 1), (1, 1), (3, 0)], 2, 0)  # b is active again before the cap picks
def test_the_cap_forgets_exactly_whom_a_scan_forgot(
    steps: list[tuple[int, int]], cap: int, reload_every: int
) -> None:
    """Same users, same order, with late events, days moving on (prunes), users coming back, and the
    state read back from its record now and then (as a RocksDB store gives it: a new object)."""
    events, day = [], 0
    for i, (user, step) in enumerate(steps):
        if step >= 0:
            day += step + (40 if step == 2 and i % 5 == 0 else 0)  # now and then a jump: prunes
            when = day
        else:
            when = max(0, day + 10 * step)  # late by 10 to 30 days
        events.append(login(i, f"user-{user:02d}", when, i))
    _same_as_a_scan(events, cap, reload_every)


def _same_as_a_scan(events: list[BaseEvent], cap: int, reload_every: int = 0) -> None:
    fast = AccountState(account_id="a")
    for i, e in enumerate(events):
        apply_event(fast, e, max_users=cap)
        if reload_every and i % reload_every == reload_every - 1:
            fast = AccountState.loads(fast.dumps())
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(aggregate, "_active", _active_by_scan)
        slow = AccountState(account_id="a")
        for e in events:
            apply_event(slow, e, max_users=cap)
    assert list(fast.users.items()) == list(slow.users.items())
    assert len(fast.users) <= cap


def test_a_user_pruned_and_back_takes_its_new_place() -> None:
    """b is pruned (quiet for USER_HORIZON_DAYS), comes back after c: at the cap, c goes first."""
    later = 1 + USER_HORIZON_DAYS
    days = [("a", 0), ("b", 0), ("c", 1), ("c", later), ("b", later), ("d", later)]
    _same_as_a_scan([login(i, u, d, i) for i, (u, d) in enumerate(days)], cap=2)


def test_ten_thousand_active_users_keep_the_cap() -> None:
    """Each event of a user not remembered replaces the least recently active one; the map stays at
    the cap and holds the most recent users."""
    s = AccountState(account_id="a")
    for i in range(10_000):
        apply_event(s, login(i, f"u{i:05d}", i // 2_000, i), max_users=1_000)
    assert len(s.users) == 1_000
    assert list(s.users) == [f"u{i:05d}" for i in range(9_000, 10_000)]


def test_a_user_quiet_for_the_user_horizon_is_forgotten_and_no_metric_changes() -> None:
    """Kept for USER_HORIZON_DAYS, the longest per-user window: one day more would change nothing
    (every user metric at every later time is the same with the user as without)."""
    s = AccountState(account_id="a")
    apply_event(s, login(0, "quiet", 0))
    apply_event(s, login(1, "busy", USER_HORIZON_DAYS - 1))
    assert set(s.users) == {"quiet", "busy"}
    kept = s.model_copy(deep=True)
    apply_event(s, login(2, "busy", USER_HORIZON_DAYS))
    assert set(s.users) == {"busy"}
    apply_event(kept, login(2, "busy", USER_HORIZON_DAYS))
    kept.users = {"quiet": user_mark(0, T0 // DAY_S), **kept.users}
    cfg = MetricsConfig()
    for later in range(USER_HORIZON_DAYS, USER_HORIZON_DAYS + 70, 3):
        as_of = T0 + later * DAY_S + DAY_S - 1
        assert compute_metrics(s, as_of, cfg) == compute_metrics(kept, as_of, cfg)


def test_the_cap_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().max_users_per_account == MAX_USERS == Engine.max_users
    monkeypatch.setenv("HEALTHMON_MAX_USERS_PER_ACCOUNT", "20000")
    assert Settings().max_users_per_account == 20_000


def test_every_engine_takes_the_cap_and_the_dedupe_window_from_the_settings() -> None:
    from rules.engine import load_rules
    from streams.core.scoring import load_scoring

    s = Settings(max_users_per_account=7, dedupe_window=3)
    engine = Engine.configured(s, load_scoring(None), load_rules(None))
    assert (engine.max_users, engine.dedupe_window) == (7, 3)
