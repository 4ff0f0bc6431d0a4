"""What healthmon publishes about an account: the snapshot on ``cs.health`` and change events.

``assess`` is pure: state and event time in, snapshot (and a change event when one is due) out.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel

from .metrics import AccountMetrics, Portfolio, compute_metrics, with_portfolio
from .scoring import (
    Band,
    ComponentScore,
    Driver,
    ScoringConfig,
    is_health_change,
    score_account,
    score_deltas,
)
from .state import DAY_S, AccountState

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
    )


def assess(
    state: AccountState,
    as_of: int,
    config: ScoringConfig,
    portfolio: Portfolio | None = None,
    metrics: AccountMetrics | None = None,
) -> tuple[HealthSnapshot, HealthChange | None]:
    """The account's snapshot at event time ``as_of``, and a change event if one is due.

    ``portfolio`` (cross-account context) fills the portfolio-relative measures; without it they are null
    and the scorecard shares their weight out. ``metrics``: the account's raw metrics at ``as_of`` when
    the caller has them already.
    """
    if metrics is None:
        metrics = compute_metrics(state, as_of, config.metrics)
    if portfolio is not None:
        metrics = with_portfolio(metrics, portfolio, as_of)
    info = account_info(state)
    health = score_account(metrics, config, info.segment)
    when = datetime.fromtimestamp(as_of, UTC)
    snapshot = HealthSnapshot(
        account_id=state.account_id,
        as_of=when,
        account=info,
        score=health.score,
        band=health.band,
        confidence=health.confidence,
        scorecard=health.scorecard,
        deltas=score_deltas(state.score_history, as_of // DAY_S, health.score),
        components=health.components,
        drivers=health.drivers,
        metrics=metrics,
        event_counts=dict(state.counts),
        last_seen={k: datetime.fromtimestamp(v, UTC) for k, v in state.last_seen.items()},
        first_event_at=iso(state.first_event_at),
        last_event_at=iso(state.last_event_at),
    )
    change = None
    if is_health_change(
        state.last_change_score, state.last_change_band, health.score, health.band, config.change_threshold
    ):
        assert health.score is not None and health.band is not None
        change = HealthChange(
            account_id=state.account_id,
            as_of=when,
            account=info,
            previous_score=state.last_change_score,
            previous_band=state.last_change_band,  # type: ignore[arg-type]
            score=health.score,
            band=health.band,
            delta=None
            if state.last_change_score is None
            else round(health.score - state.last_change_score, 1),
            drivers=health.drivers,
        )
    return snapshot, change


def remember(state: AccountState, snapshot: HealthSnapshot, change: HealthChange | None) -> None:
    """Keep what trends and change detection need: the day's score and the last change event."""
    if snapshot.score is not None:
        state.score_history[int(snapshot.as_of.timestamp()) // DAY_S] = round(snapshot.score * 10)
    if change is not None:
        state.last_change_score, state.last_change_band = change.score, change.band
