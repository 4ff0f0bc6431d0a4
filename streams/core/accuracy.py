"""Does red mean churn in *this* book? Live score accuracy from the read model's daily score lines.

Seed 000: "Track accuracy: do low-health-score customers actually churn?". ``healthmon evaluate`` answers it
offline for a simulation; this module answers it for the live book, with the same method (see
streams/sim/evaluate.py): each account that cancelled is scored as of N days before its cancellation, each
account still a customer is scored at one of those same moments (round-robin), and from those scores come

- AUC: the chance a churner scored below an account that stayed (0.5 = a coin);
- precision and recall of the red band as a churn prediction;
- bottom-decile lift: the churn rate of the lowest-scored 10 % over the overall rate.

"Now" is the newest day in the data (never the clock), so a replayed or simulated book reads the same.
Pure: the per-account lines come in as :class:`Track`.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TypeVar

from pydantic import BaseModel

from streams.core.metrics import ratio

HORIZONS = (30, 60)  # days before the cancellation the score is read


def auc(churner_scores: Sequence[float], stayer_scores: Sequence[float]) -> float | None:
    """P(churner scored lower than stayer), ties counting half (Mann-Whitney U over all pairs)."""
    if not churner_scores or not stayer_scores:
        return None
    stayers = sorted(stayer_scores)
    wins = 0.0
    for c in churner_scores:
        lo = bisect.bisect_left(stayers, c)
        hi = bisect.bisect_right(stayers, c)
        wins += (len(stayers) - hi) + 0.5 * (hi - lo)
    return wins / (len(churner_scores) * len(stayers))


@dataclass(frozen=True)
class Point:
    """One account's score at one moment: ``churns`` says whether it is a churner's."""

    account_id: str
    churns: bool
    score: float
    band: str


class Figures(BaseModel):
    """How well a set of scored points separated churners from accounts that stayed."""

    scored: int
    churners: int
    auc: float | None
    red_precision: float | None
    red_recall: float | None
    at_risk_precision: float | None
    at_risk_recall: float | None
    bottom_decile_churn_rate: float | None
    base_churn_rate: float | None
    bottom_decile_lift: float | None


def figures(points: Sequence[Point]) -> Figures:
    """AUC, red (and red + yellow) precision / recall and bottom-decile lift of ``points``."""
    churn = [p.score for p in points if p.churns]
    stay = [p.score for p in points if not p.churns]

    def precision_recall(bands: set[str]) -> tuple[float | None, float | None]:
        flagged = [p for p in points if p.band in bands]
        hits = sum(1 for p in flagged if p.churns)
        return ratio(hits, len(flagged)), ratio(hits, len(churn))

    red_p, red_r = precision_recall({"red"})
    risk_p, risk_r = precision_recall({"red", "yellow"})
    ranked = sorted(points, key=lambda p: (p.score, p.account_id))
    decile = ranked[: max(1, len(ranked) // 10)] if ranked else []
    base = ratio(len(churn), len(points))
    decile_rate = ratio(sum(1 for p in decile if p.churns), len(decile))
    return Figures(
        scored=len(points),
        churners=len(churn),
        auc=auc(churn, stay),
        red_precision=red_p,
        red_recall=red_r,
        at_risk_precision=risk_p,
        at_risk_recall=risk_r,
        bottom_decile_churn_rate=decile_rate,
        base_churn_rate=base,
        bottom_decile_lift=ratio(decile_rate, base) if decile_rate is not None and base else None,
    )


@dataclass
class Track:
    """One account's daily line, oldest first: (UTC day number, score or None, band, canceled)."""

    account_id: str
    segment: str | None
    days: list[tuple[int, float | None, str, bool]] = field(default_factory=list)

    _index: list[int] | None = field(default=None, init=False, repr=False, compare=False)
    _first_canceled: int | None = field(default=None, init=False, repr=False, compare=False)

    def _prepare(self) -> list[int]:
        """The day numbers (for bisect) and the first canceled position, once: every figure reads them."""
        if self._index is None:
            self._index = [d[0] for d in self.days]
            self._first_canceled = next((i for i, d in enumerate(self.days) if d[3]), None)
        return self._index

    def canceled_day(self) -> int | None:
        """The first canceled day after a day as a customer (None if never seen to cancel in the line:
        a line that starts canceled cancelled before it, on a day it does not know)."""
        self._prepare()
        i = self._first_canceled
        return self.days[i][0] if i else None

    def ever_canceled(self) -> bool:
        self._prepare()
        return self._first_canceled is not None

    def at(self, day: int) -> tuple[float, str] | None:
        """The score and band of the latest scored day at or before ``day``."""
        i = bisect.bisect_right(self._prepare(), day)
        while i:
            i -= 1
            _, score, band, _ = self.days[i]
            if score is not None:
                return score, band
        return None


class Cancellation(BaseModel):
    account_id: str
    segment: str | None
    canceled_on: str
    month: str
    score_30: float | None
    band_30: str | None
    score_60: float | None
    band_60: str | None


class MonthRow(BaseModel):
    """The cancellations of one month (and segment: "all" for the whole book), scored 30 days before."""

    month: str
    segment: str
    cancellations: int
    mean_score_30: float | None
    red_30: int
    figures: Figures


class Accuracy(BaseModel):
    as_of: str | None
    window_days: int
    window_start: str | None
    accounts: int
    #: Over the rolling window, by horizon ("30", "60" days before cancellation): whole book and segments.
    window: dict[str, Figures]
    by_segment: dict[str, dict[str, Figures]]
    months: list[MonthRow]
    cancellations: list[Cancellation]


def _iso(day: int) -> str:
    return (date(1970, 1, 1) + timedelta(days=day)).isoformat()


T = TypeVar("T")


def first_scored(at: Callable[[int], T | None], moments: Sequence[int], i: int) -> tuple[int, T] | None:
    """A stayer's moment: round-robin from the ``i``-th of the churners' ``moments``, the first at which
    it had a score (``at``), so that every stayer is compared at a moment it existed."""
    for k in range(len(moments)):
        m = moments[(i + k) % len(moments)]
        if (got := at(m)) is not None:
            return m, got
    return None


def _compare(tracks: Sequence[Track], churners: Sequence[tuple[Track, int]], days_before: int) -> list[Point]:
    """Churners as of ``days_before`` their cancellation; each stayer (never canceled) at one of those
    moments, round-robin, skipping moments before it had a score (as streams/sim/evaluate.py)."""
    moments = [day - days_before for _, day in churners]
    points = []
    for t, m in zip((t for t, _ in churners), moments, strict=True):
        got = t.at(m)
        if got is not None:
            points.append(Point(t.account_id, True, got[0], got[1]))
    if not moments:
        return points
    stayers = sorted((t for t in tracks if not t.ever_canceled()), key=lambda t: t.account_id)
    for i, t in enumerate(stayers):
        if (found := first_scored(t.at, moments, i)) is not None:
            points.append(Point(t.account_id, False, *found[1]))
    return points


def accuracy(tracks: Iterable[Track], window_days: int = 180, now: int | None = None) -> Accuracy:
    """The book's score accuracy over the ``window_days`` to ``now`` (a UTC day number; default the newest
    day of the lines) and month by month over the cancellations the lines hold."""
    tracks = sorted(tracks, key=lambda t: t.account_id)
    newest = max((t.days[-1][0] for t in tracks if t.days), default=None)
    now = newest if now is None else now
    if now is None:
        return Accuracy(
            as_of=None,
            window_days=window_days,
            window_start=None,
            accounts=len(tracks),
            window={},
            by_segment={},
            months=[],
            cancellations=[],
        )
    start = now - window_days + 1
    churned = [(t, d) for t in tracks if (d := t.canceled_day()) is not None and d <= now]
    cancellations = []
    for t, d in sorted(churned, key=lambda x: (x[1], x[0].account_id)):
        s30, s60 = t.at(d - 30), t.at(d - 60)
        cancellations.append(
            Cancellation(
                account_id=t.account_id,
                segment=t.segment,
                canceled_on=_iso(d),
                month=_iso(d)[:7],
                score_30=s30[0] if s30 else None,
                band_30=s30[1] if s30 else None,
                score_60=s60[0] if s60 else None,
                band_60=s60[1] if s60 else None,
            )
        )
    in_window = [(t, d) for t, d in churned if d >= start]
    segments = sorted({t.segment or "" for t in tracks})
    window = {str(h): figures(_compare(tracks, in_window, h)) for h in HORIZONS}
    by_segment = {}
    for seg in segments:
        members = [t for t in tracks if (t.segment or "") == seg]
        chosen = [(t, d) for t, d in in_window if (t.segment or "") == seg]
        by_segment[seg or "(none)"] = {str(h): figures(_compare(members, chosen, h)) for h in HORIZONS}
    months: list[MonthRow] = []
    for month in sorted({c.month for c in cancellations}):
        for seg in ["all", *segments]:
            members = [t for t in tracks if seg == "all" or (t.segment or "") == seg]
            chosen = [
                (t, d)
                for t, d in churned
                if _iso(d)[:7] == month and (seg == "all" or (t.segment or "") == seg)
            ]
            if not chosen:
                continue
            rows = [
                c for c in cancellations if c.month == month and (seg == "all" or (c.segment or "") == seg)
            ]
            before = [c.score_30 for c in rows if c.score_30 is not None]
            months.append(
                MonthRow(
                    month=month,
                    segment=seg if seg == "all" or seg else "(none)",
                    cancellations=len(rows),
                    mean_score_30=round(sum(before) / len(before), 1) if before else None,
                    red_30=sum(1 for c in rows if c.band_30 == "red"),
                    figures=figures(_compare(members, chosen, 30)),
                )
            )
    return Accuracy(
        as_of=_iso(now),
        window_days=window_days,
        window_start=_iso(start),
        accounts=len(tracks),
        window=window,
        by_segment=by_segment,
        months=months,
        cancellations=cancellations,
    )


def parse_line(members: Iterable[bytes | str]) -> list[tuple[int, float | None, str, bool]]:
    """Members of a ``{p}scoreline:{account}`` set (``day|score|band|canceled``), oldest first."""
    out = []
    for raw in members:
        day, score, band, canceled = (raw.decode() if isinstance(raw, bytes) else raw).split("|")
        out.append((int(day), float(score) if score else None, band, canceled == "1"))
    out.sort(key=lambda d: d[0])
    return out


def line_member(day: int, score: float | None, band: str | None, canceled: bool) -> str:
    """One day of a score line, as :func:`parse_line` reads it (~20 bytes)."""
    return f"{day}|{'' if score is None else round(float(score), 2)}|{band or ''}|{int(bool(canceled))}"


def tracks_from(lines: Mapping[str, tuple[str | None, Iterable[bytes | str]]]) -> list[Track]:
    """Tracks from account -> (segment, line members)."""
    return [Track(aid, seg, parse_line(members)) for aid, (seg, members) in lines.items()]
