"""The information check: a measure that tells no account from another in this book stays out of the way;
and the card version each snapshot names."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.metrics import AccountMetrics, Percentiles, Portfolio
from streams.core.scoring import (
    ScoringConfig,
    information_check,
    load_scoring,
    ramp,
    score_account,
    set_aside_of,
)
from streams.core.snapshot import assess
from streams.core.state import AccountState, Profile

DEFAULT = load_scoring()


def card(**extra) -> ScoringConfig:
    """One component: a live measure (active days) and a heavy one on key-feature breadth."""
    return ScoringConfig.model_validate(
        {
            "default": {
                "bands": {"red_below": 60, "yellow_below": 75},
                "components": {
                    "usage": {
                        "weight": 1,
                        "measures": {
                            "active": {"metric": "active_days_30d", "bad": 0, "good": 30, "explain": "x"},
                            "breadth": {
                                "metric": "feature_breadth",
                                "bad": 0.25,
                                "good": 0.75,
                                "weight": 9,
                                "explain": "x",
                            },
                        },
                    }
                },
            },
            **extra,
        }
    )


def dead_breadth_book(n: int = 30) -> list[tuple[str | None, AccountMetrics]]:
    """A product that never sends the configured key features: breadth is 0 for every account."""
    return [
        (None, AccountMetrics(active_days_30d=round(30 * i / (n - 1)), feature_breadth=0.0)) for i in range(n)
    ]


def test_a_dead_measure_would_flatten_every_score_and_is_set_aside():
    config = card()
    book = dead_breadth_book()
    without = [score_account(m, config, seg).score for seg, m in book]
    assert max(without) <= 10  # 90 % of the weight on a measure at 0 for everyone: all red, no ranking left
    check = information_check(config, book)
    (aside,) = check["default"]
    assert (aside.component, aside.measure, aside.reason) == ("usage", "breadth", "constant")
    assert "scores 0 of 100 for 30 of the 30 accounts" in aside.text
    scored = [score_account(m, config, seg, set_aside=check["default"]) for seg, m in book]
    # its weight goes to the measure that varies: the score is that measure's ramp, red to green
    assert [h.score for h in scored] == [round(ramp(m.active_days_30d, 0, 30), 1) for _, m in book]
    assert {h.band for h in scored} == {"red", "yellow", "green"}
    assert all(h.set_aside == check["default"] for h in scored)
    assert all(h.confidence == 1.0 for h in scored)  # set aside, not missing: no loss of confidence


def test_a_measure_that_varies_for_a_few_accounts_stays():
    book = dead_breadth_book(40)
    book[0] = (None, AccountMetrics(active_days_30d=3, feature_breadth=0.5))
    assert information_check(card(), book)["default"][0].measure == "breadth"  # 1 of 40 < 5 %
    book[1] = (None, AccountMetrics(active_days_30d=3, feature_breadth=1.0))
    assert information_check(card(), book) == {}  # 2 of 40 = 5 %: it tells them apart


def test_a_guard_at_full_marks_for_everyone_stays():
    """No unpaid invoice anywhere: past_due is 100 for every account, and its rare 0 is the signal."""
    config = DEFAULT
    book = [(None, AccountMetrics(days_past_due=0, active_days_30d=i, has_billing=True)) for i in range(20)]
    found = {a.measure: a.reason for a in information_check(config, book).get("default", [])}
    assert "past_due" not in found and "canceled" not in found
    assert found["csat"] == "no_data" and found["nps"] == "no_data"  # nothing sent: listed, no score change


def test_no_data_entries_change_no_score_and_show_only_where_the_account_has_none():
    book = [(None, AccountMetrics(active_days_30d=i, feature_breadth=0.1 * (i % 5))) for i in range(20)]
    config = card()
    config_nps = DEFAULT
    assert information_check(config, book) == {}
    check = information_check(config_nps, book)["default"]
    has_nps = AccountMetrics(active_days_30d=5, nps=40.0, days_since_last_login=1)
    h = score_account(has_nps, config_nps, None, set_aside=check)
    assert h.score == score_account(has_nps, config_nps, None).score
    assert "nps" not in {a.measure for a in h.set_aside} and "csat" in {a.measure for a in h.set_aside}


def test_too_small_a_book_is_not_judged_and_the_check_can_be_disabled():
    assert information_check(card(), dead_breadth_book(9)) == {}
    assert information_check(card(information={"enabled": False}), dead_breadth_book()) == {}


def test_the_check_is_a_function_of_the_book_not_of_its_order():
    book = [*dead_breadth_book(25), (None, AccountMetrics(active_days_30d=1, feature_breadth=0.3))]
    expected = information_check(DEFAULT, book)
    for seed in range(5):
        shuffled = list(book)
        random.Random(seed).shuffle(shuffled)
        assert information_check(DEFAULT, shuffled) == expected


def test_each_segment_card_is_checked_on_its_own_accounts():
    base = card().model_dump()
    config = ScoringConfig.model_validate({**base, "segments": {"enterprise": base["default"]}})
    varied = [
        ("enterprise", AccountMetrics(active_days_30d=i, feature_breadth=0.1 * (i % 6))) for i in range(20)
    ]
    check = information_check(config, dead_breadth_book() + varied)
    assert set(check) == {"default"}  # the enterprise accounts use the key features


# --- the check never changes a book where every measure varies ---------------------------------

METRICS = ("active_days_30d", "feature_breadth", "dau_mau", "usage_percentile")
VARIED = card().model_dump()
VARIED["default"]["components"]["usage"]["measures"].update(
    stick={"metric": "dau_mau", "bad": 0.05, "good": 0.3, "explain": "x"},
    rank={"metric": "usage_percentile", "bad": 0.1, "good": 0.7, "weight": 2, "explain": "x"},
)
VARIED_CONFIG = ScoringConfig.model_validate(VARIED)


def varies(config: ScoringConfig, book: list[AccountMetrics]) -> bool:
    """Every measure: at least 10 accounts with data, and no whole-point score held by over 90 % of them."""
    for meas in config.default.components["usage"].measures.values():
        scores = Counter(
            round(ramp(float(v), meas.bad, meas.good))
            for m in book
            if (v := getattr(m, meas.metric)) is not None
        )
        n = sum(scores.values())
        if n < 10 or max(scores.values()) > 0.9 * n:
            return False
    return True


@st.composite
def varied_books(draw):
    n = draw(st.integers(min_value=10, max_value=40))
    book = []
    for _ in range(n):
        book.append(
            AccountMetrics(
                active_days_30d=draw(st.integers(0, 30)),
                feature_breadth=draw(st.none() | st.floats(0, 1)),
                dau_mau=draw(st.none() | st.floats(0, 1)),
                usage_percentile=draw(st.none() | st.floats(0, 1)),
            )
        )
    return book


@settings(max_examples=150, deadline=None)
@given(varied_books())
def test_the_check_never_changes_a_book_where_every_measure_varies(book):
    if not varies(VARIED_CONFIG, book):
        return  # hypothesis still explores; the assertion is on the varied books only
    check = information_check(VARIED_CONFIG, [(None, m) for m in book])
    assert [a for rows in check.values() for a in rows if a.reason == "constant"] == []
    aside = check.get("default", [])
    for m in book:
        assert (
            score_account(m, VARIED_CONFIG, None, set_aside=aside).score
            == score_account(m, VARIED_CONFIG, None).score
        )


def test_the_property_sees_varied_books():
    """The property above is not vacuous: its generator gives varied books most of the time."""
    rng = random.Random(1)
    book = [
        AccountMetrics(
            active_days_30d=rng.randint(0, 30),
            feature_breadth=rng.random(),
            dau_mau=rng.random(),
            usage_percentile=rng.random(),
        )
        for _ in range(30)
    ]
    assert varies(VARIED_CONFIG, book)
    assert not varies(VARIED_CONFIG, [m.model_copy(update={"feature_breadth": 0.0}) for m in book])


# --- the portfolio carries it, the snapshot reports it ------------------------------------------


def test_the_portfolio_record_keeps_the_check_and_reads_records_from_before_it():
    p = Portfolio(as_of=86_400 * 100, stats={k: Percentiles(range(12)) for k in Portfolio().stats})
    p.set_aside = {"default": [("usage", "breadth", "feature_breadth", "constant", "why")]}
    back = Portfolio.loads(p.dumps())
    assert back.set_aside == p.set_aside and back.stats == p.stats
    old = Portfolio(as_of=86_400 * 100, stats=p.stats)  # written before the check: three fields only
    assert Portfolio.loads(old.dumps()).set_aside == {}
    assert set_aside_of(back, "default")[0].measure == "breadth" and set_aside_of(None, "default") == []


def test_the_snapshot_reports_what_was_set_aside_and_names_the_card_version():
    state = AccountState(account_id="a1")
    state.profile = Profile(
        name="A", segment="smb", csm_name="C", csm_email="c@x.io", signed_up_at=0, updated_at=0
    )
    p = Portfolio(as_of=86_400 * 100)
    p.set_aside = {"default": [("usage", "breadth", "feature_breadth", "constant", "why")]}
    snap, _ = assess(state, 86_400 * 100 + 5, DEFAULT, p)
    assert [a.measure for a in snap.set_aside if a.reason == "constant"] == ["breadth"]
    usage = next(c for c in snap.components if c.name == "usage")
    assert next(m for m in usage.measures if m.name == "breadth").score is None
    assert snap.scorecard_version == DEFAULT.card_version


def test_the_card_version_is_the_revision_or_a_content_hash():
    again = load_scoring()
    assert DEFAULT.card_version == again.card_version and DEFAULT.card_version.startswith("sha256:")
    reweighted = DEFAULT.model_copy(update={"change_threshold": 7})
    assert reweighted.card_version != DEFAULT.card_version
    named = ScoringConfig.model_validate({**DEFAULT.model_dump(), "revision": "2026-12-07.1"})
    assert named.card_version == "2026-12-07.1"
    with pytest.raises(ValueError):
        ScoringConfig.model_validate({**DEFAULT.model_dump(), "revision": ""})


def _default_measures() -> list[tuple[str, float, float]]:
    return [
        (m.metric, m.bad, m.good) for c in DEFAULT.default.components.values() for m in c.measures.values()
    ]


@st.composite
def default_card_books(draw):
    """Books on the default card's metrics, each drawn around its measure's ramp (some missing)."""
    n = draw(st.integers(min_value=10, max_value=30))
    book = []
    for _ in range(n):
        values: dict = {"has_tickets": True, "has_billing": True}
        for metric, bad, good in _default_measures():
            lo, hi = min(bad, good), max(bad, good)
            ann = str(AccountMetrics.model_fields[metric].annotation)
            if "bool" in ann:
                v = draw(st.booleans())
            elif "int" in ann:
                v = draw(st.integers(int(lo) - 1, int(hi) + 2))
            else:
                span = hi - lo
                v = draw(st.floats(lo - span / 4, hi + span / 4))
            values[metric] = draw(st.sampled_from([v, v, v, None])) if "None" in ann else v
        book.append(AccountMetrics(**values))
    return book


def varies_on_default(book: list[AccountMetrics]) -> bool:
    for c in DEFAULT.default.components.values():
        for meas in c.measures.values():
            scores = Counter(
                round(ramp(float(v), meas.bad, meas.good))
                for m in book
                if (v := getattr(m, meas.metric)) is not None
            )
            n = sum(scores.values())
            if n < 10 or max(scores.values()) > 0.9 * n:
                return False
    return True


@settings(max_examples=100, deadline=None)
@given(default_card_books())
def test_on_the_default_card_a_book_where_every_measure_varies_scores_as_without_the_check(book):
    if not varies_on_default(book):
        return
    check = information_check(DEFAULT, [("smb", m) for m in book])
    assert check == {}
    for m in book:
        assert score_account(m, DEFAULT, "smb", set_aside=check.get("default", [])) == score_account(
            m, DEFAULT, "smb"
        )
