"""Metrics per account, including the seed documents' worked examples as golden tests."""

from datetime import datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.aggregate import apply_event
from streams.core.events import EVENT_ADAPTER
from streams.core.metrics import MetricsConfig, compute_metrics
from streams.core.state import AccountState
from tests.helpers import account_event, at, event

CFG = MetricsConfig(key_features=["reports", "dashboards", "integrations", "automation"])


def ts(days: float, hours: float = 0) -> int:
    return int(datetime.fromisoformat(at(days, hours)).timestamp())


def fold(*evs: dict, state: AccountState | None = None) -> AccountState:
    state = state or AccountState(account_id="a")
    for ev in evs:
        apply_event(state, EVENT_ADAPTER.validate_python(ev), key_features=frozenset(CFG.key_features))
    return state


def metrics(state: AccountState, days: float, hours: float = 0, cfg: MetricsConfig = CFG):
    return compute_metrics(state, ts(days, hours), cfg)


# --- golden tests from the seeds ---------------------------------------------------------------


def test_nps_seed_example_50_promoters_30_passives_20_detractors_is_30():
    scores = [10] * 50 + [8] * 30 + [3] * 20
    s = fold(*(event("nps", "a", at(0), user_id=f"u{i}", score=v) for i, v in enumerate(scores)))
    m = metrics(s, 1)
    assert m.nps == pytest.approx(30.0) and m.nps_responses == 100


def test_nps_uses_each_users_latest_answer_within_180_days():
    s = fold(
        event("nps", "a", at(0), user_id="u1", score=2),
        event("nps", "a", at(10), user_id="u1", score=10),  # u1 is now a promoter
        event("nps", "a", at(-200), user_id="u2", score=0),  # too old
        event("nps", "a", at(5), user_id="u3", score=7),
    )
    m = metrics(s, 11)
    assert m.nps_responses == 2 and m.nps == pytest.approx(50.0)
    assert m.nps_latest_score == 10


def test_csat_seed_example_80_of_100_is_80_percent():
    s = fold(*(event("csat", "a", at(0), score=5 if i < 50 else 4 if i < 80 else 2) for i in range(100)))
    assert metrics(s, 1).csat_90d == pytest.approx(80.0)


def test_dau_mau_seed_example_300_of_1000_is_30_percent():
    # 1000 monthly users, each active on 9 of the 30 days: 9000 user-days / 30 = 300 a day.
    evs = [
        event("login", "a", at(d * 3 + (u % 3), 1), user_id=f"u{u}") for u in range(1000) for d in range(9)
    ]
    m = metrics(fold(*evs), 29, 12)
    assert m.active_users_30d == 1000
    assert m.dau_mau == pytest.approx(0.30)


def test_adoption_is_active_users_over_seats_capped_at_100_percent():
    sub = event("subscription", "a", at(0), mrr="100", plan="p", seats=10, renewal_date="2026-12-01")
    s = fold(sub, *(event("login", "a", at(1), user_id=f"u{i}") for i in range(3)))
    assert metrics(s, 2).adoption_rate == pytest.approx(0.3)
    s = fold(*(event("login", "a", at(1), user_id=f"v{i}") for i in range(30)), state=s)
    assert metrics(s, 2).adoption_rate == 1.0


def test_feature_breadth_and_time_to_first_value():
    s = fold(
        account_event("a", at(-1), signed_up_at=at(-10)),
        event("feature_used", "a", at(0), user_id="u", feature="export"),  # not a key feature
        event("feature_used", "a", at(2), user_id="u", feature="reports"),
        event("feature_used", "a", at(3), user_id="u", feature="dashboards"),
    )
    m = metrics(s, 4)
    assert m.feature_breadth == pytest.approx(0.5)
    assert m.ttfv_days == pytest.approx(12.0)
    assert metrics(s, 40).feature_breadth == 0.0  # 30 days later nothing was used


def test_logins_sessions_and_silence_age_with_engine_time():
    evs = [event("login", "a", at(d, 9), user_id="u") for d in range(14)]
    evs += [event("session", "a", at(d, 10), user_id="u", duration_s=1800) for d in range(14)]
    s = fold(*evs)
    m = metrics(s, 13, 12)
    assert (m.logins_7d, m.logins_30d, m.days_since_last_login) == (7, 14, 0)
    assert m.avg_session_minutes_30d == pytest.approx(30.0)
    assert not m.daily_login_lapsed
    silent = metrics(s, 20, 12)  # no new events: the engine's clock moved on
    assert silent.days_since_last_login == 7 and silent.daily_login_lapsed
    assert silent.logins_7d == 0


def test_usage_trend_compares_active_user_days():
    evs = [event("login", "a", at(d), user_id=f"u{u}") for d in range(7) for u in range(4)]
    evs += [event("login", "a", at(d), user_id=f"u{u}") for d in range(7, 14) for u in range(3)]
    m = metrics(fold(*evs), 13, 12)
    assert m.usage_trend_7d_pct == pytest.approx(-25.0)


def test_support_metrics():
    evs = [
        event("ticket_opened", "a", at(0), ticket_id="t1", priority="urgent", sentiment=-0.8),
        event("ticket_replied", "a", at(0, 2), ticket_id="t1", author="agent"),
        event("ticket_replied", "a", at(0, 3), ticket_id="t1", author="customer", sentiment=0.5),
        event("ticket_resolved", "a", at(0, 10), ticket_id="t1"),
        event("ticket_opened", "a", at(1), ticket_id="t2", priority="urgent"),
        event("ticket_replied", "a", at(1, 4), ticket_id="t2", author="agent"),
        event("ticket_replied", "a", at(1, 5), ticket_id="t2", author="agent"),
        event("ticket_resolved", "a", at(1, 6), ticket_id="t2"),
        event("ticket_opened", "a", at(2), ticket_id="t3", priority="urgent"),
    ]
    m = metrics(fold(*evs), 3)
    assert m.tickets_opened_30d == 3 and m.open_tickets == 1 and m.open_urgent_tickets == 1
    assert m.first_response_hours_30d == pytest.approx(3.0)
    assert m.resolution_hours_30d == pytest.approx(8.0)
    assert m.fcr_rate_90d == pytest.approx(0.5)
    assert m.sentiment_mean_30d == pytest.approx(-0.15)
    assert m.negative_sentiment_share_30d == pytest.approx(0.5)


def test_ticket_spike_against_the_prior_four_weeks():
    prior = [event("ticket_opened", "a", at(d), ticket_id=f"p{d}", priority="low") for d in range(0, 28, 7)]
    spike = [
        event("ticket_opened", "a", at(30 + i / 10), ticket_id=f"s{i}", priority="high") for i in range(5)
    ]
    m = metrics(fold(*prior, *spike), 31)
    assert m.ticket_spike_ratio == pytest.approx(5.0) and m.ticket_spike


def test_financial_metrics_expansion_contraction_and_past_due():
    evs = [
        event("subscription", "a", at(0), mrr="1000", plan="pro", seats=10, renewal_date="2026-05-01"),
        event("subscription", "a", at(40), mrr="800.50", plan="pro", seats=8, renewal_date="2026-05-01"),
        event("payment_failed", "a", at(41), invoice_id="i1", amount="800.50"),
    ]
    m = metrics(fold(*evs), 45)
    assert m.mrr == Decimal("800.50") and m.mrr_30d_ago == Decimal("1000")
    assert m.mrr_change_30d == Decimal("-199.50") and m.mrr_change_30d_pct == pytest.approx(-19.95)
    assert m.days_past_due == 4 and m.unpaid_amount == Decimal("800.50")
    assert m.days_to_renewal == 15  # 2026-05-01 minus 2026-04-16
    m = metrics(fold(event("subscription_canceled", "a", at(46)), *evs), 47)
    assert m.canceled and m.mrr == Decimal(0)


def test_no_data_is_none_not_zero():
    m = metrics(fold(event("login", "a", at(0), user_id="u")), 1)
    assert m.nps is None and m.csat_90d is None and m.adoption_rate is None and m.mrr is None
    assert m.days_past_due is None and not m.has_tickets


usage = st.builds(
    lambda d, h, u: event("login", "a", at(d, h), user_id=f"u{u}"),
    st.integers(0, 80),
    st.integers(0, 23),
    st.integers(0, 8),
)


@settings(max_examples=50, deadline=None)
@given(st.lists(usage, min_size=1, max_size=40), st.randoms())
def test_metrics_do_not_depend_on_arrival_order(evs, rnd):
    late = list(evs)
    rnd.shuffle(late)
    assert metrics(fold(*evs), 85) == metrics(fold(*late), 85)


@settings(max_examples=50, deadline=None)
@given(st.lists(usage, min_size=1, max_size=30), st.integers(60, 80))
def test_a_late_event_inside_the_window_counts(evs, late_day):
    base = fold(*evs)
    before = metrics(base, 85).logins_30d
    s = fold(event("login", "a", at(late_day), user_id="late"), state=base)
    assert metrics(s, 85).logins_30d == before + 1


# --- product-neutral measures (docs/metrics.md) --------------------------------------------------


def test_usage_against_the_accounts_own_baseline_covers_a_young_account():
    # Day 0-13: 4 users a day; days 14-20: 1 user a day. At day 20 (3 weeks old) the 30-over-30 trend
    # cannot exist yet, but the week against its own 14-day baseline can: (1/day) / (4/day) - 1 = -75 %.
    evs = [event("login", "a", at(d), user_id=f"u{u}") for d in range(14) for u in range(4)]
    evs += [event("login", "a", at(d), user_id="u0") for d in range(14, 21)]
    m = metrics(fold(*evs), 20, 12)
    assert m.usage_trend_30d_pct is None
    assert m.usage_vs_baseline_pct == pytest.approx(-75.0)
    assert m.active_days_30d == 21 and m.active_user_days_30d == 14 * 4 + 7
    assert m.tenure_days == 20  # no profile: from the first event


def test_a_sustained_60_pct_drop_on_day_28_reads_minus_60_a_week_later():
    # Days 0-27: 5 users a day; from day 28: 2 a day. At the end of day 34 the week (28-34) is all
    # dropped and the baseline is the 28 days before it (0-27): 2/5 - 1 = -60 %.
    evs = [event("login", "a", at(d, 9), user_id=f"u{u}") for d in range(28) for u in range(5)]
    evs += [event("login", "a", at(d, 9), user_id=f"u{u}") for d in range(28, 35) for u in range(2)]
    m = metrics(fold(*evs), 34, 12)
    assert m.usage_trend_30d_pct is None
    assert m.usage_vs_baseline_pct == pytest.approx(-60.0)
    # Two days into the drop (day 29 at noon): (5 x 5 + 2 x 2) / 7 against 5/day over 23 days: -17 %.
    assert metrics(fold(*evs), 29, 12).usage_vs_baseline_pct == pytest.approx((29 / 7) / 5 * 100 - 100)


def test_baseline_needs_a_week_before_this_one():
    evs = [event("login", "a", at(d), user_id="u0") for d in range(10)]
    assert metrics(fold(*evs), 9, 12).usage_vs_baseline_pct is None  # 3 days of baseline
    assert metrics(fold(*evs), 13, 12).usage_vs_baseline_pct == pytest.approx((3 / 7) / (7 / 7) * 100 - 100)


def test_breadth_over_the_features_the_product_has():
    from streams.core.metrics import Portfolio, with_portfolio

    # Account a used 4 features in 90 days, 2 of them in the last 30; b used 6 other ones recently.
    a = fold(
        *(event("feature_used", "a", at(0), user_id="u", feature=f) for f in ("f1", "f2")),
        *(event("feature_used", "a", at(60), user_id="u", feature=f) for f in ("f3", "f4")),
    )
    b = fold(*(event("feature_used", "b", at(60), user_id="u", feature=f"g{i}") for i in range(6)))
    ma = metrics(a, 61)
    assert ma.features_used_30d == 2 and ma.feature_breadth_own == pytest.approx(0.5)
    port = Portfolio()
    port.observe("a", ma, a)
    port.observe("b", metrics(b, 61), b)
    # The catalogue learned from the stream: f3, f4 and g0-g5 in the last 90 days, f1/f2 too (day 0).
    assert port.catalog_size(ts(61) // 86400) == 10
    assert with_portfolio(ma, port, ts(61)).feature_breadth_catalog == pytest.approx(0.2)


def test_percentiles_rank_among_the_portfolio_ties_half():
    from streams.core.metrics import Percentiles

    p = Percentiles()
    for i, v in enumerate([1, 2, 2, 3, 4, 5, 6, 7, 8, 9]):
        p.update(f"a{i}", v)
    assert p.rank(2) == pytest.approx(0.2)  # one below, two tied: (1 + 1) / 10
    assert p.rank(0) == 0 and p.rank(100) == 1
    p.update("a0", 10)  # an account's new value replaces its old one
    assert len(p) == 10 and p.rank(1.5) == 0
    p.update("a0", None)
    assert len(p) == 9 and p.rank(5) is None  # below 10 accounts a percentile says little


@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=10, max_size=60), st.floats(-1e6, 1e6))
@settings(max_examples=50, deadline=None)
def test_percentile_matches_a_plain_count(values, probe):
    from streams.core.metrics import Percentiles

    p = Percentiles()
    for i, v in enumerate(values):
        p.update(f"a{i}", v)
    below = sum(v < probe for v in values)
    equal = sum(v == probe for v in values)
    assert p.rank(probe) == pytest.approx((below + equal / 2) / len(values))


# --- the CSM's own read --------------------------------------------------------------------------


def test_csm_sentiment_decays_and_the_latest_read_wins():
    s = fold(event("csm_sentiment", "a", at(0), score=0.8))
    assert metrics(s, 0).csm_sentiment == pytest.approx(0.8)
    assert metrics(s, 30).csm_sentiment == pytest.approx(0.4)  # half-life 30 days
    assert metrics(s, 60).csm_sentiment == pytest.approx(0.2) and metrics(s, 60).csm_sentiment_days_ago == 60
    assert metrics(s, 180).csm_sentiment is None  # too old to count
    # A 1-5 rating: 1 is -1. A re-sent older read (a nightly import) does not overwrite a newer one.
    fold(event("csm_sentiment", "a", at(10), score=1, scale="1-5"), state=s)
    fold(event("csm_sentiment", "a", at(5), score=5, scale="1-5"), state=s)
    assert metrics(s, 10).csm_sentiment == pytest.approx(-1.0)


def test_csm_sentiment_outside_its_scale_is_rejected():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"outside the -1\.\.1 scale"):
        EVENT_ADAPTER.validate_python(event("csm_sentiment", "a", at(0), score=4))
