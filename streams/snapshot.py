"""The account snapshot published on ``cs.health`` (key: account_id, compacted: latest wins)."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict

from .state import AccountState


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
    """What healthmon knows about one account as of ``as_of`` (event time)."""

    model_config = ConfigDict(ser_json_timedelta="float")

    schema_version: int = 1
    account_id: str
    as_of: datetime
    account: AccountInfo
    mrr: str | None = None
    plan: str | None = None
    seats: int | None = None
    canceled: bool = False
    event_counts: dict[str, int]
    last_seen: dict[str, datetime]
    first_event_at: datetime | None = None
    last_event_at: datetime | None = None


def build_snapshot(state: AccountState, as_of: int) -> HealthSnapshot:
    """Pure: the snapshot of ``state`` at event time ``as_of`` (epoch seconds)."""
    p = state.profile
    return HealthSnapshot(
        account_id=state.account_id,
        as_of=datetime.fromtimestamp(as_of, UTC),
        account=AccountInfo(
            name=p.name,
            segment=p.segment,
            csm_name=p.csm_name,
            csm_email=p.csm_email,
            slack_channel=p.slack_channel,
            signed_up_at=iso(p.signed_up_at),
        )
        if p
        else AccountInfo(),
        mrr=state.mrr,
        plan=state.plan,
        seats=state.seats,
        canceled=state.canceled_at is not None,
        event_counts=dict(state.counts),
        last_seen={k: datetime.fromtimestamp(v, UTC) for k, v in state.last_seen.items()},
        first_event_at=iso(state.first_event_at),
        last_event_at=iso(state.last_event_at),
    )
