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

from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from statistics import fmean, quantiles
from typing import Any

from pydantic import BaseModel, Field

PORTFOLIO_SCHEMA_VERSION = 1
BANDS = ("red", "yellow", "green")
RENEWAL_WINDOW_DAYS = 90
#: Figures served with quartiles.
SPREAD = ("adoption", "dau_mau", "ttfv_days", "onboarding_days", "first_response_hours")
PERCENT = frozenset({"adoption", "dau_mau"})  # 0-1 in the snapshot, % in the figures
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
    last_band: str | None = None  # a cancelled account's band when it was last scored
    unpaid: int = 0  # failed invoices not paid yet
    adoption: float | None = None  # active users 30 d / seats (0-1)
    dau_mau: float | None = None  # 0-1
    active_users: int = 0  # 30 d
    ttfv_days: float | None = None  # sign-up to first key-feature use
    first_response_hours: float | None = None  # mean over the account's tickets of 30 d
    signup_month: str | None = None  # the account's sign-up month (its cohort)
    onboarded: bool | None = None  # every key feature used (None: no key features configured)
    onboarding_days: float | None = None  # sign-up to onboarding completed

    @property
    def paid(self) -> bool:
        """Paying and not behind: MRR > 0, not canceled, no unpaid invoice."""
        return self.mrr > 0 and not self.canceled and not self.unpaid

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
        last_band=snap.get("last_band"),
        nps=m.get("nps"),
        nps_n=int(m.get("nps_responses") or 0),
        csat=m.get("csat_90d"),
        csat_n=int(m.get("csat_responses_90d") or 0),
        ces=m.get("ces_mean_90d"),
        ces_n=int(m.get("ces_responses_90d") or 0),
        renewal=None if days is None else as_of.date() + timedelta(days=int(days)),
        drivers=tuple(d.get("text", "") for d in (snap.get("drivers") or [])[:3]),
        unpaid=int(m.get("unpaid_invoices") or 0),
        adoption=m.get("adoption_rate"),
        dau_mau=m.get("dau_mau"),
        active_users=int(m.get("active_users_30d") or 0),
        ttfv_days=m.get("ttfv_days"),
        first_response_hours=m.get("first_response_hours_30d"),
        signup_month=_dt(acc["signed_up_at"]).strftime("%Y-%m") if acc.get("signed_up_at") else None,
        onboarded=m.get("onboarded"),
        onboarding_days=m.get("onboarding_days"),
    )


# --- periods: "2026-11" (a month), "2026-Q4" (a quarter) or "2026" (a year)


def quarter_of(month: str) -> str:
    y, m = month.split("-")
    return f"{y}-Q{(int(m) - 1) // 3 + 1}"


def period_months(period: str) -> list[str]:
    """The months of a period; ValueError for anything but YYYY-MM, YYYY-Qn or YYYY."""
    if len(period) == 4 and period.isdigit():
        return [f"{period}-{m:02d}" for m in range(1, 13)]
    y, rest = period.split("-", 1)
    year = int(y)
    if rest.startswith("Q") and rest[1:] in ("1", "2", "3", "4"):
        first = (int(rest[1:]) - 1) * 3 + 1
        return [f"{year:04d}-{first + i:02d}" for i in range(3)]
    month = int(rest)
    if len(rest) != 2 or not 1 <= month <= 12:
        raise ValueError(f"not a period (YYYY-MM or YYYY-Qn): {period!r}")
    return [f"{year:04d}-{month:02d}"]


def month_days(month: str) -> tuple[date, date]:
    """The first and last day of a month (YYYY-MM)."""
    y, m = (int(x) for x in month.split("-"))
    first = date(y, m, 1)
    return first, (date(y + 1, 1, 1) if m == 12 else date(y, m + 1, 1)) - timedelta(days=1)


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


class Distribution(BaseModel):
    """A figure over the accounts that have it: how many, the mean and the quartiles (linear
    interpolation between ranks, ``statistics.quantiles(method="inclusive")``)."""

    accounts: int
    mean: float
    p25: float
    p50: float
    p75: float


def distribution(values: list[float]) -> Distribution | None:
    if not values:
        return None
    q = quantiles(values, n=4, method="inclusive") if len(values) > 1 else [values[0]] * 3
    return Distribution(
        accounts=len(values),
        mean=round(fmean(values), 2),
        p25=round(q[0], 2),
        p50=round(q[1], 2),
        p75=round(q[2], 2),
    )


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
    paying_accounts: int = 0  # active with MRR > 0 (ARPA's denominator)
    accounts_by_segment: dict[str, int] = Field(default_factory=dict)  # active accounts
    #: Cohort accounts lost in the period by their last band (for the churn-neutral deltas).
    churned_by_band: dict[str, int] = Field(default_factory=dict)
    churned_mrr_by_band: dict[str, float] = Field(default_factory=dict)
    #: Renewals due in the period (a renewal date within it, up to the latest day counted) and outcomes.
    renewals_due_accounts: int = 0
    renewals_due_mrr: float = 0
    renewals_renewed_accounts: int = 0
    renewals_renewed_mrr: float = 0
    renewals_lost_accounts: int = 0  # canceled instead
    renewals_open_accounts: int = 0  # neither renewed nor canceled yet
    renewal_rate: float | None = None  # renewed / due x 100
    #: Active accounts whose renewal date is past and did not move forward (listed apart, never dropped).
    renewals_overdue_accounts: int = 0
    renewals_overdue_mrr: float = 0
    renewals_overdue: list[AccountRef] = Field(default_factory=list)  # oldest first, at most 100
    #: Adoption and engagement of the active accounts (their month-end points), in % / days / hours:
    adoption: float | None = None  # mean adoption rate (active users 30 d / seats) x 100
    dau_mau: float | None = None  # mean DAU/MAU x 100
    active_users: int = 0  # Σ active users 30 d
    ttfv_days: float | None = None  # median time to first value (first key-feature use), days
    first_response_hours: float | None = None  # median of the accounts' mean first response, 30 d
    #: Onboarding completion: onboarded / active accounts with a milestone (key features) x 100, and the
    #: median days from sign-up to completion of those onboarded (distribution: onboarding_days).
    onboarding_accounts: int = 0
    onboarded_accounts: int = 0
    onboarding_completion: float | None = None
    onboarding_days: float | None = None
    distributions: dict[str, Distribution] = Field(default_factory=dict)  # the same, with quartiles


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
    paying: int = 0
    segments: dict[str, int] = field(default_factory=dict)
    churned_bands: dict[str, int] = field(default_factory=dict)
    churned_band_mrr: dict[str, Decimal] = field(default_factory=dict)
    #: (due date, outcome "renewed" / "lost" / "open", MRR at the start of the month)
    due: list[tuple[date, str, Decimal]] = field(default_factory=list)
    active_users: int = 0
    onboarding_n: int = 0  # active accounts with a milestone
    onboarded_n: int = 0
    spread: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in SPREAD})


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
            due = _renewals_due(points, months)
            for g in ("all", f"segment:{end.segment}", f"csm:{end.csm}"):
                acc = groups.get(g)
                if acc is None:
                    acc = groups[g] = _Acc()
                _add(acc, aid, start, end)
                acc.due.extend(due)
        ref = max(ends, default=None)
        return {g: _finish(period, g, acc, ref) for g, acc in sorted(groups.items())}


def _latest(points: dict[str, Point], month: str) -> Point | None:
    best = max((m for m in points if m <= month), default=None)
    return None if best is None else points[best]


def _renewals_due(points: dict[str, Point], months: list[str]) -> list[tuple[date, str, Decimal]]:
    """Each month's renewal due: the date the account had at the start of the month falls in the month;
    renewed if by the month's end that date moved forward with the subscription still paid, lost if it
    was canceled, else open. (Whether a due date is reached yet is decided against the latest day.)"""
    keys = sorted(points)
    out = []
    for month in months:
        i = bisect_left(keys, month)  # keys[:i] are the months before this one
        if not i:
            continue
        start = points[keys[i - 1]]
        due = start.renewal
        if due is None or due.year != int(month[:4]) or due.month != int(month[5:]) or not start.paid:
            continue
        end = points[keys[bisect_right(keys, month) - 1]]
        if end.canceled:
            outcome = "lost"
        elif end.renewal is not None and end.renewal > due and end.paid:
            outcome = "renewed"
        else:
            outcome = "open"
        out.append((due, outcome, start.mrr))
    return out


def _add(acc: _Acc, aid: str, start: Point | None, end: Point) -> None:
    in_cohort = start is not None and start.mrr > 0 and not start.canceled
    if in_cohort:
        assert start is not None
        acc.start_n += 1
        acc.start += start.mrr
        if end.canceled:
            acc.churned += start.mrr
            acc.churned_n += 1
            lost_band = end.band or end.last_band or start.band or "none"
            acc.churned_bands[lost_band] = acc.churned_bands.get(lost_band, 0) + 1
            acc.churned_band_mrr[lost_band] = acc.churned_band_mrr.get(lost_band, Decimal(0)) + start.mrr
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
    acc.paying += end.mrr > 0
    acc.segments[end.segment] = acc.segments.get(end.segment, 0) + 1
    acc.active_users += end.active_users
    if end.onboarded is not None:
        acc.onboarding_n += 1
        acc.onboarded_n += end.onboarded
    for key, value in (
        ("adoption", end.adoption),
        ("dau_mau", end.dau_mau),
        ("ttfv_days", end.ttfv_days),
        ("onboarding_days", end.onboarding_days),
        ("first_response_hours", end.first_response_hours),
    ):
        if value is not None:
            acc.spread[key].append(value * 100 if key in PERCENT else value)
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
    overdue = sorted(
        (
            (aid, p)
            for aid, p in a.renewals
            if today is not None and p.renewal is not None and p.renewal < today
        ),
        key=lambda r: (r[1].renewal, r[0]),
    )
    due = [d for d in a.due if today is not None and d[0] <= today]
    spread = {k: d for k, v in a.spread.items() if (d := distribution(v)) is not None}
    renewed = [d for d in due if d[1] == "renewed"]
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
        paying_accounts=a.paying,
        accounts_by_segment=dict(sorted(a.segments.items())),
        churned_by_band=a.churned_bands,
        churned_mrr_by_band={b: _money(v) for b, v in a.churned_band_mrr.items()},
        renewals_due_accounts=len(due),
        renewals_due_mrr=_money(sum((d[2] for d in due), Decimal(0))),
        renewals_renewed_accounts=len(renewed),
        renewals_renewed_mrr=_money(sum((d[2] for d in renewed), Decimal(0))),
        renewals_lost_accounts=sum(d[1] == "lost" for d in due),
        renewals_open_accounts=sum(d[1] == "open" for d in due),
        renewal_rate=_pct(len(renewed), len(due)),
        renewals_overdue_accounts=len(overdue),
        renewals_overdue_mrr=_money(sum((p.mrr for _, p in overdue), Decimal(0))),
        renewals_overdue=[_ref(aid, p) for aid, p in overdue[:LIST_LIMIT]],
        adoption=spread["adoption"].mean if "adoption" in spread else None,
        dau_mau=spread["dau_mau"].mean if "dau_mau" in spread else None,
        active_users=a.active_users,
        ttfv_days=spread["ttfv_days"].p50 if "ttfv_days" in spread else None,
        first_response_hours=spread["first_response_hours"].p50 if "first_response_hours" in spread else None,
        onboarding_accounts=a.onboarding_n,
        onboarded_accounts=a.onboarded_n,
        onboarding_completion=_pct(a.onboarded_n, a.onboarding_n),
        onboarding_days=spread["onboarding_days"].p50 if "onboarding_days" in spread else None,
        distributions=spread,
    )


# --- cohorts by sign-up month and tenure

COHORT_TENURES = (1, 3, 6, 12)


class CohortCell(BaseModel):
    """A sign-up cohort ``tenure`` months on: the end of month ``month`` (to date if it is the latest)."""

    tenure: int
    month: str
    to_date: bool
    retained_accounts: int
    logo_retention: float | None  # retained (not canceled) / cohort accounts x 100
    mrr: float  # the retained accounts' MRR
    nrr: float | None  # MRR now / the cohort's MRR at the end of its sign-up month x 100
    adoption: float | None  # mean adoption rate of the retained accounts x 100
    #: onboarded / retained accounts with a milestone x 100 (docs/portfolio.md, "Onboarding completion")
    onboarding: float | None = None


class Cohort(BaseModel):
    cohort: str  # sign-up month
    accounts: int  # known from their sign-up month on
    starting_mrr: float  # at the end of the sign-up month
    cells: list[CohortCell]


def add_months(month: str, n: int) -> str:
    y, m = (int(x) for x in month.split("-"))
    y, m = divmod(y * 12 + m - 1 + n, 12)
    return f"{y:04d}-{m + 1:02d}"


def cohorts(
    accounts: dict[str, dict[str, Point]],
    tenures: Iterable[int] = COHORT_TENURES,
    segment: str | None = None,
) -> list[Cohort]:
    """Retention, NRR, adoption and onboarding by sign-up month at each tenure. An account is in its
    sign-up month's cohort when healthmon has a point of that month (else its start is unknown and it is
    left out); a tenure is shown once its month has begun (the latest month: to date). ``segment``: only
    the accounts whose latest point is in that segment (their segment now)."""
    latest = max((m for points in accounts.values() for m in points), default=None)
    members: dict[str, list[dict[str, Point]]] = {}
    for points in accounts.values():
        if segment is not None and points[max(points)].segment != segment:
            continue
        first = points[min(points)]
        signup = first.signup_month
        if signup is not None and signup in points:
            members.setdefault(signup, []).append(points)
    out = []
    for cohort, group in sorted(members.items()):
        start = sum((pts[cohort].mrr for pts in group), Decimal(0))
        cells = []
        for k in tenures:
            month = add_months(cohort, k)
            if latest is None or month > latest:
                break
            ends = [_latest(pts, month) for pts in group]
            kept = [p for p in ends if p is not None and not p.canceled]
            mrr = sum((p.mrr for p in kept), Decimal(0))
            adoption = [p.adoption * 100 for p in kept if p.adoption is not None]
            milestone = [p.onboarded for p in kept if p.onboarded is not None]
            cells.append(
                CohortCell(
                    tenure=k,
                    month=month,
                    to_date=month == latest,
                    retained_accounts=len(kept),
                    logo_retention=_pct(len(kept), len(group)),
                    mrr=_money(mrr),
                    nrr=_pct(mrr, start),
                    adoption=round(fmean(adoption), 2) if adoption else None,
                    onboarding=_pct(sum(milestone), len(milestone)),
                )
            )
        out.append(Cohort(cohort=cohort, accounts=len(group), starting_mrr=_money(start), cells=cells))
    return out


def segments(accounts: dict[str, dict[str, Point]]) -> list[str]:
    """The segments the accounts are in now (by their latest point)."""
    return sorted({points[max(points)].segment for points in accounts.values() if points})


def affected_periods(changed_months: Iterable[str], known_months: Iterable[str]) -> list[str]:
    """Periods whose figures a change in ``changed_months`` can move: those months, every later month
    (its starting MRR may be carried from them) and the quarters and years of all of these."""
    changed = sorted(set(changed_months))
    if not changed:
        return []
    months = sorted({m for m in known_months if m >= changed[0]} | set(changed))
    quarters = sorted({quarter_of(m) for m in months})
    return months + quarters + sorted({m[:4] for m in months})
