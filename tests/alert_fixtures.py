"""Alert events for delivery tests."""

from __future__ import annotations

from datetime import UTC, datetime

from rules.engine import alert_id
from rules.model import AlertEvent
from streams.core.scoring import Driver
from streams.core.snapshot import AccountInfo


def make_alert(
    account: str = "acme",
    rule: str = "no_login_14d",
    status: str = "firing",
    severity: str = "warning",
    name: str | None = None,
    csm: str = "ana@example.com",
    slack_channel: str | None = None,
    episode: int = 1_770_000_000,
) -> AlertEvent:
    start = datetime.fromtimestamp(episode, UTC)
    return AlertEvent(
        alert_id=alert_id(account, rule, episode),
        rule_id=rule,
        account_id=account,
        status=status,
        severity=severity,
        active_since=start,
        starts_at=start,
        ends_at=start if status == "resolved" else None,
        summary=f"{name or account}: no login for 15 days",
        description="No login for 14 days",
        action="Send the re-engagement email and follow up personally",
        labels={"severity": severity, "rule": rule},
        values={"days_since_last_login": 15},
        score=42.0,
        band="yellow",
        drivers=[
            Driver(
                component="usage",
                measure="recency",
                metric="days_since_last_login",
                value=15,
                score=0,
                points_lost=17.1,
                text="no login for 15 days",
            )
        ],
        account=AccountInfo(
            name=name or f"{account} Inc",
            segment="smb",
            csm_name="Ana",
            csm_email=csm,
            slack_channel=slack_channel,
        ),
    )
