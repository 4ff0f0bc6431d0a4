"""When may a calibrated candidate card be proposed in place of the card in force? (issue 26, item 3)

Guarded self-calibration proposes a candidate only when the book has enough outcomes and the candidate
beats the card in force on held-out time clearly: its AUC is higher by at least ``margin`` *and* the two
cards' bootstrap confidence intervals do not overlap, and it is no worse on red precision or red recall.
Both cards are scored on the same held-out points (the same accounts at the same moments), and each
bootstrap resample draws churners and stayers separately (both groups are always present), the same
draw for both cards. Promotion itself stays a human decision; this only says whether to ask.

Pure: points and a seed in, a verdict out (no clock, no I/O).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from pydantic import BaseModel

from streams.core.accuracy import Figures, Point, auc, figures


class Interval(BaseModel):
    low: float
    high: float


class CardResult(BaseModel):
    figures: Figures
    auc_ci: Interval | None


class Verdict(BaseModel):
    propose: bool
    reasons: list[str]
    churners: int
    current: CardResult
    candidate: CardResult
    #: Accounts whose band would change at promotion, by "from->to" (shown before anyone accepts).
    band_changes: dict[str, int]
    accounts_changing_band: int


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def bootstrap_auc(
    current: Sequence[Point],
    candidate: Sequence[Point],
    rounds: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[Interval | None, Interval | None]:
    """Percentile intervals of both cards' AUC over the same stratified resamples of the points (paired
    by position: ``current[i]`` and ``candidate[i]`` are one account at one moment)."""
    if len(current) != len(candidate):
        raise ValueError("both cards must be scored on the same points")
    churn = [i for i, p in enumerate(current) if p.churns]
    stay = [i for i, p in enumerate(current) if not p.churns]
    if not churn or not stay:
        return None, None
    rng = random.Random(seed)
    got: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds):
        churners = [churn[rng.randrange(len(churn))] for _ in churn]
        stayers = [stay[rng.randrange(len(stay))] for _ in stay]
        for out, pts in zip(got, (current, candidate), strict=True):
            # only the AUC is resampled: the scores straight to it (no precision, decile or model)
            value = auc([pts[i].score for i in churners], [pts[i].score for i in stayers])
            if value is not None:
                out.append(value)
    tail = (1 - level) / 2
    return tuple(  # type: ignore[return-value]
        Interval(low=_percentile(v, tail), high=_percentile(v, 1 - tail)) if v else None for v in got
    )


def band_changes(current: Mapping[str, str | None], candidate: Mapping[str, str | None]) -> dict[str, int]:
    """How many accounts move between bands from one card to the other, by ``from->to``."""
    out: dict[str, int] = {}
    for aid in sorted(set(current) & set(candidate)):
        a, b = current[aid], candidate[aid]
        if a != b:
            key = f"{a or 'none'}->{b or 'none'}"
            out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items()))


def verdict(
    current: Sequence[Point],
    candidate: Sequence[Point],
    bands_now: tuple[Mapping[str, str | None], Mapping[str, str | None]] = ({}, {}),
    min_cancellations: int = 30,
    margin: float = 0.02,
    rounds: int = 1000,
    seed: int = 0,
    cancellations: int | None = None,
) -> Verdict:
    """Whether to propose ``candidate`` over ``current``, from both cards' held-out points; ``bands_now``:
    every account's band today under (current, candidate), for the count shown before promotion;
    ``cancellations``: the book's count held against ``min_cancellations`` (default: the churners among
    the held-out points)."""
    now, new = figures(current), figures(candidate)
    ci_now, ci_new = bootstrap_auc(current, candidate, rounds=rounds, seed=seed)
    reasons = []
    seen = now.churners if cancellations is None else cancellations
    if seen < min_cancellations:
        where = "on held-out time" if cancellations is None else "in the book"
        reasons.append(f"{seen} cancellations {where}, fewer than {min_cancellations}")
    if now.auc is None or new.auc is None:
        reasons.append("no AUC: held-out time needs both churners and accounts that stayed")
    elif new.auc < now.auc + margin:
        reasons.append(f"AUC {new.auc:.3f} is not above {now.auc:.3f} by {margin}")
    if ci_now and ci_new and ci_new.low <= ci_now.high:
        reasons.append(
            f"AUC intervals overlap: candidate {ci_new.low:.3f}-{ci_new.high:.3f}, "
            f"in force {ci_now.low:.3f}-{ci_now.high:.3f}"
        )
    for name in ("red_precision", "red_recall"):
        a, b = getattr(now, name), getattr(new, name)
        if a is not None and (b is None or b < a):
            reasons.append(
                f"{name.replace('_', ' ')} would drop: {a:.3f} -> {'n/a' if b is None else f'{b:.3f}'}"
            )
    changes = band_changes(*bands_now)
    return Verdict(
        propose=not reasons,
        reasons=reasons,
        churners=now.churners,
        current=CardResult(figures=now, auc_ci=ci_now),
        candidate=CardResult(figures=new, auc_ci=ci_new),
        band_changes=changes,
        accounts_changing_band=sum(changes.values()),
    )
