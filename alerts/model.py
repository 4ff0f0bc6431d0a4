"""A notification: one group of alerts for one receiver."""

from __future__ import annotations

import hashlib

from pydantic import BaseModel

from rules.model import AlertEvent


class Notification(BaseModel):
    receiver: str
    group_key: str
    group_labels: dict[str, str]
    firing: list[AlertEvent]
    resolved: list[AlertEvent]
    #: Ids of firing alerts this receiver hears about for the first time (shown first, marked NEW).
    new: list[str] = []
    #: Latest figures per account from the read model (score, band, mrr, ...), when available.
    accounts: dict[str, dict[str, str]] = {}
    #: Alert id -> the open playbook task it is part of (from the task read model, or the task a
    #: reminder or escalation is about), for the one-click links and Slack buttons.
    tasks: dict[str, str] = {}

    @property
    def fingerprint(self) -> str:
        """Stable for the same content: the webhook Idempotency-Key and the notification log use it."""
        ids = sorted(f"{a.alert_id}:{a.status}" for a in (*self.firing, *self.resolved))
        raw = "\x00".join([self.receiver, self.group_key, *ids])
        return hashlib.sha256(raw.encode()).hexdigest()[:32]

    @property
    def alerts(self) -> list[AlertEvent]:
        return [*self.firing, *self.resolved]
