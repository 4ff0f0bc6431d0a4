"""Guarded self-calibration, offline half (issue 26, item 3): fit a candidate card with ``calibrate``
(out-of-time split, non-negative weights), score the held-out time with the card in force and with the
candidate, and let :func:`streams.core.promotion.verdict` say whether to propose it.

The candidate is only proposed here; putting it in force is docs/promotion.md (a person accepts it in
`healthmon serve`, or `HEALTHMON_CARD_PROMOTION=auto`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from streams.core.accuracy import Point
from streams.core.promotion import Verdict, verdict
from streams.core.scoring import ScoringConfig, information_check, score_account
from streams.sim.calibrate import CalibrationReport, Observation, calibrate


def scored_points(obs: Sequence[Observation], config: ScoringConfig) -> list[Point | None]:
    """Each observation's score and band under ``config`` (None where it has no score), with the
    information check over the book at the observation's moment, as the worker runs it."""
    by_time: dict[int, list[Observation]] = {}
    for o in obs:
        by_time.setdefault(o.at, []).append(o)
    checks = {at: information_check(config, ((o.segment, o.metrics) for o in g)) for at, g in by_time.items()}
    out: list[Point | None] = []
    for o in obs:
        card = config.scorecard_for(o.segment)[0]
        h = score_account(o.metrics, config, o.segment, set_aside=checks[o.at].get(card, ()))
        ok = h.score is not None
        out.append(
            Point(f"{o.account_id}@{o.at}", o.churns, float(h.score or 0), h.band or "") if ok else None
        )
    return out


class Proposal(BaseModel):
    verdict: Verdict
    calibration: CalibrationReport
    cancellations: int


def propose(
    obs: Sequence[Observation],
    current: ScoringConfig,
    *,
    min_cancellations: int = 30,
    margin: float = 0.02,
    rounds: int = 1000,
    seed: int = 0,
    **kw: Any,
) -> tuple[ScoringConfig, Proposal]:
    """The candidate card fitted on ``obs`` and whether it beats ``current`` on held-out time.
    Cancellations: accounts with at least one churning observation."""
    candidate, report = calibrate(obs, current, **kw)
    test = [o for o in obs if report.split_at is not None and o.at >= report.split_at]
    pairs = [
        (a, b)
        for a, b in zip(scored_points(test, current), scored_points(test, candidate), strict=True)
        if a is not None and b is not None
    ]
    latest: dict[str, Observation] = {}
    for o in obs:
        if o.account_id not in latest or latest[o.account_id].at <= o.at:
            latest[o.account_id] = o
    last = list(latest.values())
    bands = tuple(
        {o.account_id: (p.band if p else None) for o, p in zip(last, scored_points(last, card), strict=True)}
        for card in (current, candidate)
    )
    cancellations = len({o.account_id for o in obs if o.churns})
    got = verdict(
        [a for a, _ in pairs],
        [b for _, b in pairs],
        bands_now=(bands[0], bands[1]),
        min_cancellations=min_cancellations,
        margin=margin,
        rounds=rounds,
        seed=seed,
        cancellations=cancellations,
    )
    return candidate, Proposal(verdict=got, calibration=report, cancellations=cancellations)
