from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.aggregate import apply_event
from streams.core.events import EVENT_ADAPTER
from streams.core.state import (
    DAY_S,
    N_COUNTERS,
    AccountState,
    C,
    bitmap_last_day,
    bitmap_mark,
    bitmap_window,
)
from tests.helpers import account_event, at, event


def parsed(ev: dict):
    return EVENT_ADAPTER.validate_python(ev)


def fold(*evs: dict, state: AccountState | None = None, **kw) -> AccountState:
    state = state or AccountState(account_id="a")
    for ev in evs:
        apply_event(state, parsed(ev), **kw)
    return state


def day(days: float) -> int:
    return int(datetime.fromisoformat(at(days)).timestamp()) // DAY_S


def test_events_count_on_their_event_time_day_even_when_late():
    s = fold(event("login", "a", at(5), user_id="u1"), event("login", "a", at(2), user_id="u2"))
    assert s.days[day(5)][C.LOGINS] == 1
    assert s.days[day(2)][C.LOGINS] == 1  # late, inside the window: still counts on its own day
    assert s.last_login_at == int(datetime.fromisoformat(at(5)).timestamp())


def test_duplicate_event_ids_are_ignored_within_the_window():
    e = event("login", "a", at(0), user_id="u")
    s = fold(e, e, e)
    assert s.counts == {"login": 1}
    others = [event("login", "a", at(0), user_id="u") for _ in range(10)]
    s = fold(*others, e, state=s, dedupe_window=4)
    assert s.counts == {"login": 12}  # e fell out of a 4-id window: counted again (documented horizon)


def test_events_older_than_the_horizon_only_count_in_totals():
    s = fold(event("login", "a", at(100), user_id="u"), event("login", "a", at(0), user_id="v"))
    assert s.counts["login"] == 2
    assert day(0) not in s.days
    assert "v" not in s.users


def test_days_and_users_are_pruned_as_time_moves():
    s = fold(event("login", "a", at(0), user_id="old"), event("login", "a", at(95), user_id="new"))
    assert list(s.days) == [day(95)]
    assert set(s.users) == {"new"}


def test_bitmap_marks_and_windows():
    p = 0
    for d in (100, 101, 103):
        p = bitmap_mark(p, d)
    p = bitmap_mark(p, 102)  # late
    assert bitmap_last_day(p) == 103
    assert bitmap_window(p, 103, 7) == 0b1111
    assert bitmap_window(p, 110, 7) == 0  # seven silent days later
    assert bitmap_window(p, 105, 3) == 0b100  # days 103..105: only 103
    assert bitmap_window(p, 103, 2, offset=2) == 0b11  # days 100..101
    assert bitmap_mark(p, 103 - 200) == p  # beyond the horizon: ignored


def test_ticket_lifecycle_first_contact_resolution_and_reopen():
    s = fold(
        event("ticket_opened", "a", at(0), ticket_id="t1", priority="urgent", sentiment=-0.8),
        event("ticket_replied", "a", at(0, 2), ticket_id="t1", author="agent"),
        event("ticket_resolved", "a", at(0, 5), ticket_id="t1"),
    )
    b = s.days[day(0)]
    assert (b[C.RESOLVED], b[C.RESOLVED_FCR], b[C.FIRST_RESPONSE_SUM_S]) == (1, 1, 7200)
    assert b[C.RESOLUTION_SUM_S] == 5 * 3600 and b[C.SENTIMENT_NEGATIVE] == 1
    s = fold(event("ticket_reopened", "a", at(1), ticket_id="t1"), state=s)
    assert s.days[day(0)][C.RESOLVED_FCR] == 0
    assert s.open_tickets["t1"][4] == 1


def test_billing_history_failed_and_paid_invoices():
    s = fold(
        event("subscription", "a", at(10), mrr="200", plan="pro", seats=10, renewal_date="2026-06-01"),
        event("subscription", "a", at(0), mrr="100", plan="basic", seats=5, renewal_date="2026-06-01"),
        event("payment_failed", "a", at(11), invoice_id="i1", amount="200"),
        event("payment_failed", "a", at(12), invoice_id="i2", amount="200"),
        event("invoice_paid", "a", at(13), invoice_id="i1", amount="200"),
    )
    assert s.mrr == "200" and s.plan == "pro"  # the later subscription wins, whatever the order
    assert [m for _, m in s.mrr_history] == ["100", "200"]
    assert set(s.unpaid_invoices) == {"i2"}
    s = fold(event("subscription_canceled", "a", at(14)), state=s)
    assert s.canceled_at is not None and s.mrr_history[-1][1] == "0"


def test_latest_profile_and_nps_answer_per_user_win():
    s = fold(
        account_event("a", at(5), name="New name"),
        account_event("a", at(1), name="Old name"),
        event("nps", "a", at(3), user_id="u", score=3),
        event("nps", "a", at(1), user_id="u", score=10),
    )
    assert s.profile.name == "New name"
    assert s.nps["u"][1] == 3 and s.nps_latest[1] == 3


def test_state_round_trips_through_the_changelog_codec():
    s = fold(
        account_event("a"),
        event("login", "a", at(0), user_id="u"),
        event("subscription", "a", at(0), mrr="12.34", plan="p", seats=2, renewal_date="2026-09-01"),
        event("ticket_opened", "a", at(0), ticket_id="t", priority="low"),
        event("payment_failed", "a", at(1), invoice_id="i", amount="5"),
    )
    again = AccountState.loads(s.dumps())
    # Loading drops day buckets' trailing zeros (see aggregate._bucket): the same state, in fewer bytes.
    assert again.model_copy(update={"days": {}}) == s.model_copy(update={"days": {}})
    assert {d: b + [0] * (N_COUNTERS - len(b)) for d, b in again.days.items()} == {
        d: b + [0] * (N_COUNTERS - len(b)) for d, b in s.days.items()
    }
    assert again.dumps() == s.dumps()
    assert len(s.dumps()) < 2048


usage_event = st.builds(
    lambda kind, d, h, u: event(
        kind, "a", at(d, h), user_id=f"u{u}", **({"feature": "f"} if kind == "feature_used" else {})
    ),
    st.sampled_from(["login", "feature_used"]),
    st.integers(0, 60),
    st.integers(0, 23),
    st.integers(0, 5),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(usage_event, min_size=1, max_size=30), st.randoms())
def test_order_of_events_inside_the_window_does_not_change_the_state(evs, rnd):
    shuffled = list(evs)
    rnd.shuffle(shuffled)
    a, b = fold(*evs), fold(*shuffled)
    assert a.days == b.days
    assert a.users == b.users and a.login_days == b.login_days
    assert a.counts == b.counts and a.last_login_at == b.last_login_at


def test_a_late_event_of_a_user_past_the_user_horizon_is_not_remembered():
    """In time order the user would have been pruned when the later day came (hypothesis found it)."""
    early = [event("login", "a", at(0), user_id="u0"), event("login", "a", at(0), user_id="u0")]
    later = event("login", "a", at(60), user_id="u1")
    assert fold(*early, later).users == fold(later, *early).users
    # ... and a remembered user's days that old are cleared when the later day comes.
    early.append(event("login", "a", at(1), user_id="u0"))
    assert fold(*early, later).users == fold(later, *early).users


def test_time_is_taken_from_the_event_only():
    s = fold(event("login", "a", "2020-01-01T00:00:00Z", user_id="u"))
    assert s.last_event_at == int(datetime(2020, 1, 1, tzinfo=UTC).timestamp())


def test_day_buckets_are_kept_and_written_without_trailing_zeros() -> None:
    from streams.core.state import N_COUNTERS, AccountState

    st = AccountState(account_id="a", days={20000: [3, 1, 600] + [0] * (N_COUNTERS - 3)})
    assert b'"20000":[3,1,600]' in st.dumps_json()
    assert AccountState.loads(st.dumps()).days == {20000: [3, 1, 600]}  # the binary record too
    back = AccountState.loads(st.dumps_json())
    assert back.days == {20000: [3, 1, 600]}  # in memory too: a short list, padded when written to
    # a state written when buckets had one more counter still loads, to the current width
    old = AccountState.loads(
        b'{"account_id":"a","days":{"20000":[' + b",".join([b"1"] * (N_COUNTERS + 1)) + b"]}}"
    )
    assert old.days[20000] == [1] * N_COUNTERS


def test_an_aligned_bitmap_gives_every_window_exactly():
    """compute_metrics aligns each user's bitmap once and masks its windows out of it."""
    import random

    from streams.core.state import bitmap_aligned

    rng = random.Random(1)
    for _ in range(3000):
        p = 0
        for _ in range(rng.randint(0, 12)):
            p = bitmap_mark(p, 20_000 + rng.randint(0, 150))
        today = 20_000 + rng.randint(-10, 300)
        days, offset = rng.randint(1, 90), rng.randint(0, 60)
        window = (bitmap_aligned(p, today) >> offset) & ((1 << days) - 1)
        assert window == bitmap_window(p, today, days, offset)
