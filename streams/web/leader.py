"""The leader's API: every headline figure with its target, rating, delta and to-date flag
(``GET /api/portfolio/scorecard``) and the CSMs side by side (``GET /api/portfolio/csms``).

Kept apart from server.py: it reads the read model's portfolio figures and hands them to the pure
functions of streams.core.leader and streams.core.targets.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel, Field
from redis.asyncio import Redis

from streams.core.leader import (
    T12,
    CsmRow,
    Delta,
    PeriodProgress,
    Trailing,
    UnitEconomics,
    compare,
    csm_table,
    last_closed_month,
    period_progress,
    period_span,
    trailing_12,
    unit_economics,
)
from streams.core.portfolio import (
    COHORT_TENURES,
    AccountRef,
    Cohort,
    Distribution,
    PortfolioMetrics,
    previous_month,
)
from streams.core.targets import Assessment, Targets, assess, load_targets
from streams.settings import Settings
from streams.web.openapi import get_operation
from streams.web.outcomes_api import csm_task_figures

TARGETS = web.AppKey("targets", Targets)

#: The headline figures, in the page's order: (key, label, unit)
HEADLINE = (
    ("nrr", "NRR", "%"),
    ("grr", "GRR", "%"),
    ("logo_churn_rate", "Logo churn", "%"),
    ("revenue_churn_rate", "Revenue churn", "%"),
    ("healthy_pct", "% healthy", "%"),
    ("at_risk_mrr", "MRR at risk", "money"),
    ("nps", "NPS", "score"),
    ("csat", "CSAT", "%"),
    ("renewal_rate", "Renewal rate", "%"),
)
TRAILING_FIGURES = ("nrr", "grr", "logo_churn_rate", "revenue_churn_rate")
ADOPTION = (
    ("adoption", "Product adoption (mean)", "%"),
    ("dau_mau", "DAU/MAU (mean)", "%"),
    ("active_users", "Active users (30 days)", "count"),
    ("ttfv_days", "Time to first value (median)", "days"),
    ("onboarding_completion", "Onboarding completed", "%"),
    ("onboarding_days", "Time to onboard (median)", "days"),
    ("first_response_hours", "First response (median)", "hours"),
)


class FigureView(BaseModel):
    figure: str
    label: str
    unit: str
    value: float | None
    to_date: bool
    assessment: Assessment | None  # target, value on the target's basis, rating; None without a target
    delta: Delta


class AdoptionView(BaseModel):
    figure: str
    label: str
    unit: str
    value: float | None
    distribution: Distribution | None
    to_date: bool
    assessment: Assessment | None
    note: str = ""  # what the figure counts, where the distribution does not say it


class TrailingView(BaseModel):
    trailing: Trailing
    figures: list[Assessment]


class Renewals(BaseModel):
    renewal_rate: float | None
    due_accounts: int
    due_mrr: float
    renewed_accounts: int
    renewed_mrr: float
    lost_accounts: int
    open_accounts: int
    overdue_accounts: int
    overdue_mrr: float
    overdue: list[AccountRef]


class Scorecard(BaseModel):
    """A period's headline figures for a group, each beside its target (docs/portfolio.md)."""

    period: str
    group: str
    as_of: str | None
    latest_day: date
    progress: PeriodProgress
    figures: list[FigureView]
    trailing_12: TrailingView
    renewals: Renewals
    unit_economics: UnitEconomics
    adoption: list[AdoptionView]


class CsmTable(BaseModel):
    period: str
    progress: PeriodProgress
    ranges: dict[str, tuple[int, int]]
    rows: list[CsmRow]


class CohortTable(BaseModel):
    """Sign-up cohorts read at each tenure (docs/portfolio.md, "Cohorts"), oldest cohort first."""

    group: str = "all"
    segments: list[str] = Field(default_factory=list)  # the segments the table can be asked for
    tenures: list[int]
    cohorts: list[Cohort]


class CohortQuery(BaseModel):
    group: str = Field(default="all", max_length=300, pattern=r"^(all|segment:.+)$")  # all or segment:<s>


class ScorecardQuery(BaseModel):
    period: str | None = Field(default=None, max_length=12)  # YYYY-MM, YYYY-Qn, YYYY or T12-YYYY-MM
    group: str = Field(default="all", max_length=300)


class CsmQuery(BaseModel):
    period: str | None = Field(default=None, max_length=12)


def _error(status: int, message: str) -> web.Response:
    body = {"error": {"status": status, "message": message}}
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


async def _figures(redis: Redis, p: str, period: str, group: str) -> PortfolioMetrics | None:
    raw = await redis.hget(f"{p}portfolio:{period}", group)
    return None if raw is None else PortfolioMetrics.model_validate_json(raw)


async def _latest(redis: Redis, p: str) -> tuple[list[str], str | None, date | None]:
    """The known periods, the latest month and the latest day counted (its whole-book as_of)."""
    known = [x.decode() for x in await redis.zrange(f"{p}portfolio:periods", 0, -1)]
    latest = next((x for x in reversed(known) if len(x) == 7 and "Q" not in x), None)
    if latest is None:
        return known, None, None
    book = await _figures(redis, p, latest, "all")
    day = book.as_of.date() if book is not None and book.as_of is not None else None
    return known, latest, day


def _previous(period: str) -> str | None:
    """The previous period of the same kind (month, quarter, year); None for the trailing 12 months."""
    if period.startswith(T12):
        return None
    if len(period) == 4:
        return str(int(period) - 1)
    if "Q" in period:
        y, q = int(period[:4]), int(period[-1])
        return f"{y - 1}-Q4" if q == 1 else f"{y}-Q{q - 1}"
    return previous_month(period)


async def _monthly(redis: Redis, p: str, known: list[str], group: str) -> list[PortfolioMetrics]:
    months = [x for x in known if len(x) == 7 and "Q" not in x]
    async with redis.pipeline(transaction=False) as pipe:
        for m in months:
            pipe.hget(f"{p}portfolio:{m}", group)
        raws = await pipe.execute()
    return [PortfolioMetrics.model_validate_json(r) for r in raws if r is not None]


def _segment(group: str) -> str | None:
    return group.split(":", 1)[1] if group.startswith("segment:") else None


def _check_period(period: str) -> str | None:
    try:
        period_span(period)
    except ValueError as exc:
        return str(exc)
    return None


def _adoption_note(key: str, f: PortfolioMetrics) -> str:
    if key == "onboarding_completion":
        if not f.onboarding_accounts:
            return "no milestone: the scorecard names no key feature"
        return f"{f.onboarded_accounts} of {f.onboarding_accounts} accounts used every key feature; no seed target"
    if key == "onboarding_days":
        return "sign-up to the last key feature's first use; shorter is better"
    return ""


async def scorecard(request: web.Request) -> web.Response:
    from streams.web.server import REDIS, SETTINGS  # the app's keys (server imports this module)

    q = ScorecardQuery.model_validate(dict(request.query))
    s: Settings = request.app[SETTINGS]
    redis: Redis = request.app[REDIS]
    targets = request.app[TARGETS]
    p = s.redis_prefix
    known, latest, today = await _latest(redis, p)
    if latest is None or today is None:
        return _error(404, "no portfolio figures yet (is healthmon readmodel running?)")
    period = q.period or latest
    if (problem := _check_period(period)) is not None:
        return _error(400, problem)
    trailing_view = period.startswith(T12)
    base = period[len(T12) :] if trailing_view else period
    if trailing_view and base > last_closed_month(today):
        return _error(
            400, f"the trailing 12 months end at a closed month: at most {T12}{last_closed_month(today)}"
        )
    figures = await _figures(redis, p, base, q.group)
    if figures is None:
        return _error(404, f"no figures for group {q.group!r} in {base}")
    progress = period_progress(period, today)
    prev_period = _previous(period)
    previous = await _figures(redis, p, prev_period, q.group) if prev_period else None
    last_month = min(last_closed_month(today), period_span(period)[-1])
    trailing = trailing_12(await _monthly(redis, p, known, q.group), last_month)
    segment = _segment(q.group)
    views = []
    for key, label, unit in HEADLINE:
        if trailing_view and key in TRAILING_FIGURES:
            value, months, to_date = getattr(trailing, key), 12.0, False
            delta = Delta(note="trailing 12 months: chain-linked, not compared")
        else:
            value, months, to_date = getattr(figures, key), progress.months, progress.to_date
            delta = compare(key, figures, previous, progress)
        views.append(
            FigureView(
                figure=key,
                label=label,
                unit=unit,
                value=value,
                to_date=to_date,
                assessment=assess(key, value, months, targets, segment),
                delta=delta,
            )
        )
    rated = [assess(k, getattr(trailing, k), 12.0, targets, segment) for k in TRAILING_FIGURES]
    body = Scorecard(
        period=period,
        group=q.group,
        as_of=None if figures.as_of is None else figures.as_of.isoformat(),
        latest_day=today,
        progress=progress,
        figures=views,
        trailing_12=TrailingView(trailing=trailing, figures=[a for a in rated if a is not None]),
        renewals=Renewals(
            renewal_rate=figures.renewal_rate,
            due_accounts=figures.renewals_due_accounts,
            due_mrr=figures.renewals_due_mrr,
            renewed_accounts=figures.renewals_renewed_accounts,
            renewed_mrr=figures.renewals_renewed_mrr,
            lost_accounts=figures.renewals_lost_accounts,
            open_accounts=figures.renewals_open_accounts,
            overdue_accounts=figures.renewals_overdue_accounts,
            overdue_mrr=figures.renewals_overdue_mrr,
            overdue=figures.renewals_overdue,
        ),
        unit_economics=unit_economics(figures, trailing, s.gross_margin),
        adoption=[
            AdoptionView(
                figure=key,
                label=label,
                unit=unit,
                value=getattr(figures, key),
                distribution=figures.distributions.get(key),
                to_date=progress.to_date,
                assessment=assess(key, getattr(figures, key), progress.months, targets, segment),
                note=_adoption_note(key, figures),
            )
            for key, label, unit in ADOPTION
        ],
    )
    return web.Response(body=body.model_dump_json(), content_type="application/json")


async def csms(request: web.Request) -> web.Response:
    from streams.web.server import REDIS, SETTINGS

    q = CsmQuery.model_validate(dict(request.query))
    s: Settings = request.app[SETTINGS]
    redis: Redis = request.app[REDIS]
    targets = request.app[TARGETS]
    _, latest, today = await _latest(redis, s.redis_prefix)
    if latest is None or today is None:
        return _error(404, "no portfolio figures yet (is healthmon readmodel running?)")
    period = q.period or latest
    if period.startswith(T12) or _check_period(period) is not None:
        return _error(400, f"not a period for the CSM table (YYYY-MM, YYYY-Qn or YYYY): {period!r}")
    raw = await redis.hgetall(f"{s.redis_prefix}portfolio:{period}")
    figures = {k.decode(): PortfolioMetrics.model_validate_json(v) for k, v in raw.items()}
    rows = csm_table(figures, targets.csm_accounts)
    tasks = await csm_task_figures(request.app, period)
    if tasks:
        none = {"open_tasks": 0, "overdue_tasks": 0, "on_time_pct": None}
        rows = [
            r.model_copy(
                update={
                    "open_tasks": (t := tasks.get(r.csm, none))["open_tasks"],
                    "overdue_tasks": t["overdue_tasks"],
                    "tasks_on_time_pct": t["on_time_pct"],
                }
            )
            for r in rows
        ]
    body = CsmTable(
        period=period,
        progress=period_progress(period, today),
        ranges=targets.csm_accounts,
        rows=rows,
    )
    return web.Response(body=body.model_dump_json(), content_type="application/json")


async def cohort_table(request: web.Request) -> web.Response:
    from streams.web.server import REDIS, SETTINGS

    q = CohortQuery.model_validate(dict(request.query))  # invalid: 400 naming the field (server middleware)
    s: Settings = request.app[SETTINGS]
    redis: Redis = request.app[REDIS]
    key = f"{s.redis_prefix}portfolio:cohorts"
    known = sorted(k.decode() for k in await redis.hkeys(f"{key}:segments"))
    segment = _segment(q.group)
    if segment is None:
        raw = await redis.get(key)
    elif segment in known:
        raw = await redis.hget(f"{key}:segments", segment)
    else:
        return _error(404, f"no cohorts for group {q.group!r} (segments: {', '.join(known) or 'none yet'})")
    found = [] if raw is None else [Cohort.model_validate(c) for c in orjson.loads(raw)]
    body = CohortTable(group=q.group, segments=known, tenures=list(COHORT_TENURES), cohorts=found)
    return web.Response(body=body.model_dump_json(), content_type="application/json")


def add_routes(app: web.Application, settings: Settings) -> None:
    """Load the targets (a bad file stops the start: ConfigError naming file, line and field) and route."""
    app[TARGETS] = load_targets(settings.targets_file)
    app.router.add_get("/api/portfolio/scorecard", scorecard)
    app.router.add_get("/api/portfolio/csms", csms)
    app.router.add_get("/api/portfolio/cohorts", cohort_table)


def openapi_paths() -> tuple[dict[str, Any], list[type[BaseModel]]]:
    """The paths of this module for the OpenAPI document, and the models their bodies use."""

    def ok(summary: str, model: str, query: type[BaseModel]) -> dict:
        return get_operation(summary, model, query, {"404": "no figures"})

    paths = {
        "/api/portfolio/scorecard": ok(
            "Headline figures of a period (YYYY-MM, YYYY-Qn, YYYY or T12-YYYY-MM; default the latest month) "
            "for a group, each with its target, rating, delta and to-date flag; trailing 12 months, "
            "renewals (rate, overdue) and unit economics",
            "Scorecard",
            ScorecardQuery,
        ),
        "/api/portfolio/csms": ok(
            "The CSMs side by side with the accounts-per-CSM guidance", "CsmTable", CsmQuery
        ),
    }
    paths["/api/portfolio/cohorts"] = ok(
        "Retention, NRR, adoption and onboarding by sign-up month at tenure 1, 3, 6 and 12 months, for "
        "the whole book or a segment",
        "CohortTable",
        CohortQuery,
    )
    return paths, [Scorecard, CsmTable, CohortTable]
