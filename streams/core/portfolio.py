"""Portfolio metrics for CS leaders (NRR, GRR, churn, bands, NPS/CSAT/CES, risk, renewals), from snapshots.

Pure: snapshots in, figures out; no Kafka, Redis or clock. Each account keeps one :class:`Point` per
calendar month (its last snapshot of that month), so a snapshot costs O(1) and a period's figures are
one pass over the accounts. Formulas are the seeds' (docs/portfolio.md has them with a worked example):

- starting cohort of a period: accounts with MRR > 0 and not canceled at the end of the month before it
- churned MRR: the starting MRR of cohort accounts canceled by the end of the period (logo lost)
- expansion / contraction: the rise / fall of each surviving cohort account's MRR over the period
- NRR = (start + expansion - contraction - churned) / start x 100; GRR = (start - contraction - churned)
  / start x 100; logo churn = lost / starting accounts x 100; revenue churn = (churned + contraction) /
  start x 100 (seed 001: cancellations and downgrades)
- NPS pools every account's answers (% promoters - % detractors over all answers), CSAT likewise (% of
  4-5 answers), CES is the mean of all answers; accounts are weighed by their number of answers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, Field

PORTFOLIO_SCHEMA_VERSION = 1
BANDS = ("red", "yellow", "green")
RENEWAL_WINDOW_DAYS = 90
LIST_LIMIT = 100


@dataclass(frozen=True, slots=True)
class Point:
    """One account at one moment: what the portfolio needs of a snapshot."""

    as_of: datetime
    name: str
    segment: str
    csm: str
    csm_name: str
    mrr: Decimal
    canceled: bool
    score: float | None
    band: str | None
    nps: float | None
    nps_n: int
    csat: float | None
    csat_n: int
    ces: float | None
    ces_n: int
    renewal: date | None
    drivers: tuple[str, ...] = ()

    @property
    def month(self) -> str:
        return f"{self.as_of.year:04d}-{self.as_of.month:02d}"


def _dt(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def point_from_snapshot(snap: dict) -> Point:
    """A :class:`Point` from a cs.health snapshot (as JSON-decoded); raises KeyError/ValueError if it is not one."""
    acc = snap.get("account") or {}
    m = snap.get("metrics") or {}
    as_of = _dt(snap["as_of"])
    days = m.get("days_to_renewal")
    return Point(
        as_of=as_of,
        name=acc.get("name") or snap["account_id"],
        segment=acc.get("segment") or "unknown",
        csm=acc.get("csm_email") or "unassigned",
        csm_name=acc.get("csm_name") or "",
        mrr=Decimal(str(m.get("mrr") or 0)),
        canceled=bool(m.get("canceled")),
        score=snap.get("score"),
        band=snap.get("band"),
        nps=m.get("nps"),
        nps_n=int(m.get("nps_responses") or 0),
        csat=m.get("csat_90d"),
        csat_n=int(m.get("csat_responses_90d") or 0),
        ces=m.get("ces_mean_90d"),
        ces_n=int(m.get("ces_responses_90d") or 0),
        renewal=None if days is None else as_of.date() + timedelta(days=int(days)),
        drivers=tuple(d.get("text", "") for d in (snap.get("drivers") or [])[:3]),
    )


# --- periods: "2026-11" (a month) or "2026-Q4" (a quarter)


def quarter_of(month: str) -> str:
    y, m = month.split("-")
    return f"{y}-Q{(int(m) - 1) // 3 + 1}"


def period_months(period: str) -> list[str]:
    """The months of a period; ValueError for anything but YYYY-MM or YYYY-Qn."""
    y, rest = period.split("-", 1)
    year = int(y)
    if rest.startswith("Q") and rest[1:] in ("1", "2", "3", "4"):
        first = (int(rest[1:]) - 1) * 3 + 1
        return [f"{year:04d}-{first + i:02d}" for i in range(3)]
    month = int(rest)
    if len(rest) != 2 or not 1 <= month <= 12:
        raise ValueError(f"not a period (YYYY-MM or YYYY-Qn): {period!r}")
    return [f"{year:04d}-{month:02d}"]


def previous_month(month: str) -> str:
    y, m = (int(x) for x in month.split("-"))
    return f"{y - 1:04d}-12" if m == 1 else f"{y:04d}-{m - 1:02d}"


# --- published figures


class AccountRef(BaseModel):
    account_id: str
    name: str
    segment: str
    csm: str
    csm_name: str
    mrr: float
    score: float | None
    band: str | None
    drivers: list[str] = Field(default_factory=list)
    renewal_date: date | None = None


class PortfolioMetrics(BaseModel):
    """One period's figures for one group: the whole book (``all``), a segment or a CSM (cs.portfolio)."""

    schema_version: int = PORTFOLIO_SCHEMA_VERSION
    period: str
    group: str  # "all", "segment:<segment>" or "csm:<email>"
    as_of: datetime | None  # the latest snapshot counted
    starting_accounts: int = 0
    starting_mrr: float = 0
    expansion_mrr: float = 0
    contraction_mrr: float = 0
    churned_mrr: float = 0
    churned_accounts: int = 0
    new_accounts: int = 0
    new_mrr: float = 0
    ending_mrr: float = 0
    nrr: float | None = None
    grr: float | None = None
    logo_churn_rate: float | None = None
    revenue_churn_rate: float | None = None
    expansion_rate: float | None = None
    active_accounts: int = 0
    accounts_by_band: dict[str, int] = Field(default_factory=dict)
    mrr_by_band: dict[str, float] = Field(default_factory=dict)
    healthy_pct: float | None = None  # green / scored active accounts x 100
    nps: float | None = None
    nps_responses: int = 0
    csat: float | None = None
    csat_responses: int = 0
    ces: float | None = None
    ces_responses: int = 0
    at_risk_accounts: int = 0
    at_risk_mrr: float = 0
    at_risk: list[AccountRef] = Field(default_factory=list)  # red, not canceled; by MRR, at most 100
    renewals_90d_accounts: int = 0
    renewals_90d_mrr: float = 0
    renewals_90d: list[AccountRef] = Field(default_factory=list)  # by renewal date, at most 100


@dataclass
class _Acc:
    """Running sums for one group."""

    start_n: int = 0
    start: Decimal = Decimal(0)
    expansion: Decimal = Decimal(0)
    contraction: Decimal = Decimal(0)
    churned: Decimal = Decimal(0)
    churned_n: int = 0
    new_n: int = 0
    new: Decimal = Decimal(0)
    ending: Decimal = Decimal(0)
    active: int = 0
    bands: dict[str, int] = field(default_factory=lambda: dict.fromkeys((*BANDS, "none"), 0))
    band_mrr: dict[str, Decimal] = field(default_factory=lambda: {b: Decimal(0) for b in (*BANDS, "none")})
    nps_net: float = 0.0  # promoters - detractors, in answers
    nps_n: int = 0
    csat_sat: float = 0.0
    csat_n: int = 0
    ces_sum: float = 0.0
    ces_n: int = 0
    at_risk: list[tuple[str, Point]] = field(default_factory=list)
    renewals: list[tuple[str, Point]] = field(default_factory=list)
    as_of: datetime | None = None


def _pct(num: Decimal | float, den: Decimal | float) -> float | None:
    return round(float(num) / float(den) * 100, 2) if den else None


def _money(x: Decimal) -> float:
    return float(round(x, 2))


def _ref(aid: str, p: Point) -> AccountRef:
    return AccountRef(
        account_id=aid,
        name=p.name,
        segment=p.segment,
        csm=p.csm,
        csm_name=p.csm_name,
        mrr=_money(p.mrr),
        score=p.score,
        band=p.band,
        drivers=list(p.drivers),
        renewal_date=p.renewal,
    )


class PortfolioBook:
    """Every account's month-end points; ``apply`` a snapshot, ``compute`` a period."""

    def __init__(self) -> None:
        self.accounts: dict[str, dict[str, Point]] = {}

    def apply(self, account_id: str, point: Point) -> str | None:
        """Keep ``point`` as its month's end unless a later one is there; the month changed, or None."""
        months = self.accounts.setdefault(account_id, {})
        old = months.get(point.month)
        if old is not None and old.as_of > point.as_of:
            return None
        months[point.month] = point
        return point.month

    def months(self) -> list[str]:
        return sorted({m for months in self.accounts.values() for m in months})

    def compute(self, period: str) -> dict[str, PortfolioMetrics]:
        """The period's figures for the whole book, each segment and each CSM (keyed by group)."""
        months = period_months(period)
        first, last = months[0], months[-1]
        before = previous_month(first)
        groups: dict[str, _Acc] = {}
        ends: list[datetime] = []
        for aid, points in self.accounts.items():
            start = _latest(points, before)
            end = _latest(points, last)
            if end is None:
                continue
            ends.append(end.as_of)
            for g in ("all", f"segment:{end.segment}", f"csm:{end.csm}"):
                acc = groups.get(g)
                if acc is None:
                    acc = groups[g] = _Acc()
                _add(acc, aid, start, end)
        ref = max(ends, default=None)
        return {g: _finish(period, g, acc, ref) for g, acc in sorted(groups.items())}


def _latest(points: dict[str, Point], month: str) -> Point | None:
    best = max((m for m in points if m <= month), default=None)
    return None if best is None else points[best]


def _add(acc: _Acc, aid: str, start: Point | None, end: Point) -> None:
    in_cohort = start is not None and start.mrr > 0 and not start.canceled
    if in_cohort:
        assert start is not None
        acc.start_n += 1
        acc.start += start.mrr
        if end.canceled:
            acc.churned += start.mrr
            acc.churned_n += 1
        elif end.mrr > start.mrr:
            acc.expansion += end.mrr - start.mrr
        else:
            acc.contraction += start.mrr - end.mrr
    elif not end.canceled and end.mrr > 0:
        acc.new_n += 1
        acc.new += end.mrr
    acc.as_of = end.as_of if acc.as_of is None else max(acc.as_of, end.as_of)
    if end.canceled:
        return
    acc.active += 1
    acc.ending += end.mrr
    band = end.band or "none"
    acc.bands[band] += 1
    acc.band_mrr[band] += end.mrr
    if end.nps is not None and end.nps_n:
        acc.nps_net += end.nps * end.nps_n / 100
        acc.nps_n += end.nps_n
    if end.csat is not None and end.csat_n:
        acc.csat_sat += end.csat * end.csat_n / 100
        acc.csat_n += end.csat_n
    if end.ces is not None and end.ces_n:
        acc.ces_sum += end.ces * end.ces_n
        acc.ces_n += end.ces_n
    if end.band == "red":
        acc.at_risk.append((aid, end))
    if end.renewal is not None:
        acc.renewals.append((aid, end))


def _finish(period: str, group: str, a: _Acc, ref: datetime | None) -> PortfolioMetrics:
    scored = sum(a.bands[b] for b in BANDS)
    today = ref.date() if ref is not None else None
    renewals = [
        (aid, p)
        for aid, p in a.renewals
        if today is not None
        and p.renewal is not None
        and today <= p.renewal <= today + timedelta(days=RENEWAL_WINDOW_DAYS)
    ]
    renewals.sort(key=lambda r: (r[1].renewal, r[0]))
    at_risk = sorted(a.at_risk, key=lambda r: (-r[1].mrr, r[0]))
    return PortfolioMetrics(
        period=period,
        group=group,
        as_of=a.as_of,
        starting_accounts=a.start_n,
        starting_mrr=_money(a.start),
        expansion_mrr=_money(a.expansion),
        contraction_mrr=_money(a.contraction),
        churned_mrr=_money(a.churned),
        churned_accounts=a.churned_n,
        new_accounts=a.new_n,
        new_mrr=_money(a.new),
        ending_mrr=_money(a.ending),
        nrr=_pct(a.start + a.expansion - a.contraction - a.churned, a.start),
        grr=_pct(a.start - a.contraction - a.churned, a.start),
        logo_churn_rate=_pct(a.churned_n, a.start_n),
        revenue_churn_rate=_pct(a.churned + a.contraction, a.start),
        expansion_rate=_pct(a.expansion, a.start),
        active_accounts=a.active,
        accounts_by_band=a.bands,
        mrr_by_band={b: _money(v) for b, v in a.band_mrr.items()},
        healthy_pct=_pct(a.bands["green"], scored),
        nps=None if not a.nps_n else round(a.nps_net / a.nps_n * 100, 2),
        nps_responses=a.nps_n,
        csat=None if not a.csat_n else round(a.csat_sat / a.csat_n * 100, 2),
        csat_responses=a.csat_n,
        ces=None if not a.ces_n else round(a.ces_sum / a.ces_n, 2),
        ces_responses=a.ces_n,
        at_risk_accounts=len(at_risk),
        at_risk_mrr=_money(sum((p.mrr for _, p in at_risk), Decimal(0))),
        at_risk=[_ref(aid, p) for aid, p in at_risk[:LIST_LIMIT]],
        renewals_90d_accounts=len(renewals),
        renewals_90d_mrr=_money(sum((p.mrr for _, p in renewals), Decimal(0))),
        renewals_90d=[_ref(aid, p) for aid, p in renewals[:LIST_LIMIT]],
    )


def affected_periods(changed_months: Iterable[str], known_months: Iterable[str]) -> list[str]:
    """Periods whose figures a change in ``changed_months`` can move: those months, every later month
    (its starting MRR may be carried from them) and the quarters of all of these."""
    changed = sorted(set(changed_months))
    if not changed:
        return []
    months = sorted({m for m in known_months if m >= changed[0]} | set(changed))
    quarters = sorted({quarter_of(m) for m in months})
    return months + quarters
