"""The leader's view over the portfolio figures: periods to date, trailing 12 months, honest deltas, the
CSM table and unit economics. Pure: figures (and the day) in, figures out; docs/portfolio.md has the
definitions and worked examples, tests/unit/test_leader.py reads them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import date
from typing import Literal

from pydantic import BaseModel, Field

from streams.core.portfolio import PortfolioMetrics, month_days, period_months, previous_month

#: Which way is better for the figures the page compares (the targets file says it for rated ones).
DIRECTION: dict[str, Literal["higher", "lower"]] = {
    "nrr": "higher",
    "grr": "higher",
    "logo_churn_rate": "lower",
    "revenue_churn_rate": "lower",
    "healthy_pct": "higher",
    "at_risk_mrr": "lower",
    "at_risk_accounts": "lower",
    "nps": "higher",
    "csat": "higher",
    "renewal_rate": "higher",
    "ending_mrr": "higher",
}
#: Figures of the period's end state that accounts leaving by churn move by themselves.
CHURN_SENSITIVE = frozenset({"healthy_pct", "at_risk_mrr", "at_risk_accounts"})
BANDS = ("red", "yellow", "green")
T12 = "T12-"


# --- periods


class PeriodProgress(BaseModel):
    """Where the latest day counted stands in a period: closed, or to date with the days elapsed."""

    period: str
    first_day: date
    last_day: date
    days_total: int
    days_elapsed: int
    to_date: bool  # the period holds the latest day: its figures are not final
    months: float  # the span measured so far, in months (a month to date: days elapsed / days in it)


def period_span(period: str) -> list[str]:
    """The months of any period the API knows: YYYY-MM, YYYY-Qn, YYYY, or T12-YYYY-MM (the 12 months
    through that month)."""
    if period.startswith(T12):
        last = period[len(T12) :]
        period_months(last)  # validates
        months = [last]
        while len(months) < 12:
            months.insert(0, previous_month(months[0]))
        return months
    return period_months(period)


def period_progress(period: str, today: date) -> PeriodProgress:
    months = period_span(period)
    first, last = month_days(months[0])[0], month_days(months[-1])[1]
    total = (last - first).days + 1
    elapsed = 0 if today < first else total if today > last else (today - first).days + 1
    to_date = first <= today <= last
    return PeriodProgress(
        period=period,
        first_day=first,
        last_day=last,
        days_total=total,
        days_elapsed=elapsed,
        to_date=to_date,
        months=round(len(months) * elapsed / total, 4) if to_date else float(len(months)),
    )


def last_closed_month(today: date) -> str:
    first = date(today.year, today.month, 1)
    return previous_month(f"{first.year:04d}-{first.month:02d}")


# --- trailing 12 months, chain-linked


class Trailing(BaseModel):
    """Annual NRR, GRR and churn from the closed months through ``last_month`` (at most 12), chain-linked:
    the monthly rates multiplied, and annualised (raised to 12 / months) when fewer than 12 months have a
    starting cohort."""

    period: str
    first_month: str | None
    last_month: str
    months_counted: int
    annualised: bool  # from fewer than 12 months
    nrr: float | None = None
    grr: float | None = None
    logo_churn_rate: float | None = None
    revenue_churn_rate: float | None = None
    logo_churn_monthly: float | None = None  # the monthly rate that compounds to the annual one
    revenue_churn_monthly: float | None = None


def _chain(factors: list[float], power: float) -> float:
    return math.prod(factors) ** power


def trailing_12(monthly: Iterable[PortfolioMetrics], last_month: str) -> Trailing:
    """Chain-link the months of ``monthly`` within the 12 through ``last_month`` that have a cohort."""
    span = set(period_span(T12 + last_month))
    rows = sorted(
        (m for m in monthly if m.period in span and m.nrr is not None and m.starting_mrr > 0),
        key=lambda m: m.period,
    )
    n = len(rows)
    out = Trailing(
        period=T12 + last_month,
        first_month=rows[0].period if rows else None,
        last_month=last_month,
        months_counted=n,
        annualised=0 < n < 12,
    )
    if not n:
        return out
    year = 12 / n

    def retained(key: str) -> list[float]:
        return [max(0.0, 1 - (getattr(r, key) or 0.0) / 100) for r in rows]

    out.nrr = round(_chain([max(0.0, (r.nrr or 0.0) / 100) for r in rows], year) * 100, 2)
    out.grr = round(_chain([max(0.0, (r.grr or 0.0) / 100) for r in rows], year) * 100, 2)
    out.logo_churn_rate = round((1 - _chain(retained("logo_churn_rate"), year)) * 100, 2)
    out.revenue_churn_rate = round((1 - _chain(retained("revenue_churn_rate"), year)) * 100, 2)
    out.logo_churn_monthly = round((1 - _chain(retained("logo_churn_rate"), 1 / n)) * 100, 2)
    out.revenue_churn_monthly = round((1 - _chain(retained("revenue_churn_rate"), 1 / n)) * 100, 2)
    return out


# --- deltas


class Delta(BaseModel):
    """A figure against the previous period: the change, and "better"/"worse" only when it is earned."""

    previous_period: str | None = None
    previous: float | None = None
    diff: float | None = None
    verdict: Literal["better", "worse", "same"] | None = None
    churn_neutral: float | None = None  # CHURN_SENSITIVE figures: the value with the churned accounts back
    note: str = ""


def churn_neutral(figure: str, f: PortfolioMetrics) -> float | None:
    """The end-state figure with the accounts lost in the period counted as they left (by their last band):
    what it would be had nobody churned."""
    lost, lost_mrr = f.churned_by_band, f.churned_mrr_by_band
    if figure == "healthy_pct":
        scored = sum(f.accounts_by_band.get(b, 0) + lost.get(b, 0) for b in BANDS)
        green = f.accounts_by_band.get("green", 0) + lost.get("green", 0)
        return round(green / scored * 100, 2) if scored else None
    if figure == "at_risk_mrr":
        return round(f.at_risk_mrr + lost_mrr.get("red", 0.0), 2)
    if figure == "at_risk_accounts":
        return float(f.at_risk_accounts + lost.get("red", 0))
    return None


def compare(
    figure: str, current: PortfolioMetrics, previous: PortfolioMetrics | None, progress: PeriodProgress
) -> Delta:
    """The delta of ``figure``. A period to date is not compared (its days would not match the previous
    period's); a churn-sensitive figure is called better/worse only when its churn-neutral value moved the
    same way (else the move is the churn's, and the note says so)."""
    if previous is None:
        return Delta(note="no earlier period")
    prev, cur = getattr(previous, figure, None), getattr(current, figure, None)
    base = Delta(previous_period=previous.period, previous=prev)
    if progress.to_date:
        base.note = (
            f"to date (day {progress.days_elapsed} of {progress.days_total}): compared when the period closes"
        )
        return base
    if prev is None or cur is None:
        base.note = "no value to compare"
        return base
    base.diff = round(cur - prev, 2)
    if base.diff == 0:
        base.verdict = "same"
        return base
    up_is_good = DIRECTION.get(figure, "higher") == "higher"
    verdict: Literal["better", "worse"] = "better" if (base.diff > 0) == up_is_good else "worse"
    if figure in CHURN_SENSITIVE:
        neutral = churn_neutral(figure, current)
        base.churn_neutral = neutral
        lost = current.churned_accounts
        if lost and neutral is not None and (neutral - prev) * base.diff <= 0:
            base.note = (
                f"moved by churn: {lost} account{'s' if lost != 1 else ''} left; "
                f"with them it would be {neutral:g}"
            )
            return base
    base.verdict = verdict
    return base


# --- CSMs side by side


class CsmRow(BaseModel):
    csm: str
    csm_name: str = ""
    accounts: int
    arr: float
    accounts_by_segment: dict[str, int]
    healthy_pct: float | None
    nrr: float | None
    grr: float | None
    at_risk_mrr: float
    at_risk_accounts: int
    nps: float | None
    csat: float | None
    renewal_rate: float | None
    #: Σ accounts / the range's top per segment: 1.0 is a full book by the seeds' ranges
    load: float | None
    guidance: Literal["under", "within", "over"] | None
    guidance_text: str = ""
    #: Playbook tasks (streams.tasks.outcomes): open and overdue now, on time % of those opened in the
    #: period; None without a task read model.
    open_tasks: int | None = None
    overdue_tasks: int | None = None
    tasks_on_time_pct: float | None = None


def csm_load(
    by_segment: Mapping[str, int], ranges: Mapping[str, tuple[int, int]]
) -> tuple[float | None, str | None]:
    """How full a CSM's book is by the accounts-per-CSM ranges: Σ accounts / top of their segment's range
    ("over" above 1); "under" when even Σ accounts / bottom of the range is below 1. Segments without a
    range are left out; None when none has one."""
    known = {s: n for s, n in by_segment.items() if s in ranges and n}
    if not known:
        return None, None
    top = sum(n / ranges[s][1] for s, n in known.items())
    bottom = sum(n / ranges[s][0] for s, n in known.items())
    status = "over" if top > 1 else "under" if bottom < 1 else "within"
    return round(top, 2), status


def csm_table(figures: Mapping[str, PortfolioMetrics], ranges: Mapping[str, tuple[int, int]]) -> list[CsmRow]:
    """One row per CSM group of a period's figures, by ARR (largest first)."""
    rows = []
    for group, f in figures.items():
        if not group.startswith("csm:"):
            continue
        load, status = csm_load(f.accounts_by_segment, ranges)
        name = next(
            (r.csm_name for r in (*f.at_risk, *f.renewals_90d, *f.renewals_overdue) if r.csm_name), ""
        )
        text = ", ".join(f"{s} {lo}-{hi}" for s, (lo, hi) in ranges.items() if f.accounts_by_segment.get(s))
        rows.append(
            CsmRow(
                csm=group[4:],
                csm_name=name,
                accounts=f.active_accounts,
                arr=round(f.ending_mrr * 12, 2),
                accounts_by_segment=f.accounts_by_segment,
                healthy_pct=f.healthy_pct,
                nrr=f.nrr,
                grr=f.grr,
                at_risk_mrr=f.at_risk_mrr,
                at_risk_accounts=f.at_risk_accounts,
                nps=f.nps,
                csat=f.csat,
                renewal_rate=f.renewal_rate,
                load=load,
                guidance=status,  # type: ignore[arg-type]
                guidance_text=f"accounts per CSM: {text}" if text else "",
            )
        )
    return sorted(rows, key=lambda r: (-r.arr, r.csm))


# --- unit economics


LTV_FORMULA = "LTV = ARPA x gross margin / monthly revenue churn"


class UnitEconomics(BaseModel):
    arr: float
    arpa: float | None  # MRR per paying account
    gross_margin: float
    monthly_revenue_churn: float | None  # % (the trailing months' chain-linked monthly rate)
    ltv: float | None
    formula: str = Field(default=LTV_FORMULA)


def unit_economics(f: PortfolioMetrics, trailing: Trailing, gross_margin: float) -> UnitEconomics:
    arpa = round(f.ending_mrr / f.paying_accounts, 2) if f.paying_accounts else None
    churn = trailing.revenue_churn_monthly
    ltv = round(arpa * gross_margin / (churn / 100), 2) if arpa is not None and churn else None
    return UnitEconomics(
        arr=round(f.ending_mrr * 12, 2),
        arpa=arpa,
        gross_margin=gross_margin,
        monthly_revenue_churn=churn,
        ltv=ltv,
    )
