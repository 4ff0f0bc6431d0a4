"""Prometheus Alertmanager: ``POST /api/v2/alerts`` (for teams that already route alerts there)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import aiohttp
import orjson

from alerts.config import AlertmanagerConfig
from alerts.model import Notification
from alerts.notifiers import post_json
from alerts.routing import alert_labels
from alerts.text import one_line
from rules.model import AlertEvent


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def postable(a: AlertEvent, now: datetime, ends_after: int, link_base_url: str) -> dict:
    """One alert as Alertmanager's ``postableAlert``: labels identify it (alertname = the rule),
    annotations carry the text; a resolution is an ``endsAt`` in the past."""
    labels = {k: one_line(v, 200) for k, v in alert_labels(a).items() if v}
    labels["alertname"] = a.rule_id
    labels["alert_id"] = a.alert_id
    annotations = {
        "summary": one_line(a.summary, 500),
        "description": one_line(a.description, 500),
        "action": one_line(a.action, 500),
        "score": "n/a" if a.score is None else f"{a.score:.0f}",
        "band": a.band or "unknown",
    }
    ends = (
        a.ends_at if a.status == "resolved" and a.ends_at is not None else now + timedelta(seconds=ends_after)
    )
    if a.status == "resolved":
        ends = min(ends, now)  # a resolution must end now or earlier to read as resolved
    body = {"labels": labels, "annotations": annotations, "startsAt": _iso(a.starts_at), "endsAt": _iso(ends)}
    if link_base_url:
        body["generatorURL"] = f"{link_base_url.rstrip('/')}/accounts/{a.account_id}"
    return body


class AlertmanagerNotifier:
    channel = "alertmanager"

    def __init__(
        self, config: AlertmanagerConfig, session: aiohttp.ClientSession, link_base_url: str = ""
    ) -> None:
        self.config = config
        self.session = session
        self.link_base_url = link_base_url

    async def notify(self, n: Notification) -> None:
        now = datetime.now(UTC)
        body = [postable(a, now, self.config.ends_after, self.link_base_url) for a in n.alerts]
        url = self.config.url.rstrip("/") + "/api/v2/alerts"
        await post_json(self.session, url, orjson.dumps(body), {}, self.config.timeout_s, "alertmanager")
