"""The guard of self-calibration (streams.core.promotion): propose only on a clear, held-out win."""

from __future__ import annotations

import random

from streams.core.accuracy import Point
from streams.core.promotion import band_changes, verdict


def book(churners: int, stayers: int, separate: bool, seed: int = 1, red_below: float = 35) -> list[Point]:
    """Scores from one distribution for both groups (a card that knows nothing), or churners low and
    stayers high (a card that separates them)."""
    rng = random.Random(seed)
    out = []
    for i in range(churners + stayers):
        churns = i < churners
        score = (
            rng.uniform(0, 45)
            if separate and churns
            else rng.uniform(30, 100)
            if separate
            else rng.uniform(0, 100)
        )
        out.append(Point(f"a{i:04d}", churns, score, "red" if score < red_below else "green"))
    return out


def test_a_clearly_better_candidate_is_proposed() -> None:
    got = verdict(book(40, 200, separate=False), book(40, 200, separate=True), rounds=300)
    assert got.propose, got.reasons
    assert got.candidate.auc_ci and got.current.auc_ci
    assert got.candidate.auc_ci.low > got.current.auc_ci.high
    assert got.candidate.figures.auc > 0.9 and 0.35 < got.current.figures.auc < 0.65


def test_too_few_cancellations_are_not_enough() -> None:
    got = verdict(book(10, 200, separate=False), book(10, 200, separate=True), rounds=200)
    assert not got.propose
    assert got.reasons == ["10 cancellations on held-out time, fewer than 30"]


def test_a_win_inside_the_noise_is_not_proposed() -> None:
    current = book(40, 200, separate=False, seed=3)
    # the same scores, churners nudged 3 points lower: a higher AUC, but within the bootstrap's noise
    nudged = [Point(p.account_id, p.churns, p.score - 3 if p.churns else p.score, p.band) for p in current]
    got = verdict(current, nudged, rounds=300, margin=0.0)
    assert not got.propose
    assert any(r.startswith("AUC intervals overlap") for r in got.reasons), got.reasons


def test_a_candidate_that_loses_red_recall_is_not_proposed() -> None:
    better = book(40, 200, separate=True)
    no_red = [Point(p.account_id, p.churns, p.score, "green") for p in better]
    got = verdict(book(40, 200, separate=False), no_red, rounds=200)
    assert not got.propose
    assert any(r.startswith("red recall would drop") for r in got.reasons), got.reasons


def test_band_changes_are_counted_before_promotion() -> None:
    now = {"a": "green", "b": "red", "c": "yellow", "d": "green", "gone": "red"}
    new = {"a": "red", "b": "red", "c": "green", "d": "red"}
    assert band_changes(now, new) == {"green->red": 2, "yellow->green": 1}
    got = verdict(book(5, 20, False), book(5, 20, True), bands_now=(now, new), rounds=50)
    assert got.accounts_changing_band == 3
