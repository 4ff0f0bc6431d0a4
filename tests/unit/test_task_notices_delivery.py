"""Task reminders and escalations as digest items, and task links and buttons in the rendered messages
(pure parts of alerts/: tasknotices, links, the email and Slack renderers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from itsdangerous import URLSafeTimedSerializer
from pydantic import SecretStr

from alerts.config import EmailConfig, RoutingConfig
from alerts.links import LINK_SALT, TaskLinks
from alerts.model import Notification
from alerts.notifiers.email import build_message
from alerts.notifiers.slack import render
from alerts.routing import alert_labels, route_alert
from alerts.tasknotices import notice_alert
from rules.model import Action
from streams.settings import Settings
from streams.tasks.machine import AlertSeen, DeadlineTick, apply
from streams.tasks.model import TaskNotice
from tests.alert_fixtures import make_alert

T0 = datetime(2026, 12, 7, 10, tzinfo=UTC)
SHIPPED = RoutingConfig.model_validate(
    {
        "receivers": [
            {"name": "csm-email", "email": {"to": ["account_csm"], "sender": "hm@example.com"}},
            {"name": "cs-managers", "email": {"to": ["m@example.com"], "sender": "hm@example.com"}},
        ],
        "route": {
            "receiver": "csm-email",
            "routes": [
                {"match": {"to_role": "manager"}, "receiver": "cs-managers"},
                {"match": {"severity": "critical"}, "receiver": "cs-managers", "continue": True},
                {"receiver": "csm-email"},
            ],
        },
    }
)


def notices_until_escalation() -> list[TaskNotice]:
    alert = make_alert(episode=int(T0.timestamp())).model_copy(
        update={"playbook": Action.model_validate({"step": "Call", "respond_within": "48h"})}
    )
    task, out = apply(None, AlertSeen(alert), T0)
    later = T0 + timedelta(hours=49)
    task, more = apply(task, DeadlineTick(account_id="acme", at=later), later)
    return [*out, *more]


def test_reminder_goes_to_the_csm_digest_and_escalation_to_the_managers_only():
    by_kind = {n.kind: n for n in notices_until_escalation()}
    assert notice_alert(by_kind["opened"]) is None  # the alert's own message says it
    reminder, escalation = notice_alert(by_kind["reminder"]), notice_alert(by_kind["escalation"])
    assert reminder is not None and escalation is not None
    assert [m.receiver for m in route_alert(SHIPPED, alert_labels(reminder))] == ["csm-email"]
    assert [m.receiver for m in route_alert(SHIPPED, alert_labels(escalation))] == ["cs-managers"]
    assert reminder.account.csm_email == "ana@example.com" and reminder.action == "Call"
    assert escalation.description == (
        "Escalated: not acknowledged by ana@example.com at its deadline 2026-12-09 10:00 UTC (no_login_14d);"
        " health 42 (yellow) when it last fired"
    )
    assert escalation.starts_at == T0 + timedelta(hours=48)  # stamped when due, not when read
    # deterministic: a redelivered notice is the same item (the notification log recognises it)
    assert notice_alert(by_kind["escalation"]) == escalation


def test_links_in_the_email_and_buttons_on_slack_only_for_tasks_and_only_when_configured():
    task_alert = make_alert(account="acme", episode=int(T0.timestamp()))
    other = make_alert(account="beta", episode=int(T0.timestamp()))
    n = Notification(
        receiver="csm-email",
        group_key="k",
        group_labels={},
        firing=[task_alert, other],
        resolved=[],
        tasks={task_alert.alert_id: "task-1"},
    )
    assert TaskLinks.from_settings(Settings(task_link_secret=SecretStr("k"))) is None  # no public URL
    assert TaskLinks.from_settings(Settings(public_url="https://hm.example.com")) is None  # no secret
    links = TaskLinks.from_settings(
        Settings(task_link_secret=SecretStr("k"), public_url="https://hm.example.com/")
    )
    config = EmailConfig(to=["account_csm"], sender="hm@example.com")
    text = build_message(config, n, ["ana@example.com"], "", links).get_body(("plain",)).get_content()
    urls = [w for w in text.split() if w.startswith("https://hm.example.com/t/")]
    assert len(urls) == 2  # acknowledge and done, for acme's task only
    payloads = [
        URLSafeTimedSerializer("k", salt=LINK_SALT).loads(urlsplit(u).path.removeprefix("/t/")) for u in urls
    ]
    assert payloads == [
        {"t": "task-1", "a": "acme", "v": "acknowledge", "by": "ana@example.com", "o": None},
        {"t": "task-1", "a": "acme", "v": "complete", "by": "ana@example.com", "o": "reached"},
    ]
    plain = build_message(config, n, ["ana@example.com"]).get_body(("plain",)).get_content()
    assert "/t/" not in plain  # links off: none in the mail

    actions = [b for b in render(n, buttons=True)["blocks"] if b["type"] == "actions"]
    assert [(b["block_id"], [e["value"] for e in b["elements"]]) for b in actions] == [
        ("task:task-1", ["task-1"] * 3)
    ]
    assert not [b for b in render(n)["blocks"] if b["type"] == "actions"]  # no signing secret: no buttons
