"""Live score accuracy (streams.core.accuracy) on a hand-made book whose figures are worked out below."""

from __future__ import annotations

import pytest

from streams.core.accuracy import Point, Track, accuracy, auc, figures, line_member, parse_line


def line(
    aid: str, segment: str, score: float, band: str, until: int = 120, cancel: int | None = None
) -> Track:
    days = [(d, score, band, cancel is not None and d >= cancel) for d in range(until + 1)]
    return Track(aid, segment, days)


def book() -> list[Track]:
    # c1 (smb) cancels on day 100 (1970-04-11): yellow 50 until day 59, red 20 from day 60
    c1 = line("c1", "smb", 50.0, "yellow", cancel=100)
    c1.days = [(d, 20.0, "red", c) if d >= 60 else (d, s, b, c) for d, s, b, c in c1.days]
    return [
        c1,
        line("c2", "ent", 70.0, "green", cancel=85),  # 1970-03-27
        line("s1", "smb", 25.0, "red"),
        line("s2", "smb", 40.0, "yellow"),
        line("s3", "ent", 80.0, "green"),
        line("s4", "ent", 90.0, "green"),
    ]


def test_auc_counts_pairs_and_half_ties() -> None:
    assert auc([1.0], [2.0, 0.0]) == 0.5
    assert auc([1.0, 3.0], [2.0, 3.0]) == (1 + 1 + 0 + 0.5) / 4  # 1<2, 1<3, 3>2, 3=3 (half)
    assert auc([], [1.0]) is None


def test_window_figures_by_hand() -> None:
    got = accuracy(book())
    assert got.as_of == "1970-05-01" and got.window_start == "1969-11-03"  # day 120, 180 days
    w30 = got.window["30"]
    # churners c1@70 = 20 red, c2@55 = 70 green; stayers 25 red, 40, 80, 90
    # pairs with the churner lower: 20 -> 4, 70 -> 2 of 8
    assert (w30.scored, w30.churners) == (6, 2)
    assert w30.auc == pytest.approx(6 / 8)
    assert (w30.red_precision, w30.red_recall) == (0.5, 0.5)  # red: c1 and s1
    # bottom decile = the lowest 1 of 6 (c1): churn rate 1 over the base 2/6
    assert w30.bottom_decile_lift == pytest.approx(3.0)
    w60 = got.window["60"]  # c1@40 = 50 yellow, c2@25 = 70: 2 + 2 of 8 pairs; red is only s1
    assert w60.auc == pytest.approx(0.5)
    assert (w60.red_precision, w60.red_recall) == (0.0, 0.0)
    assert got.by_segment["smb"]["30"].auc == 1.0 and got.by_segment["ent"]["30"].auc == 1.0


def test_cancellations_and_months() -> None:
    got = accuracy(book())
    rows = [
        (c.account_id, c.canceled_on, c.score_30, c.band_30, c.score_60, c.band_60) for c in got.cancellations
    ]
    assert rows == [
        ("c2", "1970-03-27", 70.0, "green", 70.0, "green"),
        ("c1", "1970-04-11", 20.0, "red", 50.0, "yellow"),
    ]
    months = {(m.month, m.segment): m for m in got.months}
    assert set(months) == {("1970-03", "all"), ("1970-03", "ent"), ("1970-04", "all"), ("1970-04", "smb")}
    assert months["1970-03", "all"].figures.auc == 0.5  # 70 below 80 and 90, above 25 and 40
    assert months["1970-03", "ent"].figures.auc == 1.0
    assert months["1970-04", "all"].figures.auc == 1.0 and months["1970-04", "all"].red_30 == 1


def test_window_leaves_older_cancellations_out() -> None:
    got = accuracy(book(), window_days=25)  # days 96..120: c1 only
    assert got.window["30"].churners == 1 and got.window["30"].auc == 1.0
    assert len(got.cancellations) == 2  # the monthly table still lists both


def test_a_line_that_starts_canceled_is_neither_churner_nor_stayer() -> None:
    old = line("old", "smb", 5.0, "red", cancel=0)  # cancelled before the line began: day unknown
    got = accuracy([*book(), old])
    assert got.window["30"].scored == 6 and [c.account_id for c in got.cancellations] == ["c2", "c1"]


def test_no_cancellation_no_figures() -> None:
    got = accuracy([line("s1", "smb", 25.0, "red")])
    assert got.window["30"].auc is None and got.window["30"].scored == 0 and got.months == []
    assert accuracy([]).as_of is None


def test_figures_agree_with_the_definition() -> None:
    pts = [Point("a", True, 10, "red"), Point("b", False, 10, "red"), Point("c", False, 90, "green")]
    f = figures(pts)
    assert f.auc == pytest.approx((0.5 + 1) / 2)
    assert (f.red_precision, f.red_recall, f.at_risk_recall) == (0.5, 1.0, 1.0)


def test_line_round_trip() -> None:
    members = [line_member(3, 41.256, "yellow", False), line_member(1, None, None, True)]
    assert parse_line(members) == [(1, None, "", True), (3, 41.26, "yellow", False)]
