"""What healthmon publishes about an account: the snapshot on ``cs.health`` and change events.

``assess`` is pure: state and event time in, snapshot (and a change event when one is due) out.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

from streams.core.metrics import PORTFOLIO_METRICS, AccountMetrics, Portfolio, compute_metrics, with_portfolio
from streams.core.scoring import (
    Band,
    ComponentScore,
    Driver,
    ScoringConfig,
    SetAside,
    is_health_change,
    score_account,
    score_deltas,
    set_aside_of,
    stabilise,
)
from streams.core.state import DAY_S, AccountState

SNAPSHOT_SCHEMA_VERSION = 1


def iso(ts: int | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


class AccountInfo(BaseModel):
    name: str | None = None
    segment: str | None = None
    csm_name: str | None = None
    csm_email: str | None = None
    slack_channel: str | None = None
    signed_up_at: datetime | None = None
    #: The account's IANA time zone, when its profile names one (``same_day`` task deadlines).
    time_zone: str | None = None


class HealthSnapshot(BaseModel):
    """Everything healthmon knows about one account as of ``as_of`` (event time)."""

    schema_version: int = SNAPSHOT_SCHEMA_VERSION
    account_id: str
    as_of: datetime
    account: AccountInfo
    score: float | None
    band: Band | None
    confidence: float
    scorecard: str
    deltas: dict[str, float | None]
    components: list[ComponentScore]
    drivers: list[Driver]
    metrics: AccountMetrics
    event_counts: dict[str, int]
    last_seen: dict[str, datetime]
    first_event_at: datetime | None = None
    last_event_at: datetime | None = None
    #: "insufficient_data": healthmon has seen the account too briefly to score it (score and band null);
    #: "cancelled": the account cancelled, it is no longer scored (score and band null, see last_band).
    status: Literal["scored", "insufficient_data", "cancelled"] = "scored"
    #: The scorecard's score before stabilisation (``score`` moves toward it; components add up to it).
    raw_score: float | None = None
    #: The version of the scoring configuration in force (its ``revision``, else a content hash).
    scorecard_version: str | None = None
    #: Measures the information check set aside in this book, and why (docs/metrics.md).
    set_aside: list[SetAside] = Field(default_factory=list)
    #: A cancelled account's band when it was last scored (the portfolio's churn by band).
    last_band: Band | None = None


class HealthChange(BaseModel):
    """Published on ``cs.health.changes`` when the band changes or the score moves enough."""

    schema_version: int = SNAPSHOT_SCHEMA_VERSION
    account_id: str
    as_of: datetime
    account: AccountInfo
    previous_score: float | None
    previous_band: Band | None
    score: float
    band: Band
    delta: float | None
    drivers: list[Driver]
    #: The card the new score comes from (docs/promotion.md).
    scorecard_version: str | None = None
    #: Set on the account's first evaluation under a newly promoted (or rolled-back) card: the version
    #: in force at its previous evaluation. The change then comes (at least partly) from the card; the
    #: one ``scorecard`` event on this topic says who changed it and why.
    scorecard_changed_from: str | None = None


def account_info(state: AccountState) -> AccountInfo:
    p = state.profile
    if p is None:
        return AccountInfo()
    return AccountInfo(
        name=p.name,
        segment=p.segment,
        csm_name=p.csm_name,
        csm_email=p.csm_email,
        slack_channel=p.slack_channel,
        signed_up_at=iso(p.signed_up_at),
        time_zone=p.time_zone,
    )


def assess(
    state: AccountState,
    as_of: int,
    config: ScoringConfig,
    portfolio: Portfolio | None = None,
    metrics: AccountMetrics | None = None,
    card_changed_from: str | None = None,
) -> tuple[HealthSnapshot, HealthChange | None]:
    """The account's snapshot at event time ``as_of``, and a change event if one is due.

    ``portfolio`` (cross-account context) fills the portfolio-relative measures; without it (or where
    it is too small to rank, :meth:`Portfolio.unavailable`) they are null and the scorecard shares their
    weight out. ``metrics``: the account's raw metrics at ``as_of`` when the caller has them already.
    ``config``: the card in force at ``as_of``; ``card_changed_from``: the card of the account's previous
    evaluation when another (named on a change event).
    """
    if metrics is None:
        metrics = compute_metrics(state, as_of, config.metrics)
    if portfolio is not None:
        metrics = with_portfolio(metrics, portfolio, as_of)
    info = account_info(state)
    unavailable = PORTFOLIO_METRICS if portfolio is None else portfolio.unavailable(as_of // DAY_S)
    card_name, card = config.scorecard_for(info.segment)
    health = score_account(metrics, config, info.segment, unavailable, set_aside_of(portfolio, card_name))
    when = datetime.fromtimestamp(as_of, UTC)
    raw = health.score
    status: Literal["scored", "insufficient_data", "cancelled"] = "scored"
    score, band = raw, health.band
    last_band = None
    known_days = None if state.first_event_at is None else (as_of - state.first_event_at) // DAY_S
    hard = metrics.unpaid_invoices > 0  # (a cancelled account is not scored: the branch below)
    if metrics.canceled:
        # no longer scored: a score would keep moving (days without login...) for a customer who left
        status, score, band = "cancelled", None, None
        if state.score_published is not None:
            last_band = card.bands.of(state.score_published)
    elif (
        raw is not None
        and known_days is not None
        and known_days < config.stability.min_history_days
        and not hard
    ):
        status, score, band = "insufficient_data", None, None
    elif raw is not None:
        score = stabilise(raw, state.score_published, state.score_published_at, as_of, hard, config.stability)
        band = card.bands.of(score)
    snapshot = HealthSnapshot(
        account_id=state.account_id,
        as_of=when,
        account=info,
        score=score,
        band=band,
        confidence=health.confidence,
        scorecard=health.scorecard,
        deltas=score_deltas(state.score_history, as_of // DAY_S, score),
        components=health.components,
        drivers=health.drivers,
        metrics=metrics,
        event_counts=dict(state.counts),
        last_seen={k: datetime.fromtimestamp(v, UTC) for k, v in state.last_seen.items()},
        first_event_at=iso(state.first_event_at),
        last_event_at=iso(state.last_event_at),
        status=status,
        raw_score=raw,
        scorecard_version=config.card_version,
        set_aside=health.set_aside,
        last_band=last_band,
    )
    change = None
    if is_health_change(
        state.last_change_score, state.last_change_band, score, band, config.change_threshold
    ):
        assert score is not None and band is not None
        change = HealthChange(
            account_id=state.account_id,
            as_of=when,
            account=info,
            previous_score=state.last_change_score,
            previous_band=state.last_change_band,  # type: ignore[arg-type]
            score=score,
            band=band,
            delta=None if state.last_change_score is None else round(score - state.last_change_score, 1),
            drivers=health.drivers,
            scorecard_version=config.card_version,
            scorecard_changed_from=card_changed_from,
        )
    return snapshot, change


def remember(state: AccountState, snapshot: HealthSnapshot, change: HealthChange | None) -> None:
    """Keep what trends and change detection need: the day's score and the last change event."""
    if snapshot.score is not None:
        at = int(snapshot.as_of.timestamp())
        state.score_history[at // DAY_S] = round(snapshot.score * 10)
        state.score_published, state.score_published_at = snapshot.score, at
    if change is not None:
        state.last_change_score, state.last_change_band = change.score, change.band
